"""The store's layout, version 2: every path, dtype, chunk, shard and codec lives here.

::

    tracks.zarr/                      root group; attrs: mosic_store_version 2, extraction,
                                      frame_codec {name, quality}
      index/                          one row per complete video; attrs: count, totals
        key, part                     str    (capacity,)
        frame_start, track_start      int64  (capacity,)   first row of the video in its part
        num_frames, height, width,    int32  (capacity,)
        num_query_sets                int32
        bytes                         int64  (capacity,)   the video's bytes in its part
      failures/                       attrs: failures = {key: {source, stage, reason}}
      parts/<part>/                   many videos; its zarr.json (attrs: videos, files) last
        frames   variable-length bytes (F,)  one JPEG (or raw pixels) per frame, chunk (1,),
                                             one shard; codecs vlen-bytes [+ zstd] + crc32c
        tracks   float16 (S, C, horizon, N)  one query set per chunk, one shard; channels
                                             x, y, visible [, confidence]; blosc + crc32c

A video's frames are rows ``frame_start .. frame_start + num_frames - 1`` of its part's
``frames``; its query set ``q`` (seeded at stored frame ``q * query_every``) is row
``track_start + q`` of ``tracks``. Pixel centres are at integer coordinates (see
``mosic.stages.trackers.base``).
"""

from __future__ import annotations

import hashlib
import re

STORE_VERSION = 2
VERSION_ATTR = "mosic_store_version"
EXTRACTION_ATTR = "extraction"
FRAME_CODEC_ATTR = "frame_codec"
COMPLETE_ATTR = "complete"
COUNT_ATTR = "count"
TOTALS_ATTR = "totals"
FAILURES_ATTR = "failures"
PART_VIDEOS_ATTR = "videos"
PART_FILES_ATTR = "files"

INDEX = "index"
FAILURES = "failures"
PARTS = "parts"

INDEX_COLUMNS: dict[str, str] = {
    "key": "str",
    "part": "str",
    "frame_start": "int64",
    "num_frames": "int32",
    "height": "int32",
    "width": "int32",
    "track_start": "int64",
    "num_query_sets": "int32",
    "bytes": "int64",
}
INDEX_CHUNK = 4096

FRAME_CODECS = ("jpeg", "raw")
DEFAULT_FRAME_CODEC = "jpeg"
DEFAULT_JPEG_QUALITY = 85  # measured: see docs/benchmarks.md (bench/store_scale.py)
RAW_ZSTD_LEVEL = 3
TRACK_DTYPE = "float16"
TRACK_CHANNELS = ("x", "y", "visible")
CONFIDENCE_CHANNEL = "confidence"
BLOSC = {"typesize": 2, "cname": "zstd", "clevel": 3, "shuffle": "shuffle", "blocksize": 0}

FRAMES = "frames"
TRACKS = "tracks"
SHARD_FILE = {FRAMES: "c.0", TRACKS: "c.0.0.0.0"}  # the one shard of each array of a part

_INDEX_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]


def frame_codecs(codec: str) -> list[dict]:
    """The inner codec chain of one frame chunk (a variable-length bytes element)."""
    chain = [{"name": "vlen-bytes", "configuration": {}}]
    if codec == "raw":
        chain.append(
            {"name": "zstd", "configuration": {"level": RAW_ZSTD_LEVEL, "checksum": False}}
        )
    return [*chain, {"name": "crc32c"}]


def track_codecs() -> list[dict]:
    """The inner codec chain of one query set's tracks chunk."""
    return [
        {"name": "bytes", "configuration": {"endian": "little"}},
        {"name": "blosc", "configuration": dict(BLOSC)},
        {"name": "crc32c"},
    ]


def array_metadata(
    shape: tuple[int, ...], data_type: str, fill_value: object, codecs: list[dict]
) -> dict:
    """``zarr.json`` of a part's array: one shard holding the whole array, one row per chunk."""
    return {
        "shape": list(shape),
        "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(shape)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}},
        "fill_value": fill_value,
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": [1, *shape[1:]],
                    "codecs": codecs,
                    "index_codecs": _INDEX_CODECS,
                    "index_location": "end",
                },
            }
        ],
        "attributes": {},
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def part_path(name: str) -> str:
    """The group path of one part inside the store."""
    return f"{PARTS}/{name}"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_KEY = 100


def video_key(name: str) -> str:
    """A store key for a video name, safe as a path component on any file system.

    Keeps ``[A-Za-z0-9._-]``; anything else (spaces, unicode, ``/``, ``..``) becomes ``_`` and
    then the key gets ``-`` plus 8 hex digits of the name's SHA-1, so two names never share a key.
    """
    stem = re.sub(r"\.(mp4|avi|mkv|webm|mov)$", "", name, flags=re.IGNORECASE)
    safe = _UNSAFE.sub("_", stem).strip("._") or "video"
    if safe == stem and len(safe) <= _MAX_KEY:
        return safe
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return f"{safe[:_MAX_KEY]}-{digest}"
