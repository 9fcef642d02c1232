"""``WriterLock``: one extraction run per store at a time.

The lock is a file beside the store (``tracks.zarr.lock``) holding the owner's host and pid,
and held with ``flock`` for the run's lifetime. The kernel releases ``flock`` when the owner
dies, however it dies, so a lock left by a killed run is detected as stale and taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path


class StoreLockedError(Exception):
    """Another live run holds the store; str() is one line naming it."""


class WriterLock:
    """Exclusive writer lock of a store (use as a context manager)."""

    def __init__(self, store_path: str | Path):
        self.path = Path(f"{Path(store_path).resolve()}.lock")
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            raise StoreLockedError(
                f"{self.path}: the store is being written by another run ({_describe(owner)}); "
                "wait for it, or stop it"
            ) from None
        os.ftruncate(fd, 0)
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        # The file stays (emptied): unlinking it would let a waiter lock a dead inode.
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _describe(owner: str) -> str:
    try:
        info = json.loads(owner)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"host {info['host']}, pid {info['pid']}, since {since}"
    except (ValueError, KeyError, TypeError):
        return "owner unknown"
