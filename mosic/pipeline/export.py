"""``mosic export``: the trained student backbone as a timm state dict."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mosic.pipeline.checkpoint import CheckpointError, load_checkpoint
from mosic.stages.model.backbone import create_backbone, load_weights, timm_kwargs, timm_name
from mosic.stages.model.network import student_backbone_state


class ExportError(Exception):
    """The export could not be written; str() is one line naming the path and the reason."""


def export_backbone(checkpoint: str | Path, output: str | Path) -> tuple[Path, str]:
    """Write the student backbone of ``checkpoint`` as safetensors; returns (path, timm name).

    The weights keep the position grid they were trained with (DINOv2: 37 x 37); LoRA adapters
    of a ``--lora-rank`` run are merged into the base weights. The metadata holds the timm name
    and the ``timm.create_model`` arguments (``timm_kwargs``, JSON) that rebuild the model;
    ``load_recipe`` prints the lines that load the file. The file is written atomically, with
    the permissions any new file gets under the umask. ExportError when it cannot be written.
    """
    state = load_checkpoint(checkpoint)
    if "student" not in state or "config" not in state:
        raise CheckpointError(f"{checkpoint}: not a mosic training checkpoint")
    weights = {k: v.contiguous() for k, v in student_backbone_state(state).items()}
    backbone = state["config"]["backbone"]
    with torch.device("meta"):  # checks the weights against the backbone; nothing initialised
        model = create_backbone(backbone)
    load_weights(model, dict(weights), backbone, f"{checkpoint} (student backbone)")
    output = Path(output)
    metadata = {
        "timm_name": timm_name(backbone),
        "timm_kwargs": json.dumps(timm_kwargs(backbone, model)),
        "mosic_backbone": backbone,
        "step": str(state["step"]),
    }
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        _write(weights, output, metadata)
    except OSError as exc:
        raise ExportError(f"{output}: cannot write the export ({exc.strerror or exc})") from None
    return output, timm_name(backbone)


def _write(weights: dict, output: Path, metadata: dict[str, str]) -> None:
    """safetensors into a temporary file beside ``output``, given the mode a new file gets under
    the umask (safetensors itself creates files 0600), then renamed over ``output``."""
    handle, partial = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(handle)
    try:
        save_file(weights, partial, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(partial, 0o666 & ~umask)
        os.replace(partial, output)
    finally:
        Path(partial).unlink(missing_ok=True)


def load_recipe(path: str | Path) -> str:
    """Python lines that load the export ``path`` into a plain timm model with
    ``strict=True`` (from its metadata)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    kwargs = json.loads(metadata.get("timm_kwargs", '{"num_classes": 0}'))
    args = ", ".join([repr(metadata["timm_name"]), *(f"{k}={v!r}" for k, v in kwargs.items())])
    return "\n".join(
        [
            "import safetensors.torch, timm",
            f"model = timm.create_model({args})",
            f"model.load_state_dict(safetensors.torch.load_file({str(path)!r}), strict=True)",
        ]
    )
