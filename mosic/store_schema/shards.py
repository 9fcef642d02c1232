"""One Zarr v3 shard per array, written as a stream of chunks and read chunk by chunk.

Every array of a part is one shard file (``sharding_indexed``, index at the end): the chunks'
bytes in row order, then an index of (offset, length) little-endian uint64 pairs, one per row,
and the index's CRC32C. Every chunk ends with its own CRC32C (the ``crc32c`` codec), so a read
checks each chunk it decodes and never needs the whole index: a flipped bit, a truncated file
or a missing chunk is an error, never garbage. zarr reads the same files (the tests check it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import google_crc32c
import numpy as np

from mosic.store_schema.errors import DamagedData
from mosic.store_schema.location import StoreLocation, unreachable

EMPTY = 2**64 - 1  # offset and length of a chunk that was never written
_ENTRY = 16


def with_crc(payload: bytes) -> bytes:
    """``payload`` followed by its CRC32C (the ``crc32c`` codec's encoding)."""
    return payload + google_crc32c.value(payload).to_bytes(4, "little")


def checked(chunk: bytes, where: str) -> bytes:
    """A chunk's bytes without their trailing CRC32C; DamagedData if it does not match."""
    body = bytes(chunk[:-4])
    if len(chunk) < 4 or google_crc32c.value(body) != int.from_bytes(chunk[-4:], "little"):
        raise DamagedData(f"{where}: checksum mismatch")
    return body


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class ShardWriter:
    """Writes one shard file: chunks appended in row order, then ``close`` adds the index."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.lengths: list[int] = []
        self.size = 0

    @property
    def rows(self) -> int:
        """Chunks written so far."""
        return len(self.lengths)

    def append(self, chunks: Sequence[bytes]) -> tuple[int, int]:
        """Append chunks (one per row); returns (first row, bytes written).

        On any error (a full disk) the file is cut back to where it was, so the shard holds
        whole rows only, and the error is raised.
        """
        first, size = self.rows, self.size
        try:
            _write_all(self.fd, b"".join(chunks))
        except BaseException:
            os.ftruncate(self.fd, size)
            os.lseek(self.fd, size, os.SEEK_SET)
            raise
        self.lengths.extend(len(c) for c in chunks)
        self.size += sum(len(c) for c in chunks)
        return first, self.size - size

    def rollback(self, rows: int) -> None:
        """Cut the file back to its first ``rows`` chunks."""
        del self.lengths[rows:]
        self.size = sum(self.lengths)
        os.ftruncate(self.fd, self.size)
        os.lseek(self.fd, self.size, os.SEEK_SET)

    def close(self) -> int:
        """Write the index and its CRC32C, flush to disk, close; returns the file's size."""
        lengths = np.array(self.lengths, np.uint64)
        index = np.empty((len(lengths), 2), "<u8")
        index[:, 0] = np.cumsum(lengths) - lengths
        index[:, 1] = lengths
        _write_all(self.fd, with_crc(index.tobytes()))
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        return self.size + len(lengths) * _ENTRY + 4

    def abort(self) -> None:
        """Close the file without finishing it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_chunks(
    location: StoreLocation, name: str, rows: Sequence[int], num_rows: int, size: int
) -> list[bytes]:
    """The checked bytes (CRC32C verified and removed) of chunks ``rows`` of a shard file.

    ``name`` is the file's path in the store (``parts/<part>/<array>/<file>``), ``num_rows``
    the shard's row count and ``size`` its size recorded at write time; reads the file's size
    and one slice of the index (from the lowest to the highest row asked), then one range per
    chunk: two round trips from an object store, whose ranges are fetched concurrently.
    """
    data_end = size - num_rows * _ENTRY - 4
    low, high = min(rows), max(rows)
    if low < 0 or high >= num_rows:
        raise DamagedData(f"{name}: rows {low}..{high} asked, it has {num_rows}")
    index_range = (data_end + low * _ENTRY, (high - low + 1) * _ENTRY)
    try:
        file = location.open_file(name)
    except FileNotFoundError:
        raise DamagedData(f"{name}: file missing") from None
    with file:
        try:
            actual, [raw] = file.sized_read([index_range])  # one round trip from a remote store
        except FileNotFoundError:
            raise DamagedData(f"{name}: file missing") from None
        if actual != size:
            raise DamagedData(f"{name}: {actual} bytes, {size} were written (truncated?)")
        if isinstance(raw, BaseException):
            with unreachable(location.url):
                raise raw
        index = np.frombuffer(raw, "<u8").reshape(-1, 2)
        ranges = []
        for row in rows:
            offset, length = (int(v) for v in index[row - low])
            if offset == EMPTY:
                raise DamagedData(f"{name}: row {row} missing")
            if offset + length > data_end or length < 4:
                raise DamagedData(f"{name}: row {row}: damaged index")
            ranges.append((offset, length))
        bodies = file.read(ranges)
    return [checked(b, f"{name} row {row}") for row, b in zip(rows, bodies, strict=True)]


def verify_shard(location: StoreLocation, name: str, num_rows: int, size: int) -> np.ndarray:
    """Check a whole shard file (size, index CRC32C, rows contiguous); its (rows, 2) index."""
    try:
        data = location.read(name)
    except FileNotFoundError:
        raise DamagedData(f"{name}: file missing") from None
    if len(data) != size:
        raise DamagedData(f"{name}: {len(data)} bytes, {size} were written (truncated?)")
    raw = checked(data[size - num_rows * _ENTRY - 4 :], f"{name} index")
    index = np.frombuffer(raw, "<u8").reshape(-1, 2)
    if (index[:, 0] == EMPTY).any():
        raise DamagedData(f"{name}: row {int(np.argmax(index[:, 0] == EMPTY))} missing")
    return index
