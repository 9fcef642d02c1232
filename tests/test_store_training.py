"""Training from a damaged store, and from a store another process is extending (real
processes, real files): corrupt clips are skipped with one warning per video and counted,
too many stop the run with one line, and a reader sees the snapshot it opened."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mosic.stages.data import ClipConfig, ClipDataset
from mosic.stages.data.augment import AugmentConfig
from mosic.store_schema import FrameCodec, TrackStore, encode_video
from tests.test_store import make_data
from tests.test_train import make_store

CLIP = ClipConfig(clip_frames=3, clip_step=6, augment=AugmentConfig(input_size=64))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("damaged"))


def train(store: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "mosic", "train", "--store", str(store), "--output", str(out),
        "--backbone", "vit-tiny-test", "--unfreeze-blocks", "1", "--prototypes", "8",
        "--batch-size", "4", "--max-steps", "4", "--clip-frames", "3", "--clip-step", "6",
        "--input-size", "64", "--device", "cpu", "--log-every", "1", *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def damaged_copy(store: Path, tmp_path: Path, parts: int) -> tuple[Path, list[str]]:
    """A copy of ``store`` whose first ``parts`` parts lost their tracks shard; their keys."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    opened = TrackStore.open(copy)
    names = sorted({r.part for r in opened.records()})[:parts]
    for name in names:
        (copy / "parts" / name / "tracks" / "c.0.0.0.0").unlink()
    return copy, [r.key for r in opened.records() if r.part in names]


def test_corrupt_clips_are_skipped_once_each_and_counted(store, tmp_path):
    copy, bad = damaged_copy(store, tmp_path, parts=1)
    result = train(copy, tmp_path / "run", "--workers", "2", "--max-corrupt-fraction", "0.5")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.endswith("clips are skipped")]
    assert sorted(w.split("video '")[1].split("'")[0] for w in warnings) == sorted(bad)
    assert all("/tracks/c.0.0.0.0: file missing" in w for w in warnings)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert records[-1]["step"] == 4 and records[-1]["corrupt_clips"] >= len(bad)
    assert [r["corrupt_clips"] for r in records] == sorted(r["corrupt_clips"] for r in records)


def test_too_many_corrupt_clips_stop_the_run_with_one_line(store, tmp_path):
    copy, _ = damaged_copy(store, tmp_path, parts=2)  # half the videos
    result = train(copy, tmp_path / "run", "--workers", "0")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "clips read were corrupt (more than 1.0%)" in line and "validate --deep" in line


def test_a_store_with_every_video_corrupt_fails_in_a_worker_with_one_line(store, tmp_path):
    copy, _ = damaged_copy(store, tmp_path, parts=4)
    result = train(copy, tmp_path / "run", "--workers", "2")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "DataLoader worker" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "videos in a row are corrupt, the store is damaged" in line and "video '" in line


def test_a_reader_sees_the_snapshot_it_opened(store, tmp_path):
    copy = tmp_path / "growing.zarr"
    shutil.copytree(store, copy)
    dataset = ClipDataset([copy], CLIP, seed=1)
    before = [dataset[i]["frames"].numpy() for i in range(len(dataset))]
    writer = TrackStore.open(copy, mode="r+")  # another process extends the store meanwhile
    data = make_data(5, t=30, h=96, w=128)
    grid = writer.extraction["grid"] ** 2
    tracks = np.zeros((5, 13, grid, 2), np.float32), np.ones((5, 13, grid), bool)
    data = replace(data, query_frames=np.arange(5, dtype=np.int32) * 4)
    data = replace(data, positions=tracks[0], visible=tracks[1], confidence=None)
    part = writer.part_writer()
    part.append(encode_video("late", data, FrameCodec()))
    writer.add_to_index(part.close())
    assert len(dataset) == 8  # the snapshot: what was indexed when it opened
    after = [dataset[i]["frames"].numpy() for i in range(len(dataset))]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(ClipDataset([copy], CLIP)) == 9  # a reader opened later sees the new video
