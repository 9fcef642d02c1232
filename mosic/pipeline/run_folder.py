"""A run folder (``--output``): where a run starts from, and what it records before training.

    config.yaml    the run's resolved settings (``run_config`` names; ``--config`` reads it)
    checkpoints/   checkpoint-<step>.pt, the newest ``keep_checkpoints`` of them
    metrics.jsonl  one record per step
    tensorboard/

A run starts in a folder that holds no run, or resumes (``--resume auto``: the newest
checkpoint that loads; or a checkpoint's path). A resume compares the checkpoint's settings
with the new ones: only ``run_config.OPERATIONAL`` settings and those named in
``allow_changes`` may differ. Records past the checkpoint's step (a killed run's) are dropped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosic.pipeline.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_newest,
    remove_partial_checkpoints,
    step_of,
)
from mosic.pipeline.run_config import (
    OPERATIONAL,
    SETTINGS,
    build_config,
    closest,
    config_yaml,
    differences,
    load_settings,
    settings_of,
    show_changes,
)
from mosic.pipeline.train_config import TrainConfig

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"


class RunError(Exception):
    """A run that cannot start or resume as asked; str() is one line."""


@dataclass
class Start:
    """Where a run starts: step 0, or a checkpoint's step and state."""

    step: int = 0
    state: dict[str, Any] | None = None
    checkpoint: Path | None = None
    changes: list[dict] = field(default_factory=list)  # {"step", "changed"}: allowed changes
    warnings: list[str] = field(default_factory=list)


def find_start(
    cfg: TrainConfig, resume: str | Path | None, allow_changes: tuple[str, ...] = ()
) -> Start:
    """Where ``cfg``'s run starts (reads, writes nothing). ``resume``: None (a new run: the
    folder must hold none), ``"auto"`` (the newest checkpoint that loads, else step 0) or a
    checkpoint's path. Raises RunError or CheckpointError with one line."""
    out = Path(cfg.output)
    for name in allow_changes:
        if name not in SETTINGS:
            raise RunError(f"--allow-change {name}: no such setting{closest(name, SETTINGS)}")
    if resume is None:
        held = _held(out)
        if held:
            raise RunError(
                f"{out} holds a run already ({held}): continue it with --resume auto, or train "
                "into another --output"
            )
        return Start()
    warnings: list[str] = []
    if resume == "auto":
        path, state, skipped = load_newest(out)
        if state is None and skipped:
            raise RunError(f"no checkpoint of {out} loads; the newest: {skipped[0]}")
        warnings += [f"{line}; resuming from the previous one, {path.name}" for line in skipped]
        if state is None:  # nothing to keep: step 0, what a stopped process logged dropped
            return Start()
        where = out
    else:
        path = where = Path(resume)
        state = load_checkpoint(path)
    if not {"config", "step", "student"} <= set(state):
        raise CheckpointError(f"{path}: not a mosic training checkpoint")
    step = int(state["step"])
    if resume != "auto":
        _check_folder(out, path, step)
    saved = TrainConfig.from_dict(state["config"])
    recorded = read_config(out)  # changes it holds were allowed when it was written
    agreed = [
        name
        for name, (_, new) in differences(saved, cfg).items()
        if recorded and settings_of(recorded)[name] == new
    ]
    changed = _allowed(saved, cfg, (*allow_changes, *agreed), where)
    changes = list(state.get("changes", [])) + (
        [{"step": step, "changed": changed}] if changed else []
    )
    return Start(step, state, path, changes, warnings)


def _check_folder(out: Path, path: Path, step: int) -> None:
    """Resuming ``path`` into ``out`` mixes no runs: ``out`` holds no other run, and none of its
    own checkpoints is past ``step`` (a later ``--resume auto`` would take that one)."""
    if path.resolve().parent != (out / "checkpoints").resolve():
        held = _held(out)
        if held:
            raise RunError(f"{out} holds another run ({held}): resume {path} into another --output")
        return
    later = [p for p in list_checkpoints(out) if step_of(p) >= step and p.name != path.name]
    if later:
        raise RunError(
            f"{out} has checkpoints past step {step} ({later[-1].name}): delete them to go "
            f"back to step {step}, or resume into another --output"
        )


def read_config(out: Path) -> TrainConfig | None:
    """The settings a run folder's ``config.yaml`` records (None without one)."""
    path = out / CONFIG
    return build_config(load_settings(path)) if path.is_file() else None


def _allowed(saved: TrainConfig, cfg: TrainConfig, allow: tuple[str, ...], where: Path) -> dict:
    """The changes from ``saved`` to ``cfg`` that need naming (name -> [old, new]); RunError
    when one of them is not named in ``allow``."""
    changed = {k: v for k, v in differences(saved, cfg).items() if k not in OPERATIONAL}
    refused = {k: v for k, v in changed.items() if k not in allow}
    if refused:
        raise RunError(
            f"{where}: settings differ from the run's (run -> now): {show_changes(refused)}; "
            f"resume with the run's settings, name those to change (--allow-change "
            f"{next(iter(refused))}), or train into another --output"
        )
    return {k: list(v) for k, v in changed.items()}


def _held(out: Path) -> str:
    """What of a run ``out`` holds, e.g. ``metrics.jsonl, 2 checkpoints`` ("" for nothing; a
    config.yaml alone is a start that failed before its first step)."""
    metrics = out / METRICS
    found = [METRICS] if metrics.is_file() and metrics.stat().st_size else []
    checkpoints = len(list_checkpoints(out))
    if checkpoints:
        found.append(f"{checkpoints} checkpoint{'s' * (checkpoints > 1)}")
    return ", ".join(found)


def prepare_folder(cfg: TrainConfig, start: Start) -> list[str]:
    """Before training (the main process): remove unfinished checkpoint files, drop metrics
    records past ``start.step``, write ``config.yaml``. Returns a line per thing removed."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"removed {path}: a checkpoint a stopped run did not finish writing"
        for path in remove_partial_checkpoints(out)
    ]
    dropped = _truncate_metrics(out / METRICS, start.step)
    if dropped:
        lines.append(f"{out / METRICS}: dropped {dropped} records past step {start.step}")
    comments = ["mosic train: the resolved settings of this run (mosic train --config reads it)"]
    if not cfg.weights and not cfg.pretrained:
        comments.append("the backbone started from random weights (no weights, no pretrained)")
    for change in start.changes:
        comments.append(f"changed at step {change['step']}: {show_changes(change['changed'])}")
    _write_atomically(out / CONFIG, config_yaml(cfg, comments))
    return lines


def _truncate_metrics(path: Path, step: int) -> int:
    """Keep the records of steps up to ``step`` (and no torn last line); returns how many
    records went."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            keep = json.loads(line)["step"] <= step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line + "\n")
        else:
            dropped += 1
    if dropped:
        _write_atomically(path, "".join(kept))
    return dropped


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)
