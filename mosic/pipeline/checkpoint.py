"""Training checkpoints: written atomically, loaded with ``weights_only=True``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"checkpoint-(\d{8})\.pt$")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; str() is one line."""


def checkpoint_path(output: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives in a run's output folder."""
    return Path(output) / "checkpoints" / f"checkpoint-{step:08d}.pt"


def save_checkpoint(state: dict[str, Any], output: str | Path, step: int, keep: int = 2) -> Path:
    """Write ``state`` for ``step`` (temporary file, then rename) and keep the newest ``keep``."""
    path = checkpoint_path(output, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)
    for old in list_checkpoints(output)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(output: str | Path) -> list[Path]:
    """A run's checkpoints, oldest first."""
    folder = Path(output) / "checkpoints"
    found = (
        [p for p in folder.glob("checkpoint-*.pt") if _NAME.search(p.name)]
        if folder.is_dir()
        else []
    )
    return sorted(found, key=lambda p: int(_NAME.search(p.name).group(1)))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint (tensors and plain data only: nothing is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None


def resolve_resume(resume: str | None, output: str | Path) -> Path | None:
    """``--resume auto`` -> the run's newest checkpoint (or None); a path -> that path."""
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(output)
        return found[-1] if found else None
    return Path(resume)
