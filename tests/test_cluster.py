"""Extraction on a real Dask LocalCluster: equivalence, a worker killed mid-run, task keys."""

from __future__ import annotations

import os
import signal

import pytest

from mosic.pipeline.cluster import ClusterConfig, DaskRunner, batch_key, batch_size, dask_client
from mosic.pipeline.extract import ExtractConfig, InProcessRunner, open_store, run_extraction
from mosic.stages.synthetic import make_video, write_video_file
from mosic.stages.video_io import list_sources
from mosic.store_schema import TrackStore
from mosic.store_schema.validate import validate_store
from tests.store_compare import assert_same_content

CONFIG = ExtractConfig(grid=4, horizon=9, size="128x96")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    src = tmp_path_factory.mktemp("videos")
    for i in range(6):
        write_video_file(make_video(i, num_frames=40, height=96, width=128), src / f"v{i}.mp4")
    (src / "broken.mp4").write_bytes(b"\x00" * 100)
    return list_sources(src)


@pytest.fixture(scope="module")
def reference(sources, tmp_path_factory):
    """The same videos extracted in this process, with no cluster."""
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    store, tracker = open_store(str(path), CONFIG)
    run_extraction(sources, store, CONFIG, InProcessRunner(store, CONFIG, tracker))
    return path


def extract_on_cluster(sources, path, workers, on_video=None):
    store, _ = open_store(str(path), CONFIG)
    cluster = ClusterConfig(workers=workers, dashboard=":0")
    with dask_client(cluster) as client:
        runner = DaskRunner(client, str(path), CONFIG)
        summary = run_extraction(
            sources, store, CONFIG, runner, batch_videos=2, on_video=on_video and on_video(client)
        )
    return summary


@pytest.mark.parametrize("workers", [1, 2])
def test_one_and_two_workers_write_the_same_store(sources, reference, tmp_path, workers):
    summary = extract_on_cluster(sources, tmp_path / "s.zarr", workers)
    assert summary.done == 6 and summary.failed == 1
    assert_same_content(tmp_path / "s.zarr", reference)


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(sources, reference, tmp_path):
    killed = []

    def kill_one_worker(client):
        def on_video(outcome):
            if not killed:
                pid = next(iter(client.run(os.getpid).values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        return on_video

    path = tmp_path / "s.zarr"
    summary = extract_on_cluster(sources, path, 2, on_video=kill_one_worker)
    assert killed and summary.done == 6
    store = TrackStore.open(path)
    assert sorted(store.keys()) == sorted(set(store.keys()))
    assert validate_store(store).ok
    assert_same_content(path, reference)


def test_batch_keys_and_sizes():
    items = [(None, "a"), (None, "b")]
    assert batch_key(items) == batch_key(list(items)) != batch_key(items[:1])
    assert batch_size(100, 2) == 8 and batch_size(6, 2) == 1 and batch_size(30, 1) == 8
