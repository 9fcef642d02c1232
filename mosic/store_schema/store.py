"""``TrackStore``: reading and writing a mosic store (layout in ``layout.py``).

Writers: a part is written whole by one process (``PartWriter``), which never touches another
part; the index and the failures table are written only by the coordinator (the process that
runs the extraction), after the part is finished. Readers see a video only once it is in the
index, and what they opened is a snapshot: the rows visible then, in parts that never change.
"""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from mosic.store_schema import layout
from mosic.store_schema.chunks import FrameCodec, split_tracks
from mosic.store_schema.errors import CorruptVideo, DamagedData, StoreError
from mosic.store_schema.index import Index, create_index
from mosic.store_schema.location import StoreLocation
from mosic.store_schema.parts import (
    PartWriter,
    encode_video,
    part_attrs,
    part_reader,
    parts_attrs,
)
from mosic.store_schema.records import Failure, VideoData, VideoMeta, VideoRecord


def version_problem(path: Path | str, version: object) -> str | None:
    """The one-line reason a store of schema ``version`` cannot be read, or None."""
    if version is None:
        return f"{path}: not a mosic store (no {layout.VERSION_ATTR} in its zarr.json)"
    try:
        number = int(version)
    except (TypeError, ValueError):
        number = None
    if number == layout.STORE_VERSION and not isinstance(version, bool):
        return None
    if number == 1:
        return (
            f"{path}: a store of schema version 1; this mosic reads version "
            f"{layout.STORE_VERSION}: convert it with `mosic store convert {path} NEW.zarr`"
        )
    return (
        f"{path}: store schema version {version}, this mosic reads version "
        f"{layout.STORE_VERSION}; re-extract into a new store"
    )


class TrackStore:
    """A mosic store (Zarr v3), in a local folder or an object store (``s3://bucket/name``).
    Open with ``open`` or ``create``."""

    def __init__(self, root: zarr.Group, location: StoreLocation):
        self.root = root
        self.location = location
        self.index = Index(root[layout.INDEX])
        self._by_key: dict[str, VideoRecord] | None = None

    @property
    def path(self) -> Path | str:
        """The store's folder (a ``Path``), or its URL if remote."""
        return self.location.path

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path | StoreLocation, mode: str = "r") -> TrackStore:
        """Open an existing store (``mode`` "r" or "r+"); fails on another schema version."""
        location = StoreLocation.parse(path)
        path = location.path
        if not location.exists("zarr.json"):
            raise StoreError(f"{path}: not a mosic store (no zarr.json)")
        try:
            root = zarr.open_group(location.zarr_store(read_only=mode == "r"), mode=mode)
        except Exception as exc:  # zarr raises several types for a damaged root
            raise StoreError(f"{path}: cannot open as Zarr: {exc}") from exc
        problem = version_problem(path, root.attrs.get(layout.VERSION_ATTR))
        if problem:
            raise StoreError(problem)
        return cls(root, location)

    @classmethod
    def create(
        cls, path: str | Path | StoreLocation, extraction: dict[str, Any],
        codec: FrameCodec | None = None,
    ) -> TrackStore:  # fmt: skip
        """Create a new, empty store with the extraction settings every video shares.

        The store is built in a temporary folder beside ``path`` and renamed into place (a
        remote store: built in a local temporary folder and uploaded, its root ``zarr.json``
        last), so a run killed while creating it leaves no half-made store.
        """
        location = StoreLocation.parse(path)
        if not location.is_empty():
            raise StoreError(f"{location.path}: already exists and is not empty")
        codec = codec or FrameCodec()
        if location.remote:
            with tempfile.TemporaryDirectory(prefix="mosic-store-") as folder:
                cls._build(Path(folder) / location.name, extraction, codec)
                location.upload(Path(folder) / location.name, "")
            return cls.open(location, mode="r+")
        path = location.local()
        building = path.with_name(f".{path.name}.creating-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        cls._build(building, extraction, codec)
        if path.exists():
            path.rmdir()
        building.rename(path)
        return cls.open(location, mode="r+")

    @staticmethod
    def _build(building: Path, extraction: dict[str, Any], codec: FrameCodec) -> None:
        """An empty store in the local folder ``building``."""
        attrs = {
            layout.VERSION_ATTR: layout.STORE_VERSION,
            layout.EXTRACTION_ATTR: extraction,
            layout.FRAME_CODEC_ATTR: codec.attrs(),
        }
        root = zarr.open_group(building, mode="w", attributes=attrs)
        create_index(root)
        root.create_group(layout.FAILURES, attributes={layout.FAILURES_ATTR: {}})
        (building / layout.PARTS).mkdir()

    @classmethod
    def open_for_extraction(
        cls, path: str | Path | StoreLocation, extraction: dict[str, Any],
        codec: FrameCodec | None = None,
    ) -> TrackStore:  # fmt: skip
        """Open a store to add videos, creating it; its settings must equal ``extraction``
        (and its frame codec ``codec``)."""
        location = StoreLocation.parse(path)
        path = location.path
        codec = codec or FrameCodec()
        if location.is_empty():
            return cls.create(location, extraction, codec)
        store = cls.open(location, mode="r+")
        ours = {**extraction, "frame_codec": codec.attrs()}
        theirs = {**store.extraction, "frame_codec": store.frame_codec.attrs()}
        diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        if diff:
            raise StoreError(
                f"{path}: extracted with other settings ({', '.join(diff)} differ); "
                "use another --store"
            )
        return store

    @property
    def extraction(self) -> dict[str, Any]:
        """The settings shared by every video: tracker name, version, parameters, grid, ..."""
        return dict(self.root.attrs[layout.EXTRACTION_ATTR])

    @property
    def frame_codec(self) -> FrameCodec:
        """How this store's frames are encoded."""
        return FrameCodec.from_attrs(self.root.attrs[layout.FRAME_CODEC_ATTR])

    # -- the index (coordinator writes, everyone reads) ----------------------------------

    def records(self) -> list[VideoRecord]:
        """Every indexed video, in the order they were indexed."""
        return self.index.records()

    def keys(self) -> list[str]:
        """Keys of every indexed video."""
        return self.index.keys()

    def add_to_index(self, records: list[VideoRecord]) -> None:
        """Index finished videos (coordinator only); a key indexed again points to its new rows."""
        self.index.add(records)
        self._by_key = None

    def record(self, key: str) -> VideoRecord:
        """The index row of ``key`` (StoreError naming close keys if it is not indexed)."""
        if self._by_key is not None and key in self._by_key:
            return self._by_key[key]
        record = self.index.find(key)
        if record is None:
            keys = self.keys()
            close = difflib.get_close_matches(key, keys, n=5, cutoff=0.5)
            hint = f"; close: {', '.join(close)}" if close else ""
            raise StoreError(
                f"{self.path}: no video {key!r} among its {len(keys)} videos{hint} "
                "(all keys: mosic store keys)"
            )
        if self._by_key is None:
            self._by_key = {}
        self._by_key[key] = record
        return record

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

    # -- parts (one writer each) ---------------------------------------------------------

    def part_writer(self) -> PartWriter:
        """A writer of a new part with a name no other writer uses."""
        return PartWriter(self.location, f"p-{uuid.uuid4().hex[:16]}", self.frame_codec)

    def write_part(self, videos: dict[str, VideoData]) -> list[VideoRecord]:
        """Write ``videos`` into one new part and index them: writer and coordinator in one
        (tools, benchmarks and tests; an extraction spreads the two over processes)."""
        writer = self.part_writer()
        try:
            for key, data in videos.items():
                writer.append(encode_video(key, data, self.frame_codec))
        except BaseException:
            writer.abort()
            raise
        records = writer.close()
        self.add_to_index(records)
        return records

    def part_names(self) -> list[str]:
        """Every folder under ``parts/``, finished or not."""
        return self.location.children(layout.PARTS)

    def finished_parts(self) -> dict[str, list[VideoRecord]]:
        """Each finished part's videos (indexed or not): {part: records}."""
        found = {}
        for name, attrs in parts_attrs(self.location, self.part_names()).items():
            if attrs is not None:
                found[name] = [VideoRecord.from_row(v) for v in attrs[layout.PART_VIDEOS_ATTR]]
        return found

    def remove_unfinished_parts(self) -> list[str]:
        """Remove parts a killed writer left half-written (writer lock holders only)."""
        removed = [n for n, a in parts_attrs(self.location, self.part_names()).items() if a is None]
        for name in removed:
            self.location.remove(layout.part_path(name))
        return removed

    # -- reading -------------------------------------------------------------------------

    def read_video(self, key: str) -> VideoData:
        """Read one video's data back whole (CorruptVideo if any of it is damaged)."""
        record = self.record(key)
        meta = next(
            v["meta"]
            for v in (part_attrs(self.location, record.part) or {}).get(layout.PART_VIDEOS_ATTR, [])
            if v["key"] == key and v["frame_start"] == record.frame_start
        )
        frames = read_rows(self.location, record, range(record.num_frames), [])[0]
        tracks = read_rows(self.location, record, [], range(record.num_query_sets))[1]
        positions, visible, confidence = split_tracks(tracks)
        every = self.extraction["query_every"]
        return VideoData(
            meta=VideoMeta(**{**meta, "original_size": tuple(meta["original_size"])}),
            frames=frames,
            query_frames=(np.arange(record.num_query_sets) * every).astype(np.int32),
            positions=positions,
            visible=visible,
            confidence=confidence,
        )

    def read_query_set(self, key: str, query_set: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A query set's frames (horizon, H, W, 3) uint8, positions (horizon, N, 2) float32
        (x, y) and visible (horizon, N) bool; StoreError naming the valid range."""
        record = self.record(key)
        if not 0 <= query_set < record.num_query_sets:
            raise StoreError(
                f"{key}: no query set {query_set}; it has {record.num_query_sets} "
                f"(0 to {record.num_query_sets - 1})"
            )
        start = query_set * self.extraction["query_every"]
        horizon = self.extraction["horizon"]
        return read_clip_rows(self.location, record, start, query_set, horizon, 1)

    def read_clip(
        self, key: str, query_set: int, num_frames: int, step: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One training clip: ``num_frames`` frames ``step`` apart from a query set's start.

        Returns frames (F, H, W, 3) uint8, positions (F, N, 2) float32 (x, y) and visible (F, N)
        bool. Reads F frame chunks and one tracks chunk (``read_clip_rows``).
        """
        record = self.record(key)
        extraction = self.extraction
        span = (num_frames - 1) * step + 1
        start = query_set * extraction["query_every"]
        if (
            not 0 <= query_set < record.num_query_sets
            or span > extraction["horizon"]
            or start + span > record.num_frames
        ):
            raise StoreError(f"{key}: query set {query_set} has no {num_frames}x{step} clip")
        return read_clip_rows(self.location, record, start, query_set, num_frames, step)


@dataclass(frozen=True)
class ClipLocation:
    """Where a video's rows are: what ``read_clip_rows`` needs of its index row."""

    key: str
    part: str
    frame_start: int
    track_start: int
    height: int
    width: int


def read_rows(path: StoreLocation | Path | str, video: VideoRecord | ClipLocation, frames,
              query_sets) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A video's frames (F, H, W, 3) uint8 and query sets' tracks (S, C, horizon, N) float16,
    by row within the video; CorruptVideo naming the video if anything is missing or damaged."""
    try:
        part = part_reader(path, video.part)
        f = [video.frame_start + i for i in frames]
        q = [video.track_start + i for i in query_sets]
        out_frames = part.frames(f, video.height, video.width) if f else None
        out_tracks = part.tracks(q) if q else None
    except DamagedData as exc:
        raise CorruptVideo(video.key, f"{path}: {exc}") from None
    return out_frames, out_tracks


def read_clip_rows(
    path: StoreLocation | Path | str, video: VideoRecord | ClipLocation, start: int,
    query_set: int, num_frames: int, step: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Frames ``start, start + step, ...`` of a video and its query set's tracks.

    Returns frames (F, H, W, 3) uint8, positions (F, N, 2) float32 (x, y) stored-frame pixels
    and visible (F, N) bool; the query set must start at ``start``.
    """
    span = (num_frames - 1) * step + 1
    frames, tracks = read_rows(path, video, range(start, start + span, step), [query_set])
    positions, visible, _ = split_tracks(tracks[0][:, :span:step])
    return frames, positions, visible
