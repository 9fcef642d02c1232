"""Parts: many videos' frames and tracks in one group, written whole by one process.

``PartWriter`` streams videos into ``parts/<name>/`` (each array one shard file) and writes the
group's ``zarr.json`` last: before it exists the folder is not a group and nothing reads it.
The coordinator then indexes the part's videos. ``PartReader`` reads rows of a finished part,
checking every chunk's CRC32C and every file's size against the sizes recorded at write time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mosic.store_schema import layout
from mosic.store_schema.chunks import FrameCodec, decode_tracks, encode_tracks
from mosic.store_schema.errors import DamagedData
from mosic.store_schema.location import StoreLocation
from mosic.store_schema.records import VideoData, VideoRecord
from mosic.store_schema.shards import ShardWriter, read_chunks


@dataclass(frozen=True)
class EncodedVideo:
    """One video's chunks, ready to append to a part (see ``encode_video``)."""

    key: str
    meta: dict
    frames: list[bytes]
    tracks: list[bytes]
    shape: tuple[int, int, int]  # (T, H, W)
    channels: int
    horizon: int
    points: int


def encode_video(key: str, data: VideoData, codec: FrameCodec) -> EncodedVideo:
    """Encode a video's frames (one chunk each) and query sets (one chunk each)."""
    t, h, w, _ = data.frames.shape
    q, horizon, n, _ = data.positions.shape
    tracks = encode_tracks(data.positions, data.visible, data.confidence)
    channels = len(layout.TRACK_CHANNELS) + (data.confidence is not None)
    return EncodedVideo(
        key, asdict(data.meta), [codec.encode(f) for f in data.frames], tracks, (t, h, w),
        channels, horizon, n,
    )  # fmt: skip


def _write_json(path: Path, document: dict) -> None:
    """Write a JSON file whole: a temporary file renamed into place."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document))
    os.replace(partial, path)


class PartWriter:
    """Writes one part; only the process that created it writes it."""

    def __init__(self, store: StoreLocation | Path | str, name: str, codec: FrameCodec):
        self.location = StoreLocation.parse(store)
        if self.location.remote:  # built here, uploaded whole by ``close``
            self.dir = Path(tempfile.mkdtemp(prefix=f"mosic-{name}-"))
        else:
            self.dir = self.location.local() / layout.part_path(name)
            shutil.rmtree(self.dir, ignore_errors=True)  # a half-written part of a killed attempt
        self.name, self.codec = name, codec
        self.frames = ShardWriter(self.dir / layout.FRAMES / layout.SHARD_FILE[layout.FRAMES])
        self.tracks = ShardWriter(self.dir / layout.TRACKS / layout.SHARD_FILE[layout.TRACKS])
        self.videos: list[dict] = []
        self.track_shape: tuple[int, int, int] | None = None

    def append(self, video: EncodedVideo) -> VideoRecord:
        """Append one encoded video; on an error (a full disk) the part is left as it was."""
        shape = (video.channels, video.horizon, video.points)
        if self.track_shape not in (None, shape):
            raise ValueError(f"{video.key}: tracks {shape}, the part holds {self.track_shape}")
        frame_start, frame_bytes = self.frames.append(video.frames)
        try:
            track_start, track_bytes = self.tracks.append(video.tracks)
        except BaseException:
            self.frames.rollback(frame_start)
            raise
        self.track_shape = shape
        t, h, w = video.shape
        record = VideoRecord(
            video.key, t, h, w, len(video.tracks), part=self.name, frame_start=frame_start,
            track_start=track_start, bytes=frame_bytes + track_bytes,
        )  # fmt: skip
        self.videos.append({**asdict(record), "meta": video.meta})
        return record

    def close(self) -> list[VideoRecord]:
        """Finish the part (its group's ``zarr.json`` last) and return its videos' rows.

        A part without videos is removed instead. On an error nothing of it stays.
        """
        if not self.videos:
            self.abort()
            return []
        try:
            frames_size = self.frames.close()
            tracks_size = self.tracks.close()
            codecs = layout.frame_codecs(self.codec.name)
            frames_meta = layout.array_metadata(
                (self.frames.rows,), "variable_length_bytes", "", codecs
            )
            tracks_meta = layout.array_metadata(
                (self.tracks.rows, *self.track_shape), layout.TRACK_DTYPE, "NaN",
                layout.track_codecs(),
            )  # fmt: skip
            _write_json(self.dir / layout.FRAMES / "zarr.json", frames_meta)
            _write_json(self.dir / layout.TRACKS / "zarr.json", tracks_meta)
            files = {
                f"{layout.FRAMES}/{layout.SHARD_FILE[layout.FRAMES]}": frames_size,
                f"{layout.TRACKS}/{layout.SHARD_FILE[layout.TRACKS]}": tracks_size,
            }
            attrs = {
                layout.COMPLETE_ATTR: True,
                layout.FRAME_CODEC_ATTR: self.codec.attrs(),
                layout.PART_FILES_ATTR: files,
                layout.PART_VIDEOS_ATTR: self.videos,
            }
            group = {"attributes": attrs, "zarr_format": 3, "node_type": "group"}
            _write_json(self.dir / "zarr.json", group)
            if self.location.remote:
                self.location.upload(self.dir, layout.part_path(self.name))
                shutil.rmtree(self.dir, ignore_errors=True)
        except BaseException:
            self.abort()
            raise
        return [VideoRecord.from_row(v) for v in self.videos]

    def abort(self) -> None:
        """Drop the part: close its files and remove its folder, and for a remote store what
        was uploaded of it (best effort)."""
        self.frames.abort()
        self.tracks.abort()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.location.remote:
            try:
                self.location.remove(layout.part_path(self.name))
            except Exception:  # unreachable store: the next run removes the unfinished part
                pass


def part_attrs(store: StoreLocation | Path | str, name: str) -> dict | None:
    """A finished part's attributes; None if the part is missing or was never finished."""
    location = StoreLocation.parse(store)
    try:
        group = json.loads(location.read(f"{layout.part_path(name)}/zarr.json"))
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    attrs = group.get("attributes", {})
    return attrs if attrs.get(layout.COMPLETE_ATTR) else None


def parts_attrs(store: StoreLocation | Path | str, names: list[str]) -> dict[str, dict | None]:
    """``part_attrs`` of many parts (an object store's read concurrently)."""
    location = StoreLocation.parse(store)
    files = {name: f"{layout.part_path(name)}/zarr.json" for name in names}
    found = location.read_many(list(files.values()))
    out = {}
    for name, file in files.items():
        try:
            attrs = json.loads(found[file]).get("attributes", {}) if found[file] else {}
        except ValueError:
            attrs = {}
        out[name] = attrs if attrs.get(layout.COMPLETE_ATTR) else None
    return out


class PartReader:
    """Reads rows of one finished part (keeps no file open between reads)."""

    def __init__(self, store: StoreLocation | Path | str, name: str):
        self.location = StoreLocation.parse(store)
        self.dir = layout.part_path(name)
        attrs = part_attrs(self.location, name)
        if attrs is None:
            raise DamagedData(f"part {name}: missing or unfinished")
        try:
            frames = json.loads(self.location.read(f"{self.dir}/{layout.FRAMES}/zarr.json"))
            tracks = json.loads(self.location.read(f"{self.dir}/{layout.TRACKS}/zarr.json"))
        except (FileNotFoundError, ValueError) as exc:
            raise DamagedData(f"part {name}: array metadata unreadable ({exc})") from None
        self.name = name
        self.codec = FrameCodec.from_attrs(attrs[layout.FRAME_CODEC_ATTR])
        self.files = attrs[layout.PART_FILES_ATTR]
        self.frame_rows = frames["shape"][0]
        self.track_shape = tuple(tracks["shape"])

    def file(self, array: str) -> tuple[str, int]:
        """An array's shard file (its path in the store) and its size recorded at write time."""
        relative = f"{array}/{layout.SHARD_FILE[array]}"
        return f"{self.dir}/{relative}", self.files[relative]

    def frames(self, rows: Sequence[int], height: int, width: int) -> np.ndarray:
        """Frames ``rows`` of the part, decoded: (len(rows), height, width, 3) uint8."""
        name, size = self.file(layout.FRAMES)
        bodies = read_chunks(self.location, name, rows, self.frame_rows, size)
        out = np.empty((len(rows), height, width, 3), np.uint8)
        for k, (row, body) in enumerate(zip(rows, bodies, strict=True)):
            self.codec.decode(body, height, width, f"{layout.FRAMES} row {row}", out[k])
        return out

    def tracks(self, rows: Sequence[int]) -> np.ndarray:
        """Query sets ``rows`` of the part: (len(rows), C, horizon, N) float16."""
        name, size = self.file(layout.TRACKS)
        bodies = read_chunks(self.location, name, rows, self.track_shape[0], size)
        shape = self.track_shape[1:]
        return np.stack([decode_tracks(b, shape, f"{layout.TRACKS} row {r}")
                         for r, b in zip(rows, bodies, strict=True)])  # fmt: skip


def part_reader(store: StoreLocation | Path | str, name: str) -> PartReader:
    """This process's reader of a part (cached: a finished part never changes)."""
    return _cached_reader(StoreLocation.parse(store), name)


@lru_cache(maxsize=4096)
def _cached_reader(location: StoreLocation, name: str) -> PartReader:
    return PartReader(location, name)
