"""``V1Store``: a store of schema version 1 (a group per video), read strictly.

Version 1 is read only to convert it (``mosic store convert``) or validate it. Every row of
every array must be in its shard: zarr would read a missing shard or chunk as the fill value
(blank frames, hidden points); here it is an error naming the video and the piece.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from numcodecs import Zstd

from mosic.store_schema.errors import CorruptVideo, DamagedData, StoreError
from mosic.store_schema.records import Failure, VideoData, VideoMeta

VERSION = 1
_EMPTY = 2**64 - 1
_ZSTD = Zstd()


def read_rows_strict(array: Path) -> np.ndarray:
    """Every row of a version 1 row-sharded array (one row per chunk, shards along rows).

    DamagedData if a shard file, a row or the index checksum is missing or wrong.
    """
    try:
        meta = json.loads((array / "zarr.json").read_bytes())
        shape = tuple(meta["shape"])
        rows_per_shard = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        dtype = np.dtype(meta["data_type"]).newbyteorder("<")
    except (FileNotFoundError, KeyError, ValueError, TypeError) as exc:
        raise DamagedData(f"{array.name}: metadata unreadable ({exc})") from None
    out = np.empty(shape, dtype)
    for shard, first in enumerate(range(0, shape[0], rows_per_shard)):
        path = array.joinpath("c", str(shard), *["0"] * (len(shape) - 1))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DamagedData(f"{array.name}: shard {shard} (rows {first}-) missing") from None
        size = 16 * rows_per_shard + 4
        raw = data[-size:]
        if len(data) < size or google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise DamagedData(f"{array.name}: shard {shard}: damaged index")
        index = np.frombuffer(raw[:-4], "<u8").reshape(-1, 2)
        for inner in range(min(rows_per_shard, shape[0] - first)):
            offset, length = (int(v) for v in index[inner])
            if offset == _EMPTY:
                raise DamagedData(f"{array.name}: row {first + inner} missing")
            try:
                _ZSTD.decode(data[offset : offset + length], out=out[first + inner])
            except (RuntimeError, ValueError) as exc:
                raise DamagedData(f"{array.name}: row {first + inner}: {exc}") from None
    return out.astype(dtype.newbyteorder("="), copy=False)


class V1Store:
    """A version 1 store opened read-only."""

    def __init__(self, root: zarr.Group, path: Path):
        self.root, self.path = root, path

    @classmethod
    def open(cls, path: str | Path) -> V1Store:
        """Open a version 1 store; StoreError for anything else."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path}: not a mosic store (no zarr.json)")
        root = zarr.open_group(path, mode="r")
        version = root.attrs.get("mosic_store_version")
        if str(version) != str(VERSION):
            raise StoreError(f"{path}: store schema version {version}, not 1: nothing to convert")
        return cls(root, path)

    @property
    def extraction(self) -> dict:
        """The store's extraction settings."""
        return dict(self.root.attrs["extraction"])

    def keys(self) -> list[str]:
        """Indexed videos' keys."""
        count = int(self.root["index"].attrs["count"])
        return [str(k) for k in self.root["index/key"][:count]] if count else []

    def failures(self) -> list[Failure]:
        """The failures table."""
        table = self.root["failures"].attrs["failures"]
        return [Failure(key, **row) for key, row in sorted(table.items())]

    def read_video(self, key: str) -> VideoData:
        """One video, every row checked; CorruptVideo naming the video and the piece."""
        folder = self.path / "videos" / key
        try:
            attrs = json.loads((folder / "zarr.json").read_bytes())["attributes"]
        except (FileNotFoundError, KeyError, ValueError):
            raise CorruptVideo(key, "its group is missing") from None
        if not attrs.get("complete"):
            raise CorruptVideo(key, "its group is not complete")
        try:
            arrays = {
                name: read_rows_strict(folder / name)
                for name in ("frames", "positions", "visible", "confidence")
                if name != "confidence" or os.path.isdir(folder / name)
            }
        except DamagedData as exc:
            raise CorruptVideo(key, str(exc)) from None
        q = arrays["positions"].shape[0]
        confidence = arrays.get("confidence")
        meta = VideoMeta(
            attrs["source"], tuple(attrs["original_size"]), attrs["fps"],
            attrs["decoded_frames"], attrs["frame_stride"],
        )  # fmt: skip
        every = self.extraction["query_every"]
        return VideoData(
            meta=meta,
            frames=arrays["frames"],
            query_frames=(np.arange(q) * every).astype(np.int32),
            positions=arrays["positions"].astype(np.float32),
            visible=arrays["visible"],
            confidence=None if confidence is None else confidence.astype(np.float32),
        )


def write_v1_store(path: str | Path, extraction: dict, videos: dict[str, VideoData]) -> Path:
    """Write a version 1 store of ``videos`` with plain zarr, exactly as mosic 0.1 laid it
    out (for the tests of ``mosic store convert`` and the benchmark's baseline)."""
    path = Path(path)
    root = zarr.open_group(path, mode="w", attributes={"mosic_store_version": VERSION,
                                                       "extraction": extraction})  # fmt: skip
    index = root.create_group("index", attributes={"count": 0})
    columns = {"key": "str", "num_frames": "int32", "height": "int32", "width": "int32",
               "num_query_sets": "int32"}  # fmt: skip
    root.create_group("failures", attributes={"failures": {}})
    root.create_group("videos")
    every_row = {"write_empty_chunks": True}
    zstd = zarr.codecs.ZstdCodec(level=3)
    for key, data in videos.items():
        group = root.create_group(f"videos/{key}")
        t, h, w, _ = data.frames.shape
        group.create_array("frames", shape=data.frames.shape, dtype="uint8", chunks=(1, h, w, 3),
                           shards=(min(t, 64), h, w, 3), compressors=zstd,
                           config=every_row)[:] = data.frames  # fmt: skip
        group.create_array("query_frames", data=data.query_frames.astype(np.int32))
        for name, values, dtype, fill in (
            ("positions", data.positions, "float16", float("nan")),
            ("visible", data.visible, "bool", False),
            ("confidence", data.confidence, "float16", 0.0),
        ):
            if values is not None:
                group.create_array(name, shape=values.shape, dtype=dtype,
                                   chunks=(1, *values.shape[1:]), shards=values.shape,
                                   compressors=zstd, fill_value=fill,
                                   config=every_row)[:] = values  # fmt: skip
        q, horizon, n, _ = data.positions.shape
        meta = {**data.meta.__dict__, "num_frames": t, "size": [h, w], "num_query_sets": q,
                "horizon": horizon, "num_points": n, "complete": True}  # fmt: skip
        group.attrs.update(meta)
    for name, dtype in columns.items():
        values = [getattr(d.record(k), name) if name != "key" else k for k, d in videos.items()]
        array = index.create_array(name, shape=(len(values),), dtype=dtype)
        array[:] = np.array(values, dtype=object if dtype == "str" else dtype)
    index.attrs["count"] = len(videos)
    return path
