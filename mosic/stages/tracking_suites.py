"""How a point tracker is scored on generated videos: the suites, the seeds, the protocol.

The design was fixed before any tuning: videos of 96 frames at 256 x 192 (the size the
benchmarks extract at); the extraction's query protocol (a 16 x 16 grid every 8 frames, each
set tracked for 67 frames through ``track_query_sets``, so windows are cut as in
``mosic extract-tracks``); TAP-Vid metrics per query set (query mode "first"), averaged over
the query sets of a video, then over videos. Suites: ``easy`` (the plain generated scene, as in
the demo), each condition of ``synthetic_conditions.HARD`` alone, and ``all`` of them together.
Trackers are tuned on ``DEV_SEEDS`` and reported on ``HELD_OUT_SEEDS``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mosic.stages.queries import grid_points, query_frames, track_query_sets
from mosic.stages.synthetic import SyntheticVideo, make_video
from mosic.stages.synthetic_conditions import HARD, Condition
from mosic.stages.tapvid import tapvid_metrics
from mosic.stages.trackers.base import Tracker

DEV_SEEDS = tuple(range(200, 206))
HELD_OUT_SEEDS = tuple(range(300, 310))
KEYS = ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy", "median_error")


@dataclass(frozen=True)
class Protocol:
    """Video size and the extraction's query sets (``mosic extract-tracks`` defaults)."""

    num_frames: int = 96
    height: int = 192
    width: int = 256
    grid: int = 16
    query_every: int = 8
    horizon: int = 67
    window: int = 123  # lk's default: 8 query sets a window (the tracks are the same in any)


SUITES: dict[str, tuple[Condition, ...]] = {
    "easy": (),
    **{condition.name: (condition,) for condition in HARD},
    "all": HARD,
}


def suite_video(suite: str, seed: int, protocol: Protocol = Protocol()) -> SyntheticVideo:
    """The video of ``suite`` for ``seed``."""
    return make_video(
        seed,
        num_frames=protocol.num_frames,
        height=protocol.height,
        width=protocol.width,
        conditions=SUITES[suite],
    )


def score_video(
    tracker: Tracker, video: SyntheticVideo, protocol: Protocol = Protocol()
) -> dict[str, float]:
    """TAP-Vid metrics (``KEYS`` and the rest) of ``tracker`` on one video, averaged over the
    protocol's query sets."""
    frames = video.frames
    num_frames, height, width = frames.shape[:3]
    points = grid_points(height, width, protocol.grid)
    starts = query_frames(num_frames, protocol.query_every, protocol.horizon)
    tracks = track_query_sets(tracker, frames, starts, points, protocol.horizon, protocol.window)
    scores = []
    for q, start in enumerate(starts):
        queries = np.concatenate([np.full((len(points), 1), start), points], 1)
        gt_positions, gt_visible = video.ground_truth(queries.astype(np.float32))
        window = slice(start, start + protocol.horizon)
        scores.append(
            tapvid_metrics(
                np.zeros(len(points)),
                gt_positions[window],
                gt_visible[window],
                tracks.positions[q],
                tracks.visible[q],
                (height, width),
            )
        )
    return {k: float(np.nanmean([s[k] for s in scores])) for k in scores[0]}


def mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    """Per-video metrics averaged over videos (NaN-aware)."""
    return {k: float(np.nanmean([s[k] for s in scores])) for k in scores[0]}
