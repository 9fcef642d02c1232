"""``WriterLock``: one extraction run per store at a time, on one host or many.

The lock is a file beside the store (``tracks.zarr.lock``) holding its owner's record: host and
boot id, pid and the process's start time, a random token, and a heartbeat that the owner
rewrites every ``heartbeat_seconds``. Two things protect the store:

1. ``flock`` on the file for the run's lifetime. The kernel releases it when the owner dies,
   however it dies. On a local disk, and on network file systems whose locks reach the server
   (NFSv4, NFSv3 with its lock daemon, Lustre mounted ``flock``), it alone keeps a second run
   out, from any host.
2. The record, for file systems where ``flock`` is local to each host or missing (NFS mounted
   ``nolock`` or ``local_lock=all``, Lustre ``localflock`` or ``noflock``). A run refuses a
   store whose record names this host and a live process (same pid, same start time), or
   another host with a heartbeat younger than ``stale_seconds``; an older record is its dead
   owner's and is taken over. A run reads its record back after writing it (after a pause on
   a network file system) and refuses if another run's replaced it: two runs started at once.
   An owner whose heartbeat finds another run's record (its host froze past ``stale_seconds``
   and the lock was taken over) stops at once with SIGKILL, which the store survives.
The heartbeat's age is read with this host's clock: hosts must agree on the time to well
within ``stale_seconds`` (NTP).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil

HEARTBEAT_SECONDS = 15.0
STALE_SECONDS = 120.0
NETWORK_SETTLE_SECONDS = 1.0  # between writing the record and reading it back, on network FS
RECORD_BYTES = 1024  # every record is this long, written in one call: never read half-written
NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}  # flock unsupported here
NETWORK_FILESYSTEMS = {
    "nfs", "nfs4", "lustre", "gpfs", "beegfs", "ceph", "cifs", "smb3", "smbfs", "9p", "afs",
    "panfs", "wekafs", "fuse.glusterfs", "fuse.sshfs", "fuse.juicefs", "fuse.s3fs",
}  # fmt: skip


class StoreLockedError(Exception):
    """Another live run holds the store; str() is one line naming it."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Owner:
    """Who holds a lock: the record in the lock file."""

    host: str
    pid: int
    since: float
    heartbeat: float
    boot_id: str = ""  # tells apart hosts of one name, and one host before and after a reboot
    started: float | None = None  # the process's start time: a reused pid is not the owner
    token: str = ""

    @classmethod
    def this_process(cls) -> Owner:
        """A new record for this process."""
        now = time.time()
        started = psutil.Process().create_time()
        return cls(
            socket.gethostname(), os.getpid(), now, now, _boot_id(), started, secrets.token_hex(8)
        )

    @classmethod
    def parse(cls, data: bytes) -> Owner | None:
        """The record in ``data``; None if empty or unreadable (no owner)."""
        try:
            info = json.loads(data.decode())
            return cls(
                str(info["host"]),
                int(info["pid"]),
                float(info["since"]),
                float(info.get("heartbeat", info["since"])),
                str(info.get("boot_id", "")),
                info.get("started"),
                str(info.get("token", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def to_bytes(self) -> bytes:
        """The record, padded to ``RECORD_BYTES``."""
        data = json.dumps(asdict(self)).encode()
        return data + b" " * (RECORD_BYTES - len(data) - 1) + b"\n"

    def on_this_host(self) -> bool:
        """True if the record names this host (and, when it says, this boot of it)."""
        same_boot = not self.boot_id or self.boot_id == _boot_id()
        return self.host == socket.gethostname() and same_boot

    def alive(self, stale_seconds: float) -> bool:
        """On this host: its process still runs. Elsewhere: its heartbeat is recent."""
        if not self.on_this_host():
            return time.time() - self.heartbeat < stale_seconds
        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped
                return False
            started = process.create_time()
        except psutil.NoSuchProcess:
            return False
        except psutil.AccessDenied:  # another user's live process
            return True
        return self.started is None or abs(started - self.started) < 1.0

    def describe(self) -> str:
        """``host H, pid P, since T`` (and the heartbeat's age for another host)."""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        text = f"host {self.host}, pid {self.pid}, since {since}"
        if not self.on_this_host():
            text += f", heartbeat {time.time() - self.heartbeat:.0f} s ago"
        return text


def _read(path: Path) -> Owner | None:
    """The record in the file, read through a new open (NFS revalidates its cache on open)."""
    try:
        with open(path, "rb") as file:
            return Owner.parse(file.read(RECORD_BYTES))
    except FileNotFoundError:
        return None


def filesystem_type(path: Path) -> str:
    """The type of the file system holding ``path`` (``ext4``, ``nfs4``...), from the mounts."""
    best, kind = "", ""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return ""
    target = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])  # \040: " "
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


class WriterLock:
    """Exclusive writer lock of a store (use as a context manager).

    After entering, ``took_over`` is the record of a dead owner whose lock was taken over (None
    if the lock was free) and ``flock`` says whether ``flock`` works on this file system.
    """

    def __init__(
        self,
        store_path: str | Path,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stale_seconds: float = STALE_SECONDS,
    ):
        self.path = Path(f"{Path(store_path).resolve()}.lock")
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self.took_over: Owner | None = None
        self.flock = True
        self._fd: int | None = None
        self._owner: Owner | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _refuse(self, fd: int, owner: Owner | None, what: str = "") -> StoreLockedError:
        os.close(fd)
        who = owner.describe() if owner else "owner unknown"
        return StoreLockedError(
            f"{self.path}: the store is being written by another run ({who}){what}; "
            "wait for it, or stop it"
        )

    def __enter__(self) -> WriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._refuse(fd, _read(self.path)) from None
        except OSError as exc:
            if exc.errno not in NO_FLOCK:
                os.close(fd)
                raise
            self.flock = False  # the record alone protects the store
        previous = _read(self.path)
        if previous and previous.alive(self.stale_seconds):
            raise self._refuse(fd, previous, self._refusal_note(previous))
        self.took_over = previous
        owner = Owner.this_process()
        os.ftruncate(fd, 0)
        self._write(fd, owner)
        if filesystem_type(self.path) in NETWORK_FILESYSTEMS:
            time.sleep(NETWORK_SETTLE_SECONDS)  # a run that started at the same time writes too
        current = _read(self.path)
        if current is None or current.token != owner.token:
            raise self._refuse(fd, current, ", started at the same time as this one")
        self._fd, self._owner = fd, owner
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="lock-heartbeat", daemon=True)
        self._beat.start()
        return self

    def notes(self) -> list[str]:
        """What a user should know of how this lock was taken, one line each."""
        notes = []
        if self.took_over:
            gone = self.took_over.describe()
            notes.append(f"{self.path}: took over the lock of a run that is gone ({gone})")
        if not self.flock:
            notes.append(
                f"{self.path}: flock is not supported on this file system; the lock file's "
                "record alone keeps other runs out (docs/cluster.md#security)"
            )
        return notes

    def _refusal_note(self, owner: Owner) -> str:
        """When a record refuses where ``flock`` did not: what would end the refusal."""
        if owner.on_this_host():
            return ""
        return f"; its lock is taken over once its heartbeat is {self.stale_seconds:.0f} s old"

    @staticmethod
    def _write(fd: int, owner: Owner) -> None:
        os.pwrite(fd, owner.to_bytes(), 0)
        os.fsync(fd)

    def _heartbeat(self) -> None:
        """Rewrite the heartbeat; stop the process if another run has taken the lock over."""
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                current = _read(self.path)
                if current is not None and current.token != self._owner.token:
                    self._lost(current)
                self._owner = replace(self._owner, heartbeat=time.time())
                self._write(self._fd, self._owner)
            except OSError:  # a network file system's hiccup: try again at the next beat
                continue

    def _lost(self, current: Owner) -> None:
        sys.stderr.write(
            f"error: {self.path}: another run has taken this store's lock over "
            f"({current.describe()}); "
            "stopping now (the store stays valid; run again once that run is over)\n"
        )
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def __exit__(self, *exc: object) -> None:
        # The file stays (emptied): unlinking it would let a waiter lock a dead inode.
        if self._fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        current = _read(self.path)
        if current is not None and current.token == self._owner.token:
            os.ftruncate(self._fd, 0)
        if self.flock:  # a child forked meanwhile shares the lock: release it for all
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
