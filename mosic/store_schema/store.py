"""``TrackStore``: reading and writing a mosic store (layout in ``layout.py``).

Writers: each video group is written by exactly one process, whole, and marked complete last.
The index and the failures table are written only by the coordinator (the process that runs
the extraction). Readers see a video only once it is in the index.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from mosic.store_schema import layout
from mosic.store_schema.rows import RowArray, read_clip_rows


class StoreError(Exception):
    """A store that cannot be opened or used as asked; str() is one line."""


@dataclass(frozen=True)
class VideoRecord:
    """One row of the index."""

    key: str
    num_frames: int
    height: int
    width: int
    num_query_sets: int


@dataclass(frozen=True)
class VideoMeta:
    """Per-video metadata, kept in the video group's attributes."""

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
    positions: (Q, horizon, N, 2) float32 (x, y) pixels; NaN past the video's end.
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
        """The index row for this video under ``key``."""
        t, h, w, _ = self.frames.shape
        return VideoRecord(key, t, h, w, len(self.query_frames))


@dataclass(frozen=True)
class Failure:
    """One row of the failures table."""

    key: str
    source: str
    stage: str
    reason: str


class TrackStore:
    """A mosic store on disk (Zarr v3). Open with ``open`` or ``create``."""

    def __init__(self, root: zarr.Group, path: Path):
        self.root = root
        self.path = path

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> TrackStore:
        """Open an existing store (``mode`` "r" or "r+"); fails on another schema version."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path}: not a mosic store (no zarr.json)")
        try:
            root = zarr.open_group(path, mode=mode)
        except Exception as exc:  # zarr raises several types for a damaged root
            raise StoreError(f"{path}: cannot open as Zarr: {exc}") from exc
        version = root.attrs.get(layout.VERSION_ATTR)
        if version != layout.STORE_VERSION:
            raise StoreError(
                f"{path}: store schema version {version!r}, this mosic reads version "
                f"{layout.STORE_VERSION}; re-extract into a new store"
            )
        return cls(root, path)

    @classmethod
    def create(cls, path: str | Path, extraction: dict[str, Any]) -> TrackStore:
        """Create a new, empty store with the extraction settings every video shares.

        The store is built in a temporary folder beside ``path`` and renamed into place, so a
        run killed while creating it leaves no half-made store.
        """
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise StoreError(f"{path}: already exists and is not empty")
        building = path.with_name(f".{path.name}.creating-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        root = zarr.open_group(
            building,
            mode="w",
            attributes={
                layout.VERSION_ATTR: layout.STORE_VERSION,
                layout.EXTRACTION_ATTR: extraction,
            },
        )
        index = root.create_group(layout.INDEX, attributes={layout.COUNT_ATTR: 0})
        for name, dtype in layout.INDEX_COLUMNS.items():
            index.create_array(name, shape=(0,), chunks=(layout.INDEX_CHUNK,), dtype=dtype)
        root.create_group(layout.FAILURES, attributes={layout.FAILURES_ATTR: {}})
        root.create_group(layout.VIDEOS)
        if path.exists():
            path.rmdir()
        building.rename(path)
        return cls.open(path, mode="r+")

    @classmethod
    def open_for_extraction(cls, path: str | Path, extraction: dict[str, Any]) -> TrackStore:
        """Open a store to add videos, creating it; its settings must equal ``extraction``."""
        path = Path(path)
        if not path.exists() or not any(path.iterdir()):
            return cls.create(path, extraction)
        store = cls.open(path, mode="r+")
        if store.extraction != extraction:
            diff = sorted(
                k
                for k in set(extraction) | set(store.extraction)
                if extraction.get(k) != store.extraction.get(k)
            )
            raise StoreError(
                f"{path}: extracted with other settings ({', '.join(diff)} differ); "
                "use another --store"
            )
        return store

    @property
    def extraction(self) -> dict[str, Any]:
        """The settings shared by every video: tracker name, version, parameters, grid, ..."""
        return dict(self.root.attrs[layout.EXTRACTION_ATTR])

    # -- the index (coordinator writes, everyone reads) ----------------------------------

    def _index(self) -> zarr.Group:
        return self.root[layout.INDEX]

    def records(self) -> list[VideoRecord]:
        """Every complete video, in the order they were indexed."""
        index = self._index()
        count = self._count()
        if count == 0:
            return []
        cols = {name: index[name][:count] for name in layout.INDEX_COLUMNS}
        return [
            VideoRecord(str(k), int(t), int(h), int(w), int(q))
            for k, t, h, w, q in zip(
                cols["key"],
                cols["num_frames"],
                cols["height"],
                cols["width"],
                cols["num_query_sets"],
                strict=True,
            )
        ]

    def keys(self) -> list[str]:
        """Keys of every complete video."""
        count = self._count()
        return [str(k) for k in self._index()["key"][:count]] if count else []

    def _count(self) -> int:
        return int(self._index().attrs[layout.COUNT_ATTR])

    def add_to_index(self, records: list[VideoRecord]) -> None:
        """Append new rows and update existing ones (coordinator only); the row count last."""
        if not records:
            return
        index = self._index()
        count = self._count()
        position = {k: i for i, k in enumerate(self.keys())}
        new = [r for r in records if r.key not in position]
        needed = count + len(new)
        for name in layout.INDEX_COLUMNS:
            array = index[name]
            if array.shape[0] < needed:
                array.resize((math.ceil(needed / layout.INDEX_CHUNK) * layout.INDEX_CHUNK,))
            if new:
                array[count:needed] = np.array([getattr(r, name) for r in new], dtype=array.dtype)
            for r in records:
                if r.key in position:
                    array[position[r.key]] = getattr(r, name)
        index.attrs[layout.COUNT_ATTR] = needed

    # -- failures (coordinator writes) ---------------------------------------------------

    def failures(self) -> list[Failure]:
        """Videos that failed, with the stage and a one-line reason."""
        table = self.root[layout.FAILURES].attrs[layout.FAILURES_ATTR]
        return [Failure(key, **row) for key, row in sorted(table.items())]

    def update_failures(self, failed: list[Failure], succeeded: list[str]) -> None:
        """Record new failures and forget old ones of videos that now succeeded."""
        if not failed and not succeeded:
            return
        group = self.root[layout.FAILURES]
        table = dict(group.attrs[layout.FAILURES_ATTR])
        for key in succeeded:
            table.pop(key, None)
        for f in failed:
            table[f.key] = {"source": f.source, "stage": f.stage, "reason": f.reason}
        group.attrs[layout.FAILURES_ATTR] = table

    # -- videos (one writer per video) ---------------------------------------------------

    def is_complete(self, key: str) -> bool:
        """Whether the video's group exists and was marked complete."""
        try:
            group = self.root[layout.video_path(key)]
        except KeyError:
            return False
        return bool(group.attrs.get(layout.COMPLETE_ATTR, False))

    def write_video(self, key: str, data: VideoData) -> VideoRecord:
        """Write one video's group whole (replacing any earlier, partial one); mark it last."""
        t, h, w, _ = data.frames.shape
        q, horizon, n, _ = data.positions.shape
        codec = layout.compressor()
        group = self.root.create_group(layout.video_path(key), overwrite=True)
        frames = group.create_array(
            "frames",
            shape=(t, h, w, 3),
            dtype="uint8",
            chunks=(1, h, w, 3),
            shards=(min(t, layout.FRAMES_PER_SHARD), h, w, 3),
            compressors=codec,
        )
        RowArray.open(self.path / frames.path).write(data.frames)
        group.create_array("query_frames", data=data.query_frames.astype(np.int32))
        track_arrays = {
            "positions": (data.positions, layout.POSITION_DTYPE, float("nan")),
            "visible": (data.visible, "bool", False),
            "confidence": (data.confidence, layout.CONFIDENCE_DTYPE, 0.0),
        }
        for name, (values, dtype, fill) in track_arrays.items():
            if values is None:
                continue
            array = group.create_array(
                name,
                shape=values.shape,
                dtype=dtype,
                chunks=(1, *values.shape[1:]),
                shards=values.shape,
                compressors=codec,
                fill_value=fill,
            )
            RowArray.open(self.path / array.path).write(values)
        meta = asdict(data.meta)
        meta.update(num_frames=t, size=[h, w], num_query_sets=q, horizon=horizon, num_points=n)
        meta[layout.COMPLETE_ATTR] = True
        group.attrs.update(meta)
        return data.record(key)

    def discard_video(self, key: str) -> None:
        """Remove a video's group, complete or not (best effort: a full disk may refuse).

        After a failed write zarr may still have chunk writes in flight (one failure does not
        cancel the others), and they would re-create folders: they are waited for first.
        """
        _wait_for_pending_writes()
        shutil.rmtree(self.path / layout.video_path(key), ignore_errors=True)

    def read_record(self, key: str) -> VideoRecord:
        """The index row of a complete video, from its own group's attributes."""
        attrs = self.video(key).attrs
        h, w = attrs["size"]
        return VideoRecord(key, attrs["num_frames"], h, w, attrs["num_query_sets"])

    def video(self, key: str) -> zarr.Group:
        """The group of a complete video (raises StoreError otherwise)."""
        if not self.is_complete(key):
            raise StoreError(f"{self.path}: no complete video {key!r}")
        return self.root[layout.video_path(key)]

    def read_video(self, key: str) -> VideoData:
        """Read one video's data back whole."""
        group = self.video(key)
        attrs = dict(group.attrs)
        meta = VideoMeta(
            source=attrs["source"],
            original_size=tuple(attrs["original_size"]),
            fps=attrs["fps"],
            decoded_frames=attrs["decoded_frames"],
            frame_stride=attrs["frame_stride"],
        )
        confidence = group["confidence"][:].astype(np.float32) if "confidence" in group else None
        return VideoData(
            meta=meta,
            frames=group["frames"][:],
            query_frames=group["query_frames"][:],
            positions=group["positions"][:].astype(np.float32),
            visible=group["visible"][:],
            confidence=confidence,
        )

    def read_clip(
        self, key: str, query_set: int, num_frames: int, step: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One training clip: ``num_frames`` frames ``step`` apart from a query set's start.

        Returns frames (F, H, W, 3) uint8, positions (F, N, 2) float32 (x, y) and visible (F, N)
        bool. Reads F frame chunks and one chunk of each track array (``rows.read_clip_rows``).
        """
        attrs = self.video(key).attrs
        start = query_set * self.extraction["query_every"]
        span = (num_frames - 1) * step + 1
        if (
            not 0 <= query_set < attrs["num_query_sets"]
            or span > attrs["horizon"]
            or start + span > attrs["num_frames"]
        ):
            raise StoreError(f"{key}: query set {query_set} has no {num_frames}x{step} clip")
        return read_clip_rows(
            self.path / layout.video_path(key), start, query_set, num_frames, step
        )


def _wait_for_pending_writes() -> None:
    """Let every task still running on zarr's event loop finish (their errors are ignored)."""

    async def drain() -> None:
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        await asyncio.gather(*pending, return_exceptions=True)

    sync(drain())
