"""``validate_store``: check a store against the schema in ``layout.py``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mosic.store_schema import layout
from mosic.store_schema.store import TrackStore, VideoRecord


@dataclass
class ValidationReport:
    """Problems make a store invalid; notes are harmless leftovers of interrupted runs."""

    videos: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the store has no problems."""
        return not self.problems


def validate_store(store: TrackStore, deep: bool = False) -> ValidationReport:
    """Check every indexed video's arrays (shapes, dtypes, values) against the schema.

    ``deep`` also decodes every frame chunk (slow: reads the whole store).
    """
    report = ValidationReport()
    extraction = store.extraction
    index = store.root[layout.INDEX]
    count = int(index.attrs[layout.COUNT_ATTR])
    for name in layout.INDEX_COLUMNS:
        if index[name].shape[0] < count:
            report.problems.append(f"index/{name}: {index[name].shape[0]} rows, count is {count}")
    if report.problems:
        return report
    records = store.records()
    report.videos = len(records)
    seen: set[str] = set()
    for record in records:
        if record.key in seen:
            report.problems.append(f"index: {record.key!r} listed twice")
        seen.add(record.key)
        report.problems.extend(_check_video(store, record, extraction, deep))
    videos = store.root[layout.VIDEOS]
    for key in sorted(videos.group_keys()):
        if key in seen:
            continue
        state = "complete, not yet indexed" if store.is_complete(key) else "incomplete"
        report.notes.append(f"videos/{key}: {state} (invisible to readers; a re-run settles it)")
    partial = sorted(p.relative_to(store.path) for p in store.path.rglob("*.partial"))
    report.notes.extend(f"{p}: leftover of an interrupted write (harmless)" for p in partial)
    return report


def _check_video(store: TrackStore, record: VideoRecord, extraction: dict, deep: bool) -> list[str]:
    """Problems of one indexed video, each a line starting with its key."""
    key = record.key
    if not store.is_complete(key):
        return [f"{key}: in the index but not complete on disk"]
    group = store.root[layout.video_path(key)]
    n = extraction["grid"] ** 2
    horizon = extraction["horizon"]
    expected = {
        "frames": ((record.num_frames, record.height, record.width, 3), np.dtype("uint8")),
        "query_frames": ((record.num_query_sets,), np.dtype("int32")),
        "positions": ((record.num_query_sets, horizon, n, 2), np.dtype(layout.POSITION_DTYPE)),
        "visible": ((record.num_query_sets, horizon, n), np.dtype("bool")),
    }
    if "confidence" in group:
        expected["confidence"] = (
            (record.num_query_sets, horizon, n),
            np.dtype(layout.CONFIDENCE_DTYPE),
        )
    problems = []
    for name, (shape, dtype) in expected.items():
        if name not in group:
            problems.append(f"{key}/{name}: missing")
            continue
        array = group[name]
        if array.shape != shape or array.dtype != dtype:
            problems.append(f"{key}/{name}: {array.dtype}{array.shape}, expected {dtype}{shape}")
    if problems:
        return problems
    try:
        starts = group["query_frames"][:]
        step = extraction["query_every"]
        if not np.array_equal(starts, np.arange(len(starts)) * step):
            problems.append(f"{key}/query_frames: not 0, {step}, 2*{step}, ...")
        elif len(starts) and starts[-1] + horizon > record.num_frames:
            problems.append(f"{key}/query_frames: last set runs past the video's end")
        positions = group["positions"][:]
        visible = group["visible"][:]
        inside = (
            (positions[..., 0] >= -0.5)
            & (positions[..., 0] <= record.width - 0.5)
            & (positions[..., 1] >= -0.5)
            & (positions[..., 1] <= record.height - 0.5)
        )
        if not np.all(inside[visible]):
            problems.append(f"{key}/positions: visible points outside the frame")
        if deep:
            frames = group["frames"]
            for start in range(0, frames.shape[0], layout.FRAMES_PER_SHARD):
                frames[start : start + layout.FRAMES_PER_SHARD]
    except Exception as exc:  # a damaged chunk surfaces as any of zarr's or the codec's errors
        problems.append(f"{key}: unreadable ({type(exc).__name__}: {exc})")
    return problems
