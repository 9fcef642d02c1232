"""Query sets: an S x S grid of points seeded every K frames, each tracked for a horizon."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mosic.stages.trackers.base import Tracker


def grid_points(height: int, width: int, grid: int) -> np.ndarray:
    """Centres of a ``grid`` x ``grid`` partition of the frame, (grid * grid, 2) float32 (x, y).

    Rows of the result go row-major over the grid: point ``i * grid + j`` is in grid row ``i``
    (y) and column ``j`` (x).
    """
    xs = (np.arange(grid, dtype=np.float32) + 0.5) * width / grid - 0.5
    ys = (np.arange(grid, dtype=np.float32) + 0.5) * height / grid - 0.5
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def query_frames(num_frames: int, every: int, horizon: int) -> np.ndarray:
    """Start frames 0, every, 2 * every, ... of the query sets that fit a whole horizon, (Q,)."""
    return np.arange(0, max(num_frames - horizon + 1, 0), every, dtype=np.int32)


@dataclass(frozen=True)
class QuerySetTracks:
    """Tracks of every query set of one video.

    positions: (Q, horizon, N, 2) float32 (x, y) pixels.
    visible: (Q, horizon, N) bool.
    confidence: (Q, horizon, N) float32, or None when the tracker has none.
    """

    positions: np.ndarray
    visible: np.ndarray
    confidence: np.ndarray | None


def _windows(starts: np.ndarray, horizon: int, window: int) -> list[np.ndarray]:
    """Group query-set indices so each group's frames span at most max(window, horizon)."""
    groups: list[list[int]] = []
    for q, start in enumerate(starts):
        if groups and start + horizon - starts[groups[-1][0]] <= window:
            groups[-1].append(q)
        else:
            groups.append([q])
    return [np.asarray(g) for g in groups]


def track_query_sets(
    tracker: Tracker,
    frames: np.ndarray,
    starts: np.ndarray,
    points: np.ndarray,
    horizon: int,
    window: int = 67,
) -> QuerySetTracks:
    """Track the grid ``points`` from every start frame for ``horizon`` frames.

    frames: (T, H, W, 3) uint8; starts: (Q,) int; points: (N, 2) float32 (x, y).
    The video is cut into windows of at most ``window`` frames (memory stays bounded on long
    videos); the windows go to the tracker as one batch.
    """
    n = len(points)
    groups = _windows(starts, horizon, window)
    batch = []
    for group in groups:
        first = starts[group[0]]
        window_frames = frames[first : starts[group[-1]] + horizon]
        t = np.repeat(starts[group] - first, n).astype(np.float32)
        queries = np.concatenate([t[:, None], np.tile(points, (len(group), 1))], axis=1)
        batch.append((window_frames, queries))
    results = tracker.track_batch(batch)

    q_total = len(starts)
    positions = np.empty((q_total, horizon, n, 2), np.float32)
    visible = np.empty((q_total, horizon, n), bool)
    has_confidence = all(r.confidence is not None for r in results)
    confidence = np.empty((q_total, horizon, n), np.float32) if has_confidence else None
    for group, result in zip(groups, results, strict=True):
        first = starts[group[0]]
        for i, q in enumerate(group):
            rows = slice(starts[q] - first, starts[q] - first + horizon)
            cols = slice(i * n, (i + 1) * n)
            positions[q] = result.positions[rows, cols]
            visible[q] = result.visible[rows, cols]
            if confidence is not None:
                confidence[q] = result.confidence[rows, cols]
    return QuerySetTracks(positions, visible, confidence)
