"""The store's layout, version 1: every path, dtype, chunk and shard lives here.

::

    tracks.zarr/                      root group; attrs: mosic_store_version, extraction
      index/                          one row per complete video; attrs: count (rows in use)
        key           str     (capacity,)
        num_frames    int32   (capacity,)
        height        int32   (capacity,)
        width         int32   (capacity,)
        num_query_sets int32  (capacity,)
      failures/                       attrs: failures = {key: {source, stage, reason}}
      videos/<key>/                   attrs: video metadata; "complete": true is written last
        frames        uint8   (T, H, W, 3)      chunk (1, H, W, 3), shard (64, H, W, 3)
        query_frames  int32   (Q,)              stored-frame index where each query set starts
        positions     float16 (Q, horizon, N, 2) (x, y) pixels at storage size; NaN past the end
        visible       bool    (Q, horizon, N)
        confidence    float16 (Q, horizon, N)   only when the tracker has one

``positions[q, h]`` is where the N grid points seeded at frame ``query_frames[q]`` are at stored
frame ``query_frames[q] + h``. Pixel centres are at integer coordinates (see
``mosic.stages.trackers.base``).
"""

from __future__ import annotations

import hashlib
import re

import zarr.codecs

STORE_VERSION = 1
VERSION_ATTR = "mosic_store_version"
EXTRACTION_ATTR = "extraction"
COMPLETE_ATTR = "complete"
COUNT_ATTR = "count"
FAILURES_ATTR = "failures"

INDEX = "index"
FAILURES = "failures"
VIDEOS = "videos"

INDEX_COLUMNS: dict[str, str] = {
    "key": "str",
    "num_frames": "int32",
    "height": "int32",
    "width": "int32",
    "num_query_sets": "int32",
}
INDEX_CHUNK = 4096

FRAMES_PER_SHARD = 64
POSITION_DTYPE = "float16"
CONFIDENCE_DTYPE = "float16"


def compressor() -> zarr.codecs.ZstdCodec:
    """The codec of every array in the store."""
    return zarr.codecs.ZstdCodec(level=3)


def video_path(key: str) -> str:
    """The group path of one video inside the store."""
    return f"{VIDEOS}/{key}"


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
