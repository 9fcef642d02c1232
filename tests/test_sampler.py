"""``ClipBatchSampler``: rank partitions, store weights, resuming mid-epoch."""

from __future__ import annotations

import numpy as np
import pytest

from mosic.pipeline.extract import ExtractConfig
from mosic.stages.data import ClipBatchSampler, ClipConfig, ClipDataset
from tests.test_clips import CONFIG, make_store


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> ClipDataset:
    """30 videos in one store and 10 in another."""
    folder = tmp_path_factory.mktemp("sampler")
    big = make_store(folder / "big.zarr", [12] * 30)
    small = make_store(folder / "small.zarr", [12] * 10, seed=1)
    return ClipDataset([big, small], CONFIG)


def test_ranks_partition_the_epoch_without_overlap(dataset):
    for epoch in range(3):
        per_rank = []
        for rank in range(3):
            sampler = ClipBatchSampler(dataset, 4, rank=rank, world_size=3, seed=1)
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler) == 40 // 12
            assert all(len(b) == 4 for b in batches)
            per_rank.append([i for b in batches for i in b])
        taken = np.concatenate(per_rank)
        assert len(set(taken.tolist())) == len(taken) == 3 * 3 * 4
    assert dataset.epoch == 2  # set_epoch reaches the dataset


def test_epochs_reorder_the_items(dataset):
    sampler = ClipBatchSampler(dataset, 5)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(sum(first, [])) == sorted(sum(second, [])) == list(range(40))
    assert first != second


def shares(dataset: ClipDataset, weights: list[float] | None) -> float:
    """Fraction of drawn items from the first store over 50 epochs."""
    sampler = ClipBatchSampler(dataset, 4, store_weights=weights)
    drawn = []
    for epoch in range(50):
        sampler.set_epoch(epoch)
        drawn += [dataset.store_of(i) for batch in sampler for i in batch]
    assert len(drawn) == 50 * 40
    return 1 - float(np.mean(drawn))


def test_store_weights_set_the_store_shares(dataset):
    assert shares(dataset, None) == pytest.approx(0.75)
    assert shares(dataset, [1.0, 1.0]) == pytest.approx(0.5, abs=0.04)
    assert shares(dataset, [1.0, 3.0]) == pytest.approx(0.25, abs=0.04)
    with pytest.raises(ValueError, match="store_weights"):
        ClipBatchSampler(dataset, 4, store_weights=[1.0])


def test_start_batch_resumes_exactly_the_remaining_batches(dataset):
    full = ClipBatchSampler(dataset, 3, rank=1, world_size=2, seed=4)
    full.set_epoch(5)
    resumed = ClipBatchSampler(dataset, 3, rank=1, world_size=2, seed=4, start_batch=2)
    resumed.set_epoch(5)
    assert list(resumed) == list(full)[2:]
    assert list(resumed) == list(full)  # later epochs start from the beginning
    assert len(resumed) == len(full) == 40 // 6


def test_default_clip_fits_the_default_horizon():
    assert ClipConfig().span == ExtractConfig().horizon == 67
