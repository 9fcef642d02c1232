"""Real processes killed, racing and refused writes: the store stays valid and completes."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import time
from pathlib import Path

import psutil
import pytest

from mosic.stages.synthetic import make_video, write_video_file
from mosic.store_schema import TrackStore
from mosic.store_schema.validate import validate_store
from tests.processes import finish, mosic, wait_for_line
from tests.store_compare import assert_same_content

VIDEOS = 32
SETTINGS = ["--grid", "4", "--horizon", "9", "--size", "128x96", "--dashboard", ":0"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    src = tmp_path_factory.mktemp("videos")
    for i in range(VIDEOS):
        write_video_file(make_video(i, num_frames=40, height=96, width=128), src / f"v{i}.mp4")
    (src / "broken.mp4").write_bytes(b"\x00" * 100)
    return src


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory):
    """An uninterrupted run (2 workers), and how long its work took once started."""
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    run = mosic("extract-tracks", videos, "--store", path, *SETTINGS, "--workers", 2)
    wait_for_line(run, "dask dashboard:")  # the cluster is up
    started = time.monotonic()
    code, out = finish(run)
    assert code == 0, out
    return path, time.monotonic() - started


def _complete_videos(store: Path) -> int:
    """Videos in finished parts (indexed or not yet), read while the run writes."""
    complete = 0
    for path in store.glob("parts/*/zarr.json"):
        try:
            complete += len(json.loads(path.read_text())["attributes"]["videos"])
        except (FileNotFoundError, ValueError, KeyError):  # a part being written right now
            continue
    return complete


def test_sigkill_ten_times_then_resume_gives_the_uninterrupted_store(videos, reference, tmp_path):
    ref_path, work = reference
    path = tmp_path / "tracks.zarr"
    rng = random.Random(7)
    progress = []  # (videos indexed, leftovers noted) after each kill
    for attempt in range(10):
        run = mosic(
            "extract-tracks",
            videos,
            "--store",
            path,
            *SETTINGS,
            "--workers",
            2,
            "--batch-videos",
            1,
        )
        wait_for_line(run, "dask dashboard:")  # the cluster is up
        before = _complete_videos(path)
        deadline = time.monotonic() + 60  # kill mid-work: once one more video is complete
        while before < VIDEOS and _complete_videos(path) == before and run.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        children = psutil.Process(run.pid).children(recursive=True) if run.poll() is None else []
        run.kill()  # SIGKILL to the coordinator alone: its workers must die with it
        run.wait()
        run.stdout.close()
        gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"attempt {attempt}: workers outlived the killed run"
        store = TrackStore.open(path)
        report = validate_store(store)
        assert report.ok, (attempt, report.problems)
        progress.append((len(store.keys()), len(report.notes)))
    print(f"reference work {work:.1f} s; after each kill (indexed, leftovers): {progress}")
    # The kills must have landed mid-run, not all before or after the work.
    assert sum(0 < indexed < VIDEOS for indexed, _ in progress) >= 3
    code, out = finish(mosic("extract-tracks", videos, "--store", path, *SETTINGS, "--workers", 2))
    assert code == 0, out
    assert validate_store(TrackStore.open(path)).ok
    assert_same_content(path, ref_path)


def test_a_second_run_on_the_same_store_is_refused(videos, tmp_path):
    path = tmp_path / "tracks.zarr"
    first = mosic("extract-tracks", videos, "--store", path, *SETTINGS, "--workers", 1)
    lock = Path(f"{path}.lock")
    deadline = time.monotonic() + 60
    while not (lock.exists() and lock.read_text()):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    first.send_signal(signal.SIGSTOP)  # it holds the lock until the second run has tried
    try:
        code, out = finish(mosic("extract-tracks", videos, "--store", path, *SETTINGS))
    finally:
        first.send_signal(signal.SIGCONT)
    assert code == 2
    assert f"being written by another run (host {os.uname().nodename}, pid {first.pid}" in out
    assert finish(first)[0] == 0
    assert validate_store(TrackStore.open(path)).ok


def test_a_stale_lock_of_a_dead_run_is_taken_over(videos, tmp_path):
    path = tmp_path / "tracks.zarr"
    dead = {"host": os.uname().nodename, "pid": 999999, "since": time.time() - 60}
    Path(f"{path}.lock").write_text(json.dumps(dead))
    code, out = finish(mosic("extract-tracks", videos, "--store", path, *SETTINGS, "--workers", 0))
    assert code == 0, out
    assert f"took over the lock of a run that is gone (host {dead['host']}, pid 999999" in out
    assert len(TrackStore.open(path).keys()) == VIDEOS


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))


def test_a_refused_write_fails_the_video_and_keeps_the_store_valid(tmp_path):
    src = tmp_path / "videos"
    # One part for both (--batch-videos 2), large first: its frames (~120 x 5 kB of JPEG) pass
    # the 400 kB limit midway; the part is cut back to before it and small goes on in it.
    write_video_file(make_video(0, num_frames=12, height=96, width=128), src / "small.mp4")
    write_video_file(make_video(1, num_frames=120, height=96, width=128), src / "large.mp4")
    path = tmp_path / "tracks.zarr"
    run = mosic(
        "extract-tracks",
        src,
        "--store",
        path,
        "--grid",
        "4",
        "--horizon",
        "9",
        "--size",
        "128x96",
        "--workers",
        "0",
        "--batch-videos",
        "2",
        preexec_fn=_limit_file_size,
    )
    code, out = finish(run)
    assert code == 0, out
    store = TrackStore.open(path)
    assert store.keys() == ["small"]
    [failure] = store.failures()
    assert failure.key == "large" and failure.stage == "write"
    assert "File too large" in failure.reason
    assert validate_store(store).ok
    assert [r.key for records in store.finished_parts().values() for r in records] == ["small"]
