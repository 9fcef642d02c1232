"""What the store holds per video: its index row, metadata, data; and failure rows."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class VideoRecord:
    """One row of the index: a video's shape and where its rows are in its part."""

    key: str
    num_frames: int
    height: int
    width: int
    num_query_sets: int
    part: str = ""
    frame_start: int = 0
    track_start: int = 0
    bytes: int = 0

    @classmethod
    def from_row(cls, row: dict) -> VideoRecord:
        """A record from a mapping with (at least) the record's fields."""
        return cls(**{f.name: row[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class VideoMeta:
    """Per-video metadata, kept in its part's attributes."""

    source: str
    original_size: tuple[int, int]
    fps: float | None
    decoded_frames: int
    frame_stride: int


@dataclass(frozen=True)
class VideoData:
    """Everything stored for one video.

    frames: (T, H, W, 3) uint8 RGB at storage size.
    query_frames: (Q,) int32, stored-frame index where each query set starts.
    positions: (Q, horizon, N, 2) float32 (x, y) pixels.
    visible: (Q, horizon, N) bool.
    confidence: (Q, horizon, N) float32 or None.
    """

    meta: VideoMeta
    frames: np.ndarray
    query_frames: np.ndarray
    positions: np.ndarray
    visible: np.ndarray
    confidence: np.ndarray | None = None

    def record(self, key: str) -> VideoRecord:
        """The index row for this video under ``key`` (no part yet)."""
        t, h, w, _ = self.frames.shape
        return VideoRecord(key, t, h, w, len(self.query_frames))


@dataclass(frozen=True)
class Failure:
    """One row of the failures table."""

    key: str
    source: str
    stage: str
    reason: str
