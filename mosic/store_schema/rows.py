"""``RowArray``: whole rows of the store's row-sharded arrays without zarr's per-chunk cost.

The store's ``frames``, ``positions`` and ``visible`` arrays are chunked one row (first index)
per chunk and sharded along the first axis, each chunk ``bytes`` + ``zstd`` (see
``mosic.store_schema.layout``). zarr reads such a chunk through its asyncio event loop and a
thread pool, which costs ~0.4 ms per chunk: four times the Zstandard decoding of a 256 px
frame. A training clip reads 12 chunks, so this module reads them itself: one read of the
shard's index (checked with its CRC32C), then one ``pread`` and one decode per row, straight
into the output. Writing a video's frames through zarr costs ~3 ms per frame, five times the
Zstandard encoding, so the store writes whole shards here too, in the same format. It accepts
exactly that layout (Zarr v3 sharding, index at the end) and refuses any other with a
ValueError; the tests check it against zarr on real stores, both ways.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np
from numcodecs import Zstd

_EMPTY = 2**64 - 1  # offset and length of a chunk that was never written (fill value)
_INDEX_CODECS = [
    {"name": "bytes", "configuration": {"endian": "little"}},
    {"name": "crc32c"},
]
_ZSTD = Zstd()


@dataclass(frozen=True)
class RowArray:
    """One row-sharded array of a store: ``shape`` (R, ...) in shards of ``rows_per_shard`` rows."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    rows_per_shard: int
    fill_value: float | int | bool
    level: int = 0  # Zstandard level of the chunks (0: the library's default)

    @classmethod
    def open(cls, path: str | Path) -> RowArray:
        """Read the array's ``zarr.json``; ValueError unless it has the store's row layout."""
        path = Path(path)
        meta = json.loads((path / "zarr.json").read_bytes())
        if not _is_row_sharded(meta):
            raise ValueError(f"{path}: not a row-sharded Zarr v3 array of a mosic store")
        fill = meta["fill_value"]
        rows_per_shard = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        level = meta["codecs"][0]["configuration"]["codecs"][1].get("configuration", {})
        return cls(
            path, tuple(meta["shape"]), dtype, rows_per_shard, _fill(fill), level.get("level", 0)
        )

    def _shard_file(self, shard: int) -> Path:
        return self.path.joinpath("c", str(shard), *["0"] * (len(self.shape) - 1))

    def read(self, rows: Sequence[int]) -> np.ndarray:
        """Rows ``rows`` of the array, (len(rows), *shape[1:]) ``dtype`` (native byte order).

        Rows never written hold the fill value, as in zarr.
        """
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        opened: dict[int, tuple[int, np.ndarray | None]] = {}
        try:
            for k, row in enumerate(rows):
                if not 0 <= row < self.shape[0]:
                    raise IndexError(f"{self.path}: row {row} of {self.shape[0]}")
                shard, inner = divmod(int(row), self.rows_per_shard)
                if shard not in opened:
                    opened[shard] = self._open_shard(shard)
                fd, index = opened[shard]
                if index is None or index[inner, 0] == _EMPTY:
                    out[k] = self.fill_value
                    continue
                offset, length = index[inner]
                _ZSTD.decode(os.pread(fd, int(length), int(offset)), out=out[k])
        finally:
            for fd, _ in opened.values():
                if fd >= 0:
                    os.close(fd)
        return out.astype(self.dtype.newbyteorder("="), copy=False)

    def write(self, data: np.ndarray) -> None:
        """Write every row of ``data`` (``shape``), shard after shard, as zarr would.

        A shard file holds its rows' Zstandard frames in row order, then the index of
        (offset, length) pairs, ``rows_per_shard`` of them (rows past the array's end empty),
        and the index's CRC32C. Only the process that owns the array may write it.
        """
        if data.shape != self.shape:
            raise ValueError(f"{self.path}: data of shape {data.shape}, array {self.shape}")
        codec = Zstd(level=self.level)
        rows = np.ascontiguousarray(data, dtype=self.dtype)  # little-endian, as "bytes" says
        for shard, first in enumerate(range(0, self.shape[0], self.rows_per_shard)):
            chunks = [codec.encode(row) for row in rows[first : first + self.rows_per_shard]]
            index = np.full((self.rows_per_shard, 2), _EMPTY, "<u8")
            lengths = np.array([len(c) for c in chunks], np.uint64)
            index[: len(chunks), 0] = np.cumsum(lengths) - lengths
            index[: len(chunks), 1] = lengths
            raw = index.tobytes()
            crc = google_crc32c.value(raw).to_bytes(4, "little")
            target = self._shard_file(shard)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"".join([*chunks, raw, crc]))

    def _open_shard(self, shard: int) -> tuple[int, np.ndarray | None]:
        """A shard's open file and its index, (rows_per_shard, 2) uint64 offsets and lengths.

        (-1, None) when the shard was never written (every row holds the fill value).
        """
        try:
            fd = os.open(self._shard_file(shard), os.O_RDONLY)
        except FileNotFoundError:
            return -1, None
        size = 16 * self.rows_per_shard + 4
        raw = os.pread(fd, size, os.fstat(fd).st_size - size)
        if len(raw) != size or google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            os.close(fd)
            raise ValueError(f"{self._shard_file(shard)}: damaged shard index")
        return fd, np.frombuffer(raw[:-4], "<u8").reshape(-1, 2)


def _fill(value: str | float | int | bool) -> float | int | bool:
    """A Zarr v3 JSON fill value: "NaN", "Infinity" and "-Infinity" name floats."""
    return float(value) if isinstance(value, str) else value


def _is_row_sharded(meta: dict) -> bool:
    """Whether ``zarr.json`` describes one row per chunk, sharded along rows, bytes + zstd."""
    try:
        shape = meta["shape"]
        (codec,) = meta["codecs"]
        config = codec["configuration"]
        inner = config["codecs"]
        return (
            meta["zarr_format"] == 3
            and meta["chunk_key_encoding"]
            == {"name": "default", "configuration": {"separator": "/"}}
            and meta["chunk_grid"]["configuration"]["chunk_shape"][1:] == shape[1:]
            and codec["name"] == "sharding_indexed"
            and config["chunk_shape"] == [1, *shape[1:]]
            and config["index_codecs"] == _INDEX_CODECS
            and config["index_location"] == "end"
            and [c["name"] for c in inner] == ["bytes", "zstd"]
            and inner[0].get("configuration", {}).get("endian", "little") == "little"
            and not inner[1].get("configuration", {}).get("checksum", False)
            and not meta.get("storage_transformers")
        )
    except (KeyError, TypeError, ValueError):
        return False


def read_clip_rows(
    video_dir: Path, start: int, query_set: int, num_frames: int, step: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A clip of one video group: frames ``start, start + step, ...`` and query set's tracks.

    Returns frames (F, H, W, 3) uint8, positions (F, N, 2) float32 (x, y) stored-frame pixels
    and visible (F, N) bool; the query set must start at ``start``.
    """
    span = (num_frames - 1) * step + 1
    frames = RowArray.open(video_dir / "frames").read(range(start, start + span, step))
    positions = RowArray.open(video_dir / "positions").read([query_set])[0]
    visible = RowArray.open(video_dir / "visible").read([query_set])[0]
    return frames, positions[:span:step].astype(np.float32), visible[:span:step]
