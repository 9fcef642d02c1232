"""LoRA adapters (through ``peft``) on the linear layers of a timm ViT's blocks.

``add_lora`` wraps ``qkv`` and ``proj`` (attention) and ``fc1`` and ``fc2`` (MLP) of every block
in place, so the backbone stays the same timm model (``forward_features`` works) and only the
adapters train. Each adapted layer computes ``W x + b + (alpha / rank) B A x`` with
A (rank, in) and B (out, rank), B starting at zero (the adapted model starts as the base model).
``merge_lora`` folds the adapters of a state dict back into ``W``: the result loads into the
plain timm model with ``strict=True``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

# The layers adapted in each block, as module names of the timm ViT (peft matches them in full).
TARGETS = r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"
ADAPTER = "default"  # peft's adapter name, part of every adapter key of the state dict


def lora_scaling(rank: int, alpha: float | None) -> float:
    """The factor of the adapter's output: ``alpha / rank`` (alpha None: ``rank``, i.e. 1)."""
    return (rank if alpha is None else alpha) / rank


def add_lora(backbone: nn.Module, rank: int, alpha: float | None = None) -> list[str]:
    """Add LoRA adapters of ``rank`` to every block's qkv/proj/fc1/fc2 and freeze the rest.

    Every base weight of ``backbone`` is frozen; only the adapters' A and B train. Returns the
    names of the adapted layers. Raises a one-line ValueError without ``peft`` or when the
    backbone has none of these layers.
    """
    if rank <= 0:
        raise ValueError(f"--lora-rank {rank}: use a positive rank (0 turns LoRA off)")
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ValueError("--lora-rank needs peft: pip install 'mosic[lora]'") from None
    targets = [name for name, _ in backbone.named_modules() if re.fullmatch(TARGETS, name)]
    if not targets:
        raise ValueError(
            f"--lora-rank: {type(backbone).__name__} has no blocks.N.attn.qkv/proj or "
            "blocks.N.mlp.fc1/fc2 layers to adapt"
        )
    config = LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, target_modules=TARGETS)
    inject_adapter_in_model(config, backbone, adapter_name=ADAPTER)
    for name, parameter in backbone.named_parameters():
        parameter.requires_grad_(".lora_" in name)
    return targets


def merge_lora(
    state: dict[str, torch.Tensor], rank: int, alpha: float | None = None
) -> dict[str, torch.Tensor]:
    """A state dict of an adapted backbone with every adapter merged into its layer.

    ``<layer>.base_layer.weight`` (out, in) + scaling * ``<layer>.lora_B.default.weight``
    (out, rank) @ ``<layer>.lora_A.default.weight`` (rank, in) becomes ``<layer>.weight``
    (computed in float32, stored in the base weight's dtype); ``<layer>.base_layer.bias``
    becomes ``<layer>.bias``. Keys without adapters are returned unchanged.
    """
    scaling = lora_scaling(rank, alpha)
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if f".lora_A.{ADAPTER}." in key or f".lora_B.{ADAPTER}." in key:
            continue
        if ".base_layer." not in key:
            merged[key] = value
            continue
        layer, _, leaf = key.partition(".base_layer.")
        if leaf == "weight":
            a = state[f"{layer}.lora_A.{ADAPTER}.weight"].float()
            b = state[f"{layer}.lora_B.{ADAPTER}.weight"].float()
            value = (value.float() + scaling * (b @ a)).to(value.dtype)
        merged[f"{layer}.{leaf}"] = value
    return merged
