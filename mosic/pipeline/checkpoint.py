"""Training checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint is written to ``checkpoint-<step>.partial``, flushed to disk, then renamed: a run
killed while writing leaves the partial file (removed when the run resumes) and never a
damaged ``checkpoint-<step>.pt``. After each write only the newest ``keep`` checkpoints stay.
"""

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
    """Write ``state`` for ``step`` (partial file, fsync, rename) and keep the newest ``keep``."""
    path = checkpoint_path(output, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself reaches the disk
    finally:
        os.close(folder)
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
    return sorted(found, key=step_of)


def step_of(path: Path) -> int:
    """The step in a checkpoint's name: ``checkpoint-00000400.pt`` -> 400."""
    return int(_NAME.search(path.name).group(1))


def remove_partial_checkpoints(output: str | Path) -> list[Path]:
    """Delete what writes killed midway left (``*.partial``); returns what was removed."""
    folder = Path(output) / "checkpoints"
    removed = sorted(folder.glob("checkpoint-*.partial")) if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint (tensors and plain data only: nothing is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        damaged = isinstance(exc, EOFError) or "zip archive" in str(exc)
        reason = "truncated or damaged" if damaged else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None


def load_newest(output: str | Path) -> tuple[Path | None, dict[str, Any] | None, list[str]]:
    """The newest checkpoint of a run that loads: (path, state, one line per newer checkpoint
    that did not load); (None, None, lines) when none does."""
    skipped: list[str] = []
    for path in reversed(list_checkpoints(output)):
        try:
            return path, load_checkpoint(path), skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    return None, None, skipped
