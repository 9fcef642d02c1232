"""The store's writer lock where ``flock`` does not reach across hosts: the record decides.

Another host cannot be had here, so its runs are simulated by what they leave: a lock file
naming another host. The processes, files and ``flock`` are real.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mosic.pipeline.lock import Owner, StoreLockedError, WriterLock, filesystem_type

OTHER_HOST = "node-b.cluster"


def _record(path: Path) -> dict:
    return json.loads(Path(f"{path.resolve()}.lock").read_text())


def _write_record(store: Path, **fields) -> None:
    Path(f"{store}.lock").write_text(json.dumps(fields))


def _other_host(heartbeat_age: float) -> dict:
    now = time.time()
    return {
        "host": OTHER_HOST,
        "pid": 4242,
        "since": now - 3600,
        "heartbeat": now - heartbeat_age,
        "boot_id": "another-boot",
        "token": "theirs",
    }


def test_a_live_run_of_another_host_is_refused(tmp_path):
    store = tmp_path / "tracks.zarr"
    _write_record(store, **_other_host(heartbeat_age=5))
    with pytest.raises(StoreLockedError) as refused:
        WriterLock(store, stale_seconds=120).__enter__()
    message = str(refused.value)
    assert f"host {OTHER_HOST}, pid 4242" in message and "heartbeat 5 s ago" in message
    assert "taken over once its heartbeat is 120 s old" in message
    assert _record(store)["token"] == "theirs"  # left as it was


def test_a_run_of_another_host_gone_silent_is_taken_over(tmp_path):
    store = tmp_path / "tracks.zarr"
    _write_record(store, **_other_host(heartbeat_age=600))
    with WriterLock(store, stale_seconds=120) as lock:
        assert lock.took_over.host == OTHER_HOST
        assert [
            f"took over the lock of a run that is gone (host {OTHER_HOST}" in n
            for n in lock.notes()
        ] == [True]
        mine = _record(store)
        assert mine["host"] == socket.gethostname() and mine["pid"] == os.getpid()
    assert Path(f"{store}.lock").read_text() == ""  # released


def test_a_live_process_of_this_host_is_refused_even_without_flock(tmp_path):
    """What protects a store on a mount where flock does nothing: the pid and its start time."""
    store = tmp_path / "tracks.zarr"
    other = subprocess.Popen(["sleep", "60"])
    try:
        started = psutil.Process(other.pid).create_time()
        mine = Owner.this_process()
        alive = {
            "host": mine.host,
            "boot_id": mine.boot_id,
            "pid": other.pid,
            "since": time.time(),
            "heartbeat": time.time(),
            "started": started,
        }
        _write_record(store, **alive)
        with pytest.raises(StoreLockedError, match=f"pid {other.pid}"):
            WriterLock(store).__enter__()
        # The same pid with another start time is a reused pid: its owner is gone.
        _write_record(store, **{**alive, "started": started - 100})
        with WriterLock(store) as lock:
            assert lock.took_over.pid == other.pid
    finally:
        other.kill()
        other.wait()


def test_a_killed_process_not_yet_reaped_is_gone(tmp_path):
    store = tmp_path / "tracks.zarr"
    killed = subprocess.Popen(["sleep", "60"])
    try:
        process = psutil.Process(killed.pid)
        started = process.create_time()
        killed.send_signal(signal.SIGKILL)  # not waited for: a zombie
        deadline = time.monotonic() + 10
        while process.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        mine = Owner.this_process()
        _write_record(
            store,
            host=mine.host,
            boot_id=mine.boot_id,
            pid=killed.pid,
            since=time.time(),
            heartbeat=time.time(),
            started=started,
        )
        with WriterLock(store) as lock:
            assert lock.took_over.pid == killed.pid
    finally:
        killed.wait()


def test_the_heartbeat_advances_while_held(tmp_path):
    store = tmp_path / "tracks.zarr"
    with WriterLock(store, heartbeat_seconds=0.05):
        first = _record(store)
        time.sleep(0.5)
        later = _record(store)
    assert later["token"] == first["token"] and later["heartbeat"] > first["heartbeat"]
    assert first["boot_id"] and first["started"] == pytest.approx(psutil.Process().create_time())


HOLDER = """
import sys, time
from mosic.pipeline.lock import WriterLock
with WriterLock(sys.argv[1], heartbeat_seconds=0.1):
    print("held", flush=True)
    time.sleep(60)
"""


def test_an_owner_whose_lock_was_taken_over_stops_at_once(tmp_path):
    """A host that froze past the stale time finds another run's record: it must not write on."""
    store = tmp_path / "tracks.zarr"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"
    _write_record(store, **_other_host(heartbeat_age=0))  # that host took the lock over
    _, err = holder.communicate(timeout=30)
    assert holder.returncode == -signal.SIGKILL
    assert f"another run has taken this store's lock over (host {OTHER_HOST}, pid 4242" in err


def test_the_filesystem_type_is_read_from_the_mounts(tmp_path):
    assert filesystem_type(Path("/proc/self")) == "proc"
    assert filesystem_type(tmp_path) not in {"", "proc"}


def test_a_lock_released_while_a_forked_child_lives_can_be_taken_again(tmp_path):
    """A child forked while the lock was held (the extraction's I/O child) shares the flock;
    leaving the lock must release it anyway, so the same process can lock the store again."""
    import multiprocessing

    store = tmp_path / "tracks.zarr"
    context = multiprocessing.get_context("fork")
    with WriterLock(store):
        child = context.Process(target=time.sleep, args=(30,))
        child.start()
    try:
        with WriterLock(store):
            pass
    finally:
        child.kill()
        child.join()
