"""Backbones by name: one obvious way to build each ViT the paper uses, through timm."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: the timm model name and any construction arguments."""

    timm_name: str
    kwargs: dict = field(default_factory=dict)


BACKBONES: dict[str, BackboneSpec] = {
    "dino-s16": BackboneSpec("vit_small_patch16_224.dino"),
    "dino-b16": BackboneSpec("vit_base_patch16_224.dino"),
    "dinov2-s14": BackboneSpec("vit_small_patch14_dinov2.lvd142m"),
    "dinov2-b14": BackboneSpec("vit_base_patch14_dinov2.lvd142m"),
    "dinov2-l14": BackboneSpec("vit_large_patch14_dinov2.lvd142m"),
    "dinov2r-s14": BackboneSpec("vit_small_patch14_reg4_dinov2.lvd142m"),
    "dinov2r-b14": BackboneSpec("vit_base_patch14_reg4_dinov2.lvd142m"),
    "dinov2r-l14": BackboneSpec("vit_large_patch14_reg4_dinov2.lvd142m"),
    "eva02-clip-b16": BackboneSpec("eva02_base_patch16_clip_224"),
    # A randomly initialised 2-block ViT for tests and CPU demos.
    "vit-tiny-test": BackboneSpec(
        "vit_tiny_patch16_224", {"depth": 2, "embed_dim": 64, "num_heads": 2}
    ),
}


def timm_name(name: str) -> str:
    """The timm model name of a registered backbone, or ``name`` itself if it is a timm name."""
    return BACKBONES[name].timm_name if name in BACKBONES else name


def create_backbone(
    name: str, *, weights: str | Path | None = None, pretrained: bool = False, img_size: int = 224
) -> nn.Module:
    """Build a ViT backbone with no classifier.

    ``name`` is a key of ``BACKBONES`` or any timm ViT name. ``weights`` loads a local state dict
    (``.safetensors`` or a ``torch.save`` file, read with ``weights_only=True``) with
    ``strict=True``; ``pretrained`` uses timm's own download instead (needs a network).
    """
    spec = BACKBONES.get(name, BackboneSpec(name))
    if pretrained and weights:
        raise ValueError("give --weights PATH or --pretrained, not both")
    try:
        model = timm.create_model(
            spec.timm_name,
            pretrained=pretrained,
            num_classes=0,
            img_size=img_size,
            dynamic_img_size=True,
            **spec.kwargs,
        )
    except RuntimeError as exc:
        known = ", ".join(sorted(BACKBONES))
        raise ValueError(f"unknown backbone {name!r} ({exc}); registered: {known}") from None
    if weights:
        model.load_state_dict(fit_state_dict(load_state_dict(weights), model), strict=True)
    return model


def fit_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapt a state dict to ``model`` as timm does for its own weights: position embeddings
    of another image size are resampled (DINOv2's are for 518 px)."""
    module = sys.modules[type(model).__module__]
    adapt = getattr(module, "checkpoint_filter_fn", None)
    return adapt(state, model) if adapt else state


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.safetensors`` or ``torch.save`` file (never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "teacher"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def patch_tokens(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Patch features of a batch: images (B, 3, H, W) -> (B, D, H / p, W / p).

    Class and register tokens are dropped.
    """
    tokens = model.forward_features(images)[:, model.num_prefix_tokens :]
    b, _, h, w = images.shape
    ph, pw = model.patch_embed.patch_size
    return tokens.transpose(1, 2).reshape(b, -1, h // ph, w // pw)


def unfreeze_last_blocks(model: nn.Module, count: int) -> list[str]:
    """Freeze everything but the last ``count`` blocks (counted from the end); their names."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    blocks = len(model.blocks)
    if not 0 <= count <= blocks:
        raise ValueError(f"--unfreeze-blocks {count}: the backbone has {blocks} blocks")
    trainable = [f"blocks.{i}" for i in range(blocks - count, blocks)]
    for prefix in trainable:
        for parameter in model.get_submodule(prefix).parameters():
            parameter.requires_grad_(True)
    return trainable
