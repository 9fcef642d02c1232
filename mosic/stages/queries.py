"""Query sets: an S x S grid of points seeded every K frames, each tracked for a horizon.

Consecutive query sets share tracker calls: a window of W frames carries every set whose
horizon fits inside it, so each stored frame goes through the tracker about
``W / (sets per window * query_every)`` times instead of ``horizon / query_every`` times.
"""

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


def default_window(sets: int, horizon: int, every: int, most: int | None = None) -> int:
    """The window (frames) that holds ``sets`` consecutive query sets: ``horizon + (sets - 1)
    * every``, lowered to ``most`` frames (a tracker's limit) but never below ``horizon``."""
    window = horizon + (max(sets, 1) - 1) * every
    return max(horizon, min(window, most)) if most else window


@dataclass(frozen=True)
class QuerySetTracks:
    """Tracks of every query set of one video.

    positions: (Q, horizon, N, 2) float32 (x, y) pixels.
    visible: (Q, horizon, N) bool.
    confidence: (Q, horizon, N) float32, or None when the tracker has none.
    tracked_frames: frames the tracker processed (the sum of its windows' lengths); over the
        video's frame count this is the tracker's frame-passes per stored frame.
    """

    positions: np.ndarray
    visible: np.ndarray
    confidence: np.ndarray | None
    tracked_frames: int = 0


def windows(starts: np.ndarray, horizon: int, window: int) -> list[np.ndarray]:
    """Group query sets (indices into the sorted ``starts``, (Q,)) into tracker windows.

    Each group's frames, from its first start to its last start + ``horizon``, span at most
    ``max(window, horizon)``. It uses as few groups as fit (fewest frames tracked: each group
    costs ``horizon`` frames plus the gaps between its starts) and, among those, groups of
    equal size (sizes differ by at most one, so no window is much longer than the others).
    """
    window = max(window, horizon)
    if not len(starts):
        return []
    greedy: list[list[int]] = []
    for q, start in enumerate(starts):
        if greedy and start + horizon - starts[greedy[-1][0]] <= window:
            greedy[-1].append(q)
        else:
            greedy.append([q])
    even = np.array_split(np.arange(len(starts)), len(greedy))
    if all(starts[g[-1]] + horizon - starts[g[0]] <= window for g in even):
        return even
    return [np.asarray(g) for g in greedy]  # starts too uneven to split evenly


def long_video_frame_passes(every: int, horizon: int, window: int) -> float:
    """Frames the tracker processes per stored frame on a long video: each window holds the
    ``sets`` that fit, spans ``horizon + (sets - 1) * every`` frames and advances by ``sets *
    every``."""
    sets = (max(window, horizon) - horizon) // every + 1
    return (horizon + (sets - 1) * every) / (sets * every)


def frame_passes(num_frames: int, every: int, horizon: int, window: int) -> float:
    """Frames the tracker processes per stored frame for a video of ``num_frames`` frames."""
    starts = query_frames(num_frames, every, horizon)
    spans = [starts[g[-1]] + horizon - starts[g[0]] for g in windows(starts, horizon, window)]
    return float(sum(spans)) / max(num_frames, 1)


def track_query_sets(
    tracker: Tracker,
    frames: np.ndarray,
    starts: np.ndarray,
    points: np.ndarray,
    horizon: int,
    window: int,
) -> QuerySetTracks:
    """Track the grid ``points`` from every start frame for ``horizon`` frames.

    frames: (T, H, W, 3) uint8; starts: (Q,) int, sorted; points: (N, 2) float32 (x, y).
    The query sets are grouped into windows of at most ``max(window, horizon)`` frames
    (``windows``): one tracker call per window, with the queries of all its sets (each at its
    own frame), and the tracker told that a query is needed for ``horizon`` frames only. The
    windows go to the tracker as one batch.
    """
    n = len(points)
    groups = windows(starts, horizon, window)
    batch = []
    for group in groups:
        first = starts[group[0]]
        window_frames = frames[first : starts[group[-1]] + horizon]
        t = np.repeat(starts[group] - first, n).astype(np.float32)
        queries = np.concatenate([t[:, None], np.tile(points, (len(group), 1))], axis=1)
        batch.append((window_frames, queries))
    results = tracker.track_batch(batch, horizon=horizon)

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
    tracked = sum(len(frames_) for frames_, _ in batch)
    return QuerySetTracks(positions, visible, confidence, tracked)
