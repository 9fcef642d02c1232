"""``ClipDataset``: stage two's training clips, read from one or more track stores.

One item per video; each access reads one random clip of that video (``clip_frames`` frames
``clip_step`` apart from the start of a random query set, with the query set's tracks) and
augments it. The index comes from each store's index arrays and extraction settings alone, so
opening costs the same for ten videos or a million, and it is a snapshot: videos a running
extraction indexes later are not seen. Clips are read with ``read_clip_rows`` (the same values
as ``TrackStore.read_clip``), which keeps nothing open between reads: the dataset pickles as
paths and numbers, and each DataLoader worker opens files itself.

A clip whose data is missing or damaged (``CorruptVideo``: a checksum, a size or a missing
file) is replaced by a clip of the next video, and the item's ``corrupt`` counts it;
``CorruptClips`` turns those into one warning per video, a count, and a stop past a fraction.

After the read and the augmentation, an item keeps ``points_per_clip`` of the clip's tracks,
spread over the crop (``mosic.stages.data.points``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from mosic.stages.data.augment import AugmentConfig, augment_clip
from mosic.stages.data.points import select_points
from mosic.store_schema import (
    ClipLocation,
    CorruptVideo,
    StoreError,
    StoreLocation,
    TrackStore,
    read_clip_rows,
)
from mosic.store_schema.store import read_rows

SUBSTITUTES = 16  # corrupt videos in a row before an item gives up (the store is damaged)


@dataclass(frozen=True)
class ClipConfig:
    """Which clips to read: ``clip_frames`` frames, ``clip_step`` stored frames apart, with
    ``points_per_clip`` tracks each (spread over the crop, padded with invisible points when a
    clip has fewer; 0: every stored track of the query set, as many as the store's grid)."""

    clip_frames: int = 12
    clip_step: int = 6
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    points_per_clip: int = 256

    def __post_init__(self) -> None:
        if self.points_per_clip < 0:
            raise ValueError(f"--points-per-clip {self.points_per_clip}: use 0 or more")

    @property
    def span(self) -> int:
        """Stored frames a clip covers, first to last."""
        return (self.clip_frames - 1) * self.clip_step + 1


def usable_query_sets(
    num_frames: np.ndarray, num_query_sets: np.ndarray, query_every: int, span: int
) -> np.ndarray:
    """Query sets ``q`` (starting at ``q * query_every``) whose clip ends inside the video.

    num_frames, num_query_sets: (V,) int. Returns (V,) int64: the usable sets of each video are
    its first ones, ``0 .. count - 1``. Assumes ``span`` fits the store's horizon.
    """
    fitting = (num_frames.astype(np.int64) - span) // query_every + 1
    return np.clip(np.minimum(fitting, num_query_sets), 0, None)


def channels_first(frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, 3, H, W) uint8, contiguous (cv2.split: ~6x faster than numpy)."""
    out = np.empty((frames.shape[0], 3, *frames.shape[1:3]), frames.dtype)
    for frame, planes in zip(frames, out, strict=True):
        cv2.split(frame, list(planes))
    return out


class ClipDataset(torch.utils.data.Dataset):
    """Training clips from track stores; item ``i`` is one random clip of video ``i``.

    An item is ``i`` (at the epoch of ``set_epoch``) or an ``(epoch, i)`` pair: DataLoader
    workers never see a ``set_epoch`` made after they started, so a loader that runs through
    several epochs takes its batches from ``EpochBatches``, which names the epoch.
    """

    def __init__(self, stores: list[str | Path], config: ClipConfig, seed: int = 0):
        if not stores:
            raise ValueError("no track store given")
        if config.clip_frames < 1 or config.clip_step < 1:
            raise ValueError("clip_frames and clip_step must be at least 1")
        self.paths = [StoreLocation.parse(p) for p in stores]
        self.config = config
        self.seed = seed
        self.epoch = 0
        columns, usable, owners, every, self.parts = [], [], [], [], []
        self.skipped = 0
        for s, path in enumerate(self.paths):
            c, u, e = self._index(path)
            every.append(e)
            keep = u > 0
            self.skipped += int((~keep).sum())
            names, codes = np.unique(c.pop("part")[keep], return_inverse=True)
            c = {name: values[keep] for name, values in c.items()}
            columns.append({**c, "part": codes.astype(np.int32) + len(self.parts)})
            self.parts.extend(str(n) for n in names)
            usable.append(u[keep])
            owners.append(np.full(int(keep.sum()), s, np.int32))
        self.columns = {name: np.concatenate([c[name] for c in columns]) for name in columns[0]}
        self.keys = self.columns.pop("key")
        self.usable = np.concatenate(usable)
        self.item_store = np.concatenate(owners)
        self.query_every = every

    def _index(self, path: StoreLocation) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
        """Index columns of one store's videos ((V,) each), usable query-set counts (V,) and
        its query_every."""
        if not path.exists():
            raise ValueError(f"{path}: no such track store")
        try:
            store = TrackStore.open(path)
        except StoreError as exc:
            raise ValueError(str(exc)) from exc
        extraction = store.extraction
        horizon, every = int(extraction["horizon"]), int(extraction["query_every"])
        config = self.config
        if config.span > horizon:
            raise ValueError(
                f"{path}: a {config.clip_frames}x{config.clip_step} clip spans {config.span} "
                f"frames, longer than the store's horizon of {horizon}"
            )
        wanted = ("key", "part", "frame_start", "track_start", "height", "width", "num_frames",
                  "num_query_sets")  # fmt: skip
        columns = store.index.columns()
        count = len(columns["key"])
        usable = usable_query_sets(
            columns["num_frames"], columns["num_query_sets"], every, config.span
        )
        if not usable.any():
            raise ValueError(
                f"{path}: none of its {count} videos has a usable "
                f"{config.clip_frames}x{config.clip_step} clip"
            )
        return {name: columns[name] for name in wanted}, usable, every

    def __len__(self) -> int:
        return len(self.keys)

    def store_of(self, i: int) -> int:
        """Position in ``stores`` of the store that holds item ``i``."""
        return int(self.item_store[i])

    def set_epoch(self, epoch: int) -> None:
        """Draw other clips and augmentations: randomness is seeded by (seed, epoch, item)."""
        self.epoch = epoch

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """One augmented clip of video ``i``; ``item`` is ``i`` or ``(epoch, i)``.

        With ``rng = np.random.default_rng((seed, epoch, i))``: the query set is
        ``rng.integers(usable[i])``, then ``augment_clip(..., rng)`` on its clip, then
        ``select_points(..., points_per_clip, input_size, rng)`` (unless points_per_clip is 0).
        Returns frames (F, 3, S, S) uint8, positions (F, N, 2) float32 (x, y) output pixels,
        visible (F, N) bool (N = points_per_clip), index () int64 (= i), corrupt () int64
        (corrupt videos skipped for this item: the clip is then the next readable video's) and
        corrupt_video () int64 (the first of them, -1 if none).
        """
        epoch, i = item if isinstance(item, tuple) else (self.epoch, item)
        corrupt = []
        for j in range(i, i + SUBSTITUTES):
            try:
                out = self._item(epoch, j % len(self))
            except CorruptVideo as exc:
                corrupt.append((j % len(self), str(exc)))
                continue
            return {
                **out,
                "index": torch.tensor(i, dtype=torch.int64),
                "corrupt": torch.tensor(len(corrupt), dtype=torch.int64),
                "corrupt_video": torch.tensor(corrupt[0][0] if corrupt else -1, dtype=torch.int64),
            }
        raise StoreError(
            f"{len(corrupt)} videos in a row are corrupt, the store is damaged (mosic store "
            f"validate --deep); the first: {corrupt[0][1]}"
        )

    def _item(self, epoch: int, i: int) -> dict[str, torch.Tensor]:
        """Video ``i``'s augmented clip of ``epoch``: frames, positions, visible."""
        config = self.config
        rng = np.random.default_rng((self.seed, epoch, i))
        frames, positions, visible = augment_clip(
            *self.read_clip(i, int(rng.integers(self.usable[i]))), config.augment, rng
        )
        if config.points_per_clip:
            size = config.augment.input_size
            positions, visible = select_points(
                positions, visible, config.points_per_clip, size, rng
            )
        return {
            "frames": torch.from_numpy(channels_first(frames)),
            "positions": torch.from_numpy(positions),
            "visible": torch.from_numpy(visible),
        }

    def diagnose(self, i: int) -> str:
        """Why video ``i`` is corrupt (reads all of it): one line naming it and the piece."""
        c = self.columns
        try:
            read_rows(self.paths[self.store_of(i)], self._location(i),
                      range(c["num_frames"][i]), range(c["num_query_sets"][i]))  # fmt: skip
        except CorruptVideo as exc:
            return f"{self.paths[self.store_of(i)]}: {exc}"
        return f"{self.paths[self.store_of(i)]}: video {self.keys[i]!r}: corrupt"

    def read_clip(self, i: int, query_set: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Video ``i``'s clip from ``query_set``, as ``TrackStore.read_clip`` returns it.

        Returns frames (F, H, W, 3) uint8, positions (F, N, 2) float32 (x, y) stored-frame
        pixels and visible (F, N) bool. The set starts at ``query_set * query_every``.
        """
        config = self.config
        s = self.store_of(i)
        start = query_set * self.query_every[s]
        return read_clip_rows(
            self.paths[s], self._location(i), start, query_set, config.clip_frames,
            config.clip_step,
        )  # fmt: skip

    def _location(self, i: int) -> ClipLocation:
        c = self.columns
        return ClipLocation(
            str(self.keys[i]), self.parts[c["part"][i]], int(c["frame_start"][i]),
            int(c["track_start"][i]), int(c["height"][i]), int(c["width"][i]),
        )  # fmt: skip


class CorruptClips:
    """Counts the corrupt clips a run skipped: one warning per video, a stop past a fraction.

    ``add`` takes a batch's ``corrupt`` counts and ``corrupt_video`` items; training stops
    (``StoreError``) once the corrupt clips exceed ``max(1, max_fraction * clips read)``.
    """

    def __init__(self, dataset: ClipDataset, max_fraction: float, warn: Callable[[str], None]):
        self.dataset = dataset
        self.max_fraction = max_fraction
        self.warn = warn
        self.seen: set[int] = set()
        self.total = 0
        self.read = 0

    def add(self, corrupt: torch.Tensor, corrupt_video: torch.Tensor) -> None:
        """Count a batch ((B,) int64 each); warn once per new corrupt video; raise past the
        allowed fraction."""
        skipped = int(corrupt.sum())
        self.read += len(corrupt) + skipped
        self.total += skipped
        for i in corrupt_video[corrupt_video >= 0].tolist():
            if i not in self.seen:
                self.seen.add(i)
                self.warn(f"{self.dataset.diagnose(i)}; its clips are skipped")
        if self.total > max(1.0, self.max_fraction * self.read):
            raise StoreError(
                f"{self.total} of {self.read} clips read were corrupt (more than "
                f"{self.max_fraction:.1%}): the store is damaged; mosic store validate --deep "
                "names every corrupt video"
            )
