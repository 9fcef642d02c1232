"""The point-tracker interface that every stage-one backend implements.

Coordinate convention (the one used everywhere in mosic, in the store and in CoTracker):
positions are ``(x, y)`` in pixels of the frames given to the tracker, ``x`` the column and
``y`` the row, with pixel centres at integer coordinates: the centre of the top-left pixel is
``(0, 0)`` and the centre of the bottom-right one is ``(W - 1, H - 1)``. Index an image as
``image[round(y), round(x)]``, never ``image[x, y]``: that swap is the classic bug of this field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TrackResult:
    """What a tracker returns for one video window.

    positions: (T, N, 2) float32, (x, y) pixels; rows before a query's frame are NaN.
    visible: (T, N) bool; False before a query's frame and wherever the point is hidden or
        outside the frame.
    confidence: (T, N) float32 in [0, 1], or None when the tracker has none.
    """

    positions: np.ndarray
    visible: np.ndarray
    confidence: np.ndarray | None = None


@runtime_checkable
class Tracker(Protocol):
    """A point tracker.

    ``track`` follows each query forward from its own frame to the end of the window, or for
    ``horizon`` frames when given (a tracker may then leave the rows after that NaN / not
    visible: the pipeline reads only the first ``horizon`` rows from each query's frame).
    ``track_batch`` takes several videos at once (a GPU backend may batch or pipeline them; the
    default runs them one by one).

    ``default_grid``: the query grid (``grid x grid`` points a query set) unless ``--grid`` is
    given. ``window_sets``: how many consecutive query sets share one window by default (the
    pipeline's window is ``horizon + (window_sets - 1) * query_every`` frames unless ``--window``
    is given).
    """

    name: str
    version: str
    default_grid: int
    window_sets: int

    def params(self) -> dict:
        """The settings that change the tracks (stored in the store's metadata)."""
        ...

    def track(
        self, frames: np.ndarray, queries: np.ndarray, horizon: int | None = None
    ) -> TrackResult:
        """Track points through one video window.

        frames: (T, H, W, 3) uint8 RGB.
        queries: (N, 3) float32 rows ``(t, x, y)``: frame index in the window, then pixels.
        horizon: frames each query is needed for from its own frame (None: to the window's end).
        Returns a TrackResult with T rows per query.
        """
        ...

    def track_batch(
        self, videos: list[tuple[np.ndarray, np.ndarray]], horizon: int | None = None
    ) -> list[TrackResult]:
        """Track several ``(frames, queries)`` pairs; same contract as ``track`` for each."""
        ...
