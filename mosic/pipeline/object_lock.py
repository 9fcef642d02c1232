"""``ObjectLock``: one extraction run per store at a time, for a store in S3.

An object store has no ``flock`` and no rename; what S3 has is conditional writes. The lock is
an object beside the store (``s3://bucket/tracks.zarr.lock``) holding its owner's record (the
same record as the file lock's: host, pid, start time, a random token and a heartbeat):

- taking the lock is a PUT with ``If-None-Match: *``, which fails if the object exists;
- an existing record whose heartbeat is younger than ``stale_seconds`` refuses the run; an
  older one is its dead owner's and is replaced with ``If-Match: <its ETag>``, so of two runs
  taking over at once exactly one wins;
- the owner rewrites its heartbeat every ``heartbeat_seconds`` with ``If-Match`` on the ETag of
  its last write: if that fails, another run has taken the lock over (this host froze past
  ``stale_seconds``) and the owner stops at once with SIGKILL, which the store survives;
- on exit the owner deletes the object (``If-Match`` on its ETag).

After taking the lock the run reads the record back and refuses if it is not its own: a server
that ignored the conditions (some S3-compatible servers do) is caught there when two runs do
not start at the same moment. AWS S3 has honoured both conditions since 2024, MinIO and moto
do too. The heartbeat's age is read with this host's clock: hosts must agree on the time to
well within ``stale_seconds`` (NTP).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import replace

from mosic.pipeline.lock import (
    HEARTBEAT_SECONDS,
    STALE_SECONDS,
    Owner,
    StoreLockedError,
    WriterLock,
)
from mosic.store_schema import StoreError
from mosic.store_schema.location import StoreLocation, unreachable


class _Conflict(Exception):
    """A conditional write's condition did not hold (HTTP 412, or 409 for a concurrent one)."""


class ObjectLock:
    """Exclusive writer lock of a store in S3 (use as a context manager).

    After entering, ``took_over`` is the record of a dead owner whose lock was taken over (None
    if the lock was free).
    """

    def __init__(
        self,
        location: StoreLocation,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stale_seconds: float = STALE_SECONDS,
    ):
        if not location.url.startswith("s3://"):
            raise StoreLockedError(
                f"{location}: writing is supported for local and s3:// stores only (the writer "
                "lock needs S3's conditional writes)"
            )
        self.url = location.beside(".lock")
        self.fs = location.filesystem()
        self.bucket, self.key, _ = self.fs.split_path(self.url)
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self.took_over: Owner | None = None
        self._owner: Owner | None = None
        self._etag = ""
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- S3 calls ------------------------------------------------------------------------

    def _put(self, owner: Owner, **condition: str) -> str:
        """Write the record under ``condition``; its new ETag (_Conflict if it did not hold)."""
        try:
            out = self.fs.call_s3(
                "put_object", Bucket=self.bucket, Key=self.key, Body=owner.to_bytes(), **condition
            )
        except FileNotFoundError as exc:  # no such bucket
            raise StoreError(f"{self.url}: {exc}") from None
        except Exception as exc:
            if _is_conflict(exc):
                raise _Conflict from None
            with unreachable(self.url):  # one line naming the lock object
                raise
        return out["ETag"]

    def _get(self) -> tuple[Owner | None, str] | None:
        """The record and the ETag of the version read (or an older one); None if there is
        no lock object. The ETag is read first: a write conditional on it fails if the object
        changed after that, so the record read is the one the condition holds for."""
        try:
            with unreachable(self.url):
                etag = self.fs.info(self.url, refresh=True)["ETag"]
                data = self.fs.cat_file(self.url)
        except FileNotFoundError:
            return None
        return Owner.parse(data), etag

    # -- the lock ------------------------------------------------------------------------

    def _refuse(self, owner: Owner | None, what: str = "") -> StoreLockedError:
        who = owner.describe() if owner else "owner unknown"
        return StoreLockedError(
            f"{self.url}: the store is being written by another run ({who}){what}; "
            "wait for it, or stop it"
        )

    def __enter__(self) -> ObjectLock:
        owner = Owner.this_process()
        try:
            self._etag = self._put(owner, IfNoneMatch="*")
        except _Conflict:
            found = self._get()
            if found is None:  # released meanwhile: try once more
                return self._take(owner, IfNoneMatch="*")
            previous, etag = found
            if previous and previous.alive(self.stale_seconds):
                age = f"{self.stale_seconds:.0f} s"
                stale = f"; its lock is taken over once its heartbeat is {age} old"
                raise self._refuse(previous, "" if previous.on_this_host() else stale) from None
            self.took_over = previous
            return self._take(owner, IfMatch=etag)
        return self._started(owner)

    def _take(self, owner: Owner, **condition: str) -> ObjectLock:
        try:
            self._etag = self._put(owner, **condition)
        except _Conflict:
            found = self._get()
            raise self._refuse(found[0] if found else None, ", started at the same time") from None
        return self._started(owner)

    def _started(self, owner: Owner) -> ObjectLock:
        found = self._get()
        if found is None or found[0] is None or found[0].token != owner.token:
            current = found[0] if found else None
            raise self._refuse(current, ", started at the same time as this one")
        self._owner = owner
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="lock-heartbeat", daemon=True)
        self._beat.start()
        return self

    def notes(self) -> list[str]:
        """What a user should know of how this lock was taken, one line each."""
        if not self.took_over:
            return []
        gone = self.took_over.describe()
        return [f"{self.url}: took over the lock of a run that is gone ({gone})"]

    def _heartbeat(self) -> None:
        """Rewrite the heartbeat; stop the process if another run has taken the lock over."""
        while not self._stop.wait(self.heartbeat_seconds):
            beat = replace(self._owner, heartbeat=time.time())
            try:
                self._etag = self._put(beat, IfMatch=self._etag)
                self._owner = beat
            except _Conflict:
                self._lost()
            except Exception:  # the network's hiccup: try again at the next beat
                continue

    def _lost(self) -> None:
        found = self._get()
        who = found[0].describe() if found and found[0] else "the lock object is gone"
        sys.stderr.write(
            f"error: {self.url}: another run has taken this store's lock over ({who}); "
            "stopping now (the store stays valid; run again once that run is over)\n"
        )
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def __exit__(self, *exc: object) -> None:
        if self._owner is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        try:
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=self._etag)
        except Exception:  # taken over, or unreachable: the record goes stale by itself
            pass
        self.fs.invalidate_cache(self.url)
        self._owner = None


def _is_conflict(exc: BaseException) -> bool:
    """Whether an S3 error says a write's condition did not hold (412, or 409 for a
    concurrent conditional write); s3fs re-raises botocore's error with it as the cause."""
    if isinstance(exc, FileExistsError):
        return True
    for error in (exc, exc.__cause__, exc.__context__):
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code", "")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            conflicts = ("PreconditionFailed", "ConditionalRequestConflict")
            return status in (409, 412) or code in conflicts
    return False


def writer_lock(location: StoreLocation) -> WriterLock | ObjectLock:
    """The writer lock of a store: a lock file beside a local store, a lock object beside a
    remote one."""
    if location.remote:
        return ObjectLock(location)
    return WriterLock(location.local())
