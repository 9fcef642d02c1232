"""``mosic export``: the trained student backbone as a timm state dict."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from mosic.pipeline.checkpoint import CheckpointError, load_checkpoint
from mosic.stages.model.backbone import timm_name
from mosic.stages.model.network import student_backbone_state


def export_backbone(checkpoint: str | Path, output: str | Path) -> tuple[Path, str]:
    """Write the student backbone of ``checkpoint`` as safetensors; returns (path, timm name).

    The file loads with ``timm.create_model(<timm name>).load_state_dict(..., strict=True)``
    (for a registered test backbone, with the same construction arguments). LoRA adapters of a
    ``--lora-rank`` run are merged into the base weights.
    """
    state = load_checkpoint(checkpoint)
    if "student" not in state or "config" not in state:
        raise CheckpointError(f"{checkpoint}: not a mosic training checkpoint")
    weights = {k: v.contiguous() for k, v in student_backbone_state(state).items()}
    backbone = state["config"]["backbone"]
    name = timm_name(backbone)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"timm_name": name, "mosic_backbone": backbone, "step": str(state["step"])}
    save_file(weights, str(output), metadata=metadata)
    return output, name
