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
from mosic.stages.model.backbone import create_backbone, load_state_dict
from mosic.stages.model.network import student_backbone_state


def strip_paper_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict:
    """The state dict as the backbone names it: unchanged, or, when the keys only match with
    the paper's two extra leading components removed, those entries (the checkpoint's other
    entries, such as a projection head, are left out)."""
    if set(state) == expected:
        return state
    stripped = {".".join(k.split(".")[2:]): v for k, v in state.items() if k.count(".") >= 2}
    return {k: stripped[k] for k in expected} if expected <= set(stripped) else state


def load_eval_backbone(model: str, weights: str | None = None) -> nn.Module:
    """A frozen backbone for evaluation from a checkpoint, an export, or a name + weights.

    The backbone keeps the position grid its weights hold (a checkpoint written before mosic
    kept DINOv2's 37 x 37 grid holds 16 x 16 and is evaluated with it; the result's
    ``position_grid`` says which).
    """
    path = Path(model)
    if path.suffix == ".pt" and path.is_file():
        state = load_checkpoint(path)
        name = state["config"]["backbone"]
        source = f"{path} (student backbone)"
        backbone = create_backbone(name, weights=student_backbone_state(state), source=source)
    elif path.suffix == ".safetensors" and path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        name = metadata.get("mosic_backbone") or metadata.get("timm_name")
        if not name:
            raise ValueError(
                f"{path}: no backbone name in its metadata; pass the name and --weights"
            )
        backbone = create_backbone(name, weights=path)
    else:
        state = None
        if weights:
            with torch.device("meta"):  # the key names only: no memory, no initialisation
                expected = set(create_backbone(model).state_dict())
            state = strip_paper_prefix(load_state_dict(weights), expected)
        backbone = create_backbone(model, weights=state, source=str(weights))
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    return backbone.eval()
