"""The models the evaluation accepts, all through one code path to a timm backbone.

- a mosic training checkpoint (``.pt``): its student backbone (LoRA adapters merged);
- a mosic export (``.safetensors`` written by ``mosic export``);
- a backbone name (registered or timm) with ``--weights PATH``: a timm state dict, or one of
  the paper's released MoSiC checkpoints, whose keys carry two extra leading components (the
  paper's README strips them with ``'.'.join(k.split('.')[2:])``); detected automatically.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from mosic.pipeline.checkpoint import load_checkpoint
from mosic.stages.model.backbone import create_backbone, fit_state_dict, load_state_dict
from mosic.stages.model.network import student_backbone_state


def strip_paper_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict:
    """The state dict as the backbone names it: unchanged, or, when the keys only match with
    the paper's two extra leading components removed, those entries (the checkpoint's other
    entries, such as a projection head, are left out)."""
    if set(state) == expected:
        return state
    stripped = {".".join(k.split(".")[2:]): v for k, v in state.items() if k.count(".") >= 2}
    return {k: stripped[k] for k in expected} if expected <= set(stripped) else state


def load_eval_backbone(model: str, weights: str | None = None, img_size: int = 224) -> nn.Module:
    """A frozen backbone for evaluation from a checkpoint, an export, or a name + weights."""
    path = Path(model)
    if path.suffix == ".pt" and path.is_file():
        state = load_checkpoint(path)
        name = state["config"]["backbone"]
        backbone = create_backbone(name, img_size=img_size)
        weights_dict = student_backbone_state(state)
        backbone.load_state_dict(fit_state_dict(weights_dict, backbone), strict=True)
    elif path.suffix == ".safetensors" and path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        name = metadata.get("mosic_backbone") or metadata.get("timm_name")
        if not name:
            raise ValueError(
                f"{path}: no backbone name in its metadata; pass the name and --weights"
            )
        backbone = create_backbone(name, img_size=img_size)
        backbone.load_state_dict(fit_state_dict(load_state_dict(path), backbone), strict=True)
    else:
        backbone = create_backbone(model, img_size=img_size)
        if weights:
            state = load_state_dict(weights)
            expected = set(backbone.state_dict())
            state = fit_state_dict(strip_paper_prefix(state, expected), backbone)
            backbone.load_state_dict(state, strict=True)
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    return backbone.eval()
