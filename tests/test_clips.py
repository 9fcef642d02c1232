"""``ClipDataset`` on real stores: shapes, equality with the store's own clip reader, workers."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from mosic.stages.data import (
    AugmentConfig,
    ClipBatchSampler,
    ClipConfig,
    ClipDataset,
    EpochBatches,
)
from mosic.stages.data.augment import augment_clip
from mosic.stages.data.points import select_points
from mosic.store_schema import (
    FrameCodec,
    TrackStore,
    VideoData,
    VideoMeta,
    encode_video,
)
from mosic.store_schema.parts import PartReader

EVERY, HORIZON, GRID = 4, 9, 3
CONFIG = ClipConfig(
    clip_frames=4, clip_step=2, augment=AugmentConfig(input_size=32), points_per_clip=4
)


def make_store(path: Path, lengths: list[int], seed: int = 0) -> Path:
    """A store of random videos (24 x 32 px) of the given lengths, indexed.

    A video shorter than the horizon gets one query set whose tracks run past its end.
    """
    extraction = {"grid": GRID, "query_every": EVERY, "horizon": HORIZON}
    store = TrackStore.create(path, extraction, FrameCodec("raw"))
    rng = np.random.default_rng(seed)
    writer = store.part_writer()
    for v, t in enumerate(lengths):
        starts = np.arange(0, max(t - HORIZON + 1, 1), EVERY, dtype=np.int32)
        shape = (len(starts), HORIZON, GRID * GRID)
        data = VideoData(
            meta=VideoMeta(f"in/{v}.mp4", (48, 64), 24.0, t, 1),
            frames=rng.integers(0, 256, (t, 24, 32, 3), dtype=np.uint8),
            query_frames=starts,
            positions=rng.uniform(-2, 33, (*shape, 2)).astype(np.float32),
            visible=rng.random(shape) > 0.2,
        )
        writer.append(encode_video(f"v{v}", data, store.frame_codec))
    store.add_to_index(writer.close())
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("clips") / "s.zarr", [20, 13, 6, 30, 9])


def test_items_have_the_documented_shapes_and_dtypes(store):
    dataset = ClipDataset([store], CONFIG)
    assert len(dataset) == 4 and dataset.skipped == 1  # the 6-frame video has no 7-frame clip
    item = dataset[1]
    assert item["frames"].shape == (4, 3, 32, 32) and item["frames"].dtype == torch.uint8
    assert item["frames"].is_contiguous()
    assert item["positions"].shape == (4, 4, 2)  # points_per_clip of the GRID * GRID stored
    assert item["positions"].dtype == torch.float32
    assert item["visible"].shape == (4, 4) and item["visible"].dtype == torch.bool
    assert item["index"].dtype == torch.int64 and item["index"].shape == () and item["index"] == 1


def test_items_equal_the_stores_clip_reader_then_augment(store):
    dataset = ClipDataset([store], CONFIG, seed=7)
    reader = TrackStore.open(store)
    seen = set()
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            rng = np.random.default_rng((7, epoch, i))
            query_set = int(rng.integers(dataset.usable[i]))
            seen.add((i, query_set))
            clip = reader.read_clip(str(dataset.keys[i]), query_set, 4, 2)
            frames, positions, visible = augment_clip(*clip, CONFIG.augment, rng)
            positions, visible = select_points(positions, visible, 4, 32, rng)
            item = dataset[i]
            np.testing.assert_array_equal(item["frames"].permute(0, 2, 3, 1).numpy(), frames)
            np.testing.assert_array_equal(item["positions"].numpy(), positions)
            np.testing.assert_array_equal(item["visible"].numpy(), visible)
    assert len({q for _, q in seen}) > 1  # several query sets were drawn


def test_our_reader_reads_what_zarr_writes(tmp_path):
    """Shards written by zarr itself with the store's metadata read back through mosic's
    reader: the layout is plain Zarr v3, not a format of its own."""
    path = make_store(tmp_path / "s.zarr", [20, 13])
    (name,) = TrackStore.open(path).part_names()
    folder = path / "parts" / name
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (33, 24, 32, 3), dtype=np.uint8)
    tracks = rng.uniform(0, 30, zarr.open_array(folder / "tracks").shape).astype(np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: variable-length bytes have no v3 spec yet
        zarr.open_array(folder / "frames", mode="r+")[:] = np.array(
            [f.tobytes() for f in frames], dtype=object
        )
        zarr.open_array(folder / "tracks", mode="r+")[:] = tracks
    group = json.loads((folder / "zarr.json").read_text())
    for file in group["attributes"]["files"]:  # the sizes zarr's shards have now
        group["attributes"]["files"][file] = (folder / file).stat().st_size
    (folder / "zarr.json").write_text(json.dumps(group))
    reader = PartReader(path, name)
    np.testing.assert_array_equal(reader.frames([0, 7, 32], 24, 32), frames[[0, 7, 32]])
    np.testing.assert_array_equal(reader.tracks([2, 0]), tracks[[2, 0]])


def batches(dataset: ClipDataset, workers: int, epoch: int) -> list[dict[str, torch.Tensor]]:
    sampler = ClipBatchSampler(dataset, batch_size=2, seed=3)
    sampler.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers)
    return list(loader)


def test_batches_do_not_depend_on_the_number_of_workers(store, tmp_path):
    other = make_store(tmp_path / "t.zarr", [25, 17, 40], seed=1)
    dataset = ClipDataset([store, other], CONFIG, seed=5)
    dataset[0]  # reading in the parent first must not break the forked workers
    single, pooled = batches(dataset, 0, epoch=2), batches(dataset, 2, epoch=2)
    assert len(single) == len(pooled) == 3
    for a, b in zip(single, pooled, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    other_epoch = batches(dataset, 2, epoch=3)
    assert not torch.equal(single[0]["frames"], other_epoch[0]["frames"])


def test_one_loader_through_several_epochs_gives_each_epochs_batches(store):
    dataset = ClipDataset([store], CONFIG, seed=5)
    sampler = ClipBatchSampler(dataset, batch_size=2, seed=3, start_batch=1)
    stream = EpochBatches(sampler, range(1, 4))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=stream, num_workers=2)
    streamed = list(loader)
    fresh = [batch for epoch in (1, 2, 3) for batch in batches(dataset, 0, epoch=epoch)]
    assert len(streamed) == len(stream) == len(fresh) - 1 > 3  # resumed after one batch
    for a, b in zip(streamed, fresh[1:], strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_clear_one_line_errors_name_the_store(store, tmp_path):
    short = make_store(tmp_path / "short.zarr", [5, 6])
    old = make_store(tmp_path / "old.zarr", [20])
    zarr.open_group(old, mode="r+").attrs["mosic_store_version"] = 0
    cases = [
        ([store, tmp_path / "missing.zarr"], CONFIG, "missing.zarr: no such track store"),
        ([store], ClipConfig(clip_frames=5, clip_step=3), "s.zarr: a 5x3 clip spans 13 frames, "),
        ([store, short], CONFIG, "short.zarr: none of its 2 videos has a usable 4x2 clip"),
        ([old], CONFIG, "old.zarr: store schema version 0"),
        ([tmp_path], CONFIG, ": not a mosic store"),
    ]
    for stores, config, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            ClipDataset(stores, config)
        assert "\n" not in str(error.value)
