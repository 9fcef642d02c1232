"""A store in S3: extraction, inspection, validation and training through a real S3 server
(moto's server mode, started by the test on 127.0.0.1), real processes and real videos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import zarr
from typer.testing import CliRunner

from mosic.cli import app
from mosic.pipeline.lock import Owner, StoreLockedError
from mosic.stages.synthetic import make_video, write_video_file
from mosic.store_schema import StoreError, StoreLocation, TrackStore, video_key

pytest.importorskip("s3fs", reason="the s3 extra is not installed (pip install 'mosic[s3]')")
pytest.importorskip("moto.server", reason="moto[server] (a dev dependency) is not installed")

from mosic.pipeline.object_lock import ObjectLock  # noqa: E402
from tests.s3_server import BUCKET, s3_server  # noqa: E402

SETTINGS = ["--grid", "8", "--query-every", "4", "--horizon", "13", "--size", "128x96"]
ROOT = Path(__file__).resolve().parents[1]


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def s3():
    """The server's environment, set in this process too (the CLI runs here)."""
    with s3_server() as env, pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield env


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    src = tmp_path_factory.mktemp("videos")
    for i in range(3):
        write_video_file(make_video(i, num_frames=30, height=96, width=128), src / f"v{i}.mp4")
    return src


@pytest.fixture(scope="module")
def remote(s3, videos, tmp_path_factory):
    """Three videos extracted into S3 by a Dask worker (and into a local store in this
    process, to compare)."""
    url = f"s3://{BUCKET}/extracted/tracks.zarr"  # by a Dask worker, a part per video
    extract = ["--workers", "1", "--batch-videos", "1", "--no-dashboard"]
    result = run("extract-tracks", videos, "--store", url, *SETTINGS, *extract)
    assert result.exit_code == 0, result.output
    assert "done 3, skipped 0 (already complete), failed 0 of 3" in result.output
    local = tmp_path_factory.mktemp("local") / "tracks.zarr"
    result = run("extract-tracks", videos, "--store", local, *SETTINGS, "--workers", "0")
    assert result.exit_code == 0, result.output
    return url, local


def test_an_s3_store_holds_what_a_local_store_holds(remote, videos):
    url, local = remote
    s3_store, local_store = TrackStore.open(url), TrackStore.open(local)
    assert s3_store.path == url and isinstance(local_store.path, Path)
    assert sorted(s3_store.keys()) == sorted(video_key(f"v{i}.mp4") for i in range(3))
    for key in local_store.keys():
        ours, theirs = s3_store.read_video(key), local_store.read_video(key)
        np.testing.assert_array_equal(ours.frames, theirs.frames)
        np.testing.assert_array_equal(ours.positions, theirs.positions)
        np.testing.assert_array_equal(ours.visible, theirs.visible)
    frames, positions, visible = s3_store.read_clip("v1", 1, 3, 6)
    expected = local_store.read_clip("v1", 1, 3, 6)
    for a, b in zip((frames, positions, visible), expected, strict=True):
        np.testing.assert_array_equal(a, b)

    plain = zarr.open_group(url, mode="r")  # docs/store.md's plain-zarr reading, from S3
    index = plain["index"]
    row = list(index["key"][: index.attrs["count"]]).index("v1")
    part = plain["parts/" + str(index["part"][row])]
    first = int(index["frame_start"][row])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: variable-length bytes have no v3 spec yet
        jpegs = part["frames"][first : first + 30]
    decoded = np.stack([simplejpeg.decode_jpeg(bytes(b)) for b in jpegs])
    np.testing.assert_array_equal(decoded, s3_store.read_video("v1").frames)

    info = json.loads(run("store", "info", url, "--json").output)
    assert info["store"] == url and info["videos"] == 3 and info["frames"] == 90
    assert info["bytes"] == json.loads(run("store", "info", local, "--json").output)["bytes"]
    deep = run("store", "validate", "--deep", url)
    assert deep.exit_code == 0 and f"{url}: valid (3 videos)" in deep.output
    keys = run("store", "keys", url)
    assert keys.exit_code == 0 and keys.output.split()[:3] == ["v0", "30", "frames"]

    again = run("extract-tracks", videos, "--store", url, *SETTINGS, "--workers", "0")
    assert "done 0, skipped 3 (already complete)" in again.output


def test_training_reads_an_s3_store_in_loader_workers(remote, s3, tmp_path):
    url, _ = remote
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "mosic", "train", "--store", url, "--output", str(out),
        "--backbone", "vit-tiny-test", "--unfreeze-blocks", "1", "--prototypes", "8",
        "--batch-size", "2", "--max-steps", "2", "--clip-frames", "3", "--clip-step", "6",
        "--input-size", "64", "--device", "cpu", "--log-every", "1", "--workers", "1",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, **s3}
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [r["step"] for r in records if "loss" in r][-1] == 2
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    assert records[-1].get("corrupt_clips", 0) == 0


def test_a_flipped_bit_in_an_object_is_detected(remote, s3):
    url, _ = remote
    store = TrackStore.open(url)
    record = store.record("v2")
    fs = store.location.filesystem()
    shard = f"{url}/parts/{record.part}/frames/c.0"
    data = bytearray(fs.cat_file(shard))
    copy = f"s3://{BUCKET}/damaged/tracks.zarr"
    fs.copy(url, copy, recursive=True)
    damaged = TrackStore.open(copy)
    # a byte in the middle of v2's first frame (the chunks are stored in row order)
    data[_chunk_offset(damaged, record.part, record.frame_start) + 20] ^= 0x10
    fs.pipe_file(f"{copy}/parts/{record.part}/frames/c.0", bytes(data))

    with pytest.raises(StoreError, match=r"video 'v2'.*frames/c\.0 row \d+: checksum mismatch"):
        damaged.read_video("v2")
    result = run("store", "validate", "--deep", copy)
    assert result.exit_code == 1
    problems = [line for line in result.output.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 1 and problems[0].startswith("problem: v2: ")
    assert "checksum mismatch" in problems[0]
    assert run("store", "validate", url).exit_code == 0  # the original is untouched


def _chunk_offset(store: TrackStore, part: str, row: int) -> int:
    """Where chunk ``row`` of a part's frames shard starts (from the shard's own index)."""
    from mosic.store_schema.parts import PartReader
    from mosic.store_schema.shards import verify_shard

    reader = PartReader(store.location, part)
    name, size = reader.file("frames")
    return int(verify_shard(store.location, name, reader.frame_rows, size)[row, 0])


CRASH = textwrap.dedent(
    """
    import os, sys
    import fsspec
    from mosic.store_schema import FrameCodec, TrackStore, encode_video
    from tests.test_store import make_data

    store = TrackStore.open(sys.argv[1], mode="r+")
    writer = store.part_writer()
    data = make_data(7, t=30, h=96, w=128)
    writer.append(encode_video("crashed", data, FrameCodec()))
    fs = fsspec.filesystem("s3")  # the instance the store uses (fsspec caches it)
    put = fs.put_file

    def dying_put(local, remote, *args, **kwargs):
        if remote.endswith(f"parts/{writer.name}/zarr.json"):
            print(writer.name, flush=True)
            os._exit(9)  # killed before the part's zarr.json was uploaded
        return put(local, remote, *args, **kwargs)

    fs.put_file = dying_put
    writer.close()
    print("not killed")
    """
)


def test_a_part_whose_upload_was_cut_is_invisible_and_removed_by_the_next_run(s3, videos, tmp_path):
    url = f"s3://{BUCKET}/crash/tracks.zarr"
    assert run("extract-tracks", videos, "--store", url, *SETTINGS, "--workers", "0").exit_code == 0
    before = TrackStore.open(url)
    crash = subprocess.run(
        [sys.executable, "-c", CRASH, url], capture_output=True, text=True, timeout=120,
        cwd=ROOT, env={**os.environ, **s3, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert crash.returncode == 9, crash.stderr
    part = crash.stdout.split()[0]
    location = StoreLocation.parse(url)
    assert location.exists(f"parts/{part}/frames/c.0")  # uploaded, but its zarr.json is not
    after = TrackStore.open(url)
    assert after.keys() == before.keys() and after.index.totals == before.index.totals
    assert part not in after.finished_parts()
    result = run("store", "validate", url)
    assert result.exit_code == 0
    assert f"note: parts/{part}: half-written" in result.output

    rerun = run("extract-tracks", videos, "--store", url, *SETTINGS, "--workers", "0")
    assert rerun.exit_code == 0 and "skipped 3" in rerun.output
    assert part not in location.children("parts")
    assert "half-written" not in run("store", "validate", url).output


def test_the_lock_object_keeps_a_second_writer_out_and_a_dead_ones_is_taken_over(s3):
    location = StoreLocation.parse(f"s3://{BUCKET}/locked/tracks.zarr")
    fs = location.filesystem()
    with ObjectLock(location) as lock:
        assert lock.notes() == []
        held = Owner.parse(fs.cat_file(location.beside(".lock")))
        assert held.pid == os.getpid()
        with pytest.raises(StoreLockedError, match=r"tracks\.zarr\.lock: the store is being"):
            ObjectLock(location).__enter__()
    assert not fs.exists(location.beside(".lock"))  # released

    gone = replace(Owner.this_process(), host="elsewhere", boot_id="", heartbeat=time.time() - 600)
    fs.pipe_file(location.beside(".lock"), gone.to_bytes())
    with ObjectLock(location, stale_seconds=120) as lock:
        assert lock.took_over == gone
        assert "took over the lock of a run that is gone (host elsewhere" in lock.notes()[0]
    alive = replace(gone, heartbeat=time.time())
    fs.pipe_file(location.beside(".lock"), alive.to_bytes())
    with pytest.raises(StoreLockedError, match="heartbeat is 120 s old"):
        ObjectLock(location, stale_seconds=120).__enter__()
    fs.rm(location.beside(".lock"))


def test_store_locations_are_parsed_once():
    assert StoreLocation.parse("runs/tracks.zarr").path == Path("runs/tracks.zarr")
    assert StoreLocation.parse("file:///data/t.zarr").path == Path("/data/t.zarr")
    remote = StoreLocation.parse("s3://bucket/datasets/k700.zarr/")
    assert remote.remote and remote.path == "s3://bucket/datasets/k700.zarr"
    assert remote.beside(".lock") == "s3://bucket/datasets/k700.zarr.lock"
    with pytest.raises(StoreError, match="needs a bucket and a name"):
        StoreLocation.parse("s3://bucket")


def test_an_unreachable_server_is_one_line(s3):
    env = {**os.environ, **s3, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mosic", "store", "info", f"s3://{BUCKET}/extracted/tracks.zarr"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: s3://{BUCKET}/extracted/tracks.zarr: ")
    assert "127.0.0.1:9" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_missing_bucket_is_one_line(s3, videos):
    url = "s3://no-such-bucket/tracks.zarr"
    result = run("extract-tracks", videos, "--store", url, *SETTINGS, "--workers", "0")
    assert result.exit_code == 2
    assert result.output == f"error: {url}.lock: The specified bucket does not exist\n"
    result = run("store", "validate", url)
    assert (
        result.exit_code == 1
        and result.output == f"error: {url}: not a mosic store (no zarr.json)\n"
    )


HOLDER = textwrap.dedent(
    """
    import sys, time
    from mosic.pipeline.object_lock import ObjectLock
    from mosic.store_schema import StoreLocation

    with ObjectLock(StoreLocation.parse(sys.argv[1]), heartbeat_seconds=0.2):
        print("held", flush=True)
        time.sleep(60)
    """
)


def test_an_owner_whose_lock_was_taken_over_stops_at_its_next_heartbeat(s3):
    location = StoreLocation.parse(f"s3://{BUCKET}/taken/tracks.zarr")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, location.url], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, **s3},
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        other = replace(Owner.this_process(), host="elsewhere", boot_id="")
        location.filesystem().pipe_file(location.beside(".lock"), other.to_bytes())
        assert holder.wait(timeout=60) == -9  # SIGKILL: stopped at once
    finally:
        holder.kill()
        holder.wait()
    assert "another run has taken this store's lock over (host elsewhere" in holder.stderr.read()
    location.filesystem().rm(location.beside(".lock"))
