"""``ClipBatchSampler``: per-epoch batches of a ``ClipDataset``, split over ranks, resumable."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from mosic.stages.data.clips import ClipDataset


class ClipBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of item indices, the same on every rank for a given (seed, epoch).

    Each epoch orders ``len(dataset)`` items: a permutation seeded by ``(seed, epoch)``, or,
    with ``store_weights``, draws with replacement so that store ``s`` gets a share
    proportional to ``store_weights[s]``. The order is cut into global batches of
    ``batch_size * world_size`` (the last incomplete one dropped); rank ``r`` takes every
    ``world_size``-th batch of ``batch_size``, starting at ``r``. ``start_batch`` skips that
    many of this rank's batches in the first epoch iterated (resuming mid-epoch).
    """

    def __init__(
        self,
        dataset: ClipDataset,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        store_weights: list[float] | None = None,
        start_batch: int = 0,
    ):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad batching: batch {batch_size}, rank {rank} of {world_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0
        self.start_batch = start_batch
        self.probabilities = None if store_weights is None else self._probabilities(store_weights)

    def _probabilities(self, weights: list[float]) -> np.ndarray:
        """Per-item draw probabilities (len(dataset),) giving each store its weighted share."""
        stores = self.dataset.item_store
        weights = np.asarray(weights, np.float64)
        if weights.shape != (len(self.dataset.paths),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"store_weights must be {len(self.dataset.paths)} non-negative numbers, "
                f"not all zero; got {weights.tolist()}"
            )
        per_item = weights[stores] / np.bincount(stores, minlength=len(weights))[stores]
        return per_item / per_item.sum()

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order, and the dataset's clips and augmentations for it."""
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset) // (self.batch_size * self.world_size)

    def batches(self) -> np.ndarray:
        """This rank's batches of the current epoch, (len(self), batch_size) int64."""
        rng = np.random.default_rng((self.seed, self.epoch))
        n = len(self.dataset)
        if self.probabilities is None:
            order = rng.permutation(n)
        else:
            order = rng.choice(n, size=n, replace=True, p=self.probabilities)
        used = len(self) * self.world_size * self.batch_size
        return order[:used].reshape(-1, self.batch_size)[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.start_batch = self.start_batch, 0
        return iter(self.batches()[skip:].tolist())


class EpochBatches(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """The batches of several epochs of a ``ClipBatchSampler`` as one stream, every item
    tagged with its epoch: ``(epoch, i)``.

    One DataLoader iterator then runs through all the epochs: its workers start once and keep
    prefetching across the end of an epoch, and ``ClipDataset`` reads the epoch from the item.
    """

    def __init__(self, sampler: ClipBatchSampler, epochs: range):
        self.sampler = sampler
        self.epochs = epochs
        self.length = len(sampler) * len(epochs) - (sampler.start_batch if epochs else 0)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch in self.epochs:
            self.sampler.set_epoch(epoch)
            for batch in self.sampler:
                yield [(epoch, i) for i in batch]
