"""What the loaders share: reading images and label PNGs, file lists, the image/mask dataset
every segmentation loader is, and deterministic training subsets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from mosic.stages.evaluation.datasets.base import (
    IGNORE,
    DatasetError,
    SegmentationDataset,
    SegmentationSample,
    VideoClip,
    VideoDataset,
    require,
)

CHECKED = 3  # how many listed items a constructor checks on disk, so a wrong root fails at once

D = TypeVar("D", SegmentationDataset, VideoDataset)


def read_rgb(path: Path, layout: str, origin: str) -> np.ndarray:
    """The image at ``path`` as (H, W, 3) uint8 RGB."""
    with Image.open(require(path, "image", layout, origin)) as im:
        return np.array(im.convert("RGB"))


def read_indices(path: Path, layout: str, origin: str) -> np.ndarray:
    """A label PNG's stored values as (H, W) uint8: palette INDICES for a palette ("P") PNG, not
    its colours; the grey levels of an 8-bit grey ("L") PNG."""
    with Image.open(require(path, "mask", layout, origin)) as im:
        if im.mode not in ("P", "L"):
            raise DatasetError(
                f"{path}: a {im.mode} mask, not a palette or 8-bit grey PNG of label indices; "
                f"expected {layout} ({origin})"
            )
        return np.array(im)


def read_names(path: Path, what: str, layout: str, origin: str) -> list[str]:
    """The item names of a list file, one per line: the first word's file stem, so ``2007_000032``,
    ``000000000139.jpg`` and DeepLab's ``/JPEGImages/2007_000032.jpg /Seg.../...png`` all work."""
    lines = require(path, what, layout, origin).read_text().split("\n")
    names = [Path(line.split()[0]).stem for line in lines if line.strip()]
    if not names:
        raise DatasetError(f"{path}: empty {what}; expected {layout} ({origin})")
    return names


def check_listed(paths: Sequence[Path], what: str, layout: str, origin: str) -> None:
    """DatasetError unless the first ``CHECKED`` of ``paths`` exist."""
    for path in paths[:CHECKED]:
        require(path, what, layout, origin)


class ImageMaskDataset:
    """A segmentation split: sorted (name, image, mask) files and a table from the mask PNG's
    stored values to class ids.

    ``items``: (name, image path, mask path), any order, found at ``source`` (a folder or list
    file, for messages). ``lut``: (256,) int64, raw value ->
    class id in ``0 .. num_classes - 1`` or ``IGNORE``. ``subset_file``: keep only the names it
    lists (one per line, with or without extension; e.g. Hummingbird's ``file_sets`` or NeCo's
    COCO 10 % list). ``max_items``: the first N after sorting (and after ``subset_file``).
    """

    def __init__(
        self,
        name: str,
        class_names: Sequence[str],
        items: list[tuple[str, Path, Path]],
        source: Path,
        lut: np.ndarray,
        layout: str,
        origin: str,
        subset_file: str | Path | None = None,
        max_items: int | None = None,
    ):
        self.name = name
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.layout = layout
        self.origin = origin
        self._lut = lut
        items = sorted(items)
        if subset_file is not None:
            wanted = read_names(Path(subset_file), "subset file", layout, origin)
            by_name = {item[0]: item for item in items}
            missing = [n for n in wanted if n not in by_name]
            if missing:
                raise DatasetError(
                    f"{subset_file}: names {len(missing)} items not in {name}, e.g. "
                    f"{missing[0]!r}; expected {layout} ({origin})"
                )
            items = sorted(by_name[n] for n in set(wanted))
        self._items = items[:max_items]
        if not self._items:
            raise DatasetError(f"{source}: no items for {name}; expected {layout} ({origin})")
        check_listed([image for _, image, _ in self._items], "listed image", layout, origin)
        check_listed([mask for _, _, mask in self._items], "mask of a listed image", layout, origin)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> SegmentationSample:
        """Read item ``i`` from disk: image (H, W, 3) uint8, mask (H, W) int64."""
        name, image_path, mask_path = self._items[i]
        image = read_rgb(image_path, self.layout, self.origin)
        raw = read_indices(mask_path, self.layout, self.origin)
        if raw.shape != image.shape[:2]:
            raise DatasetError(
                f"{mask_path}: mask {raw.shape} and image {image.shape[:2]} differ in size; "
                f"expected {self.layout} ({self.origin})"
            )
        return SegmentationSample(name=name, image=image, mask=self._lut[raw])


def image_mask_pairs(
    root: Path, split_dir: str, layout: str, origin: str
) -> tuple[Path, list[tuple[str, Path, Path]]]:
    """``images/<split_dir>/*.jpg`` paired with ``annotations/<split_dir>/<stem>.png`` (the
    ADE20K and COCO-Stuff layout): the image folder and (name, image, mask) items."""
    image_dir = require(root / "images" / split_dir, "image folder", layout, origin)
    mask_dir = require(root / "annotations" / split_dir, "mask folder", layout, origin)
    items = [(p.stem, p, mask_dir / f"{p.stem}.png") for p in image_dir.glob("*.jpg")]
    return image_dir, items


def label_table(pairs: dict[int, int]) -> np.ndarray:
    """(256,) int64: raw PNG value -> class id, ``IGNORE`` for every value not in ``pairs``."""
    lut = np.full(256, IGNORE, dtype=np.int64)
    for raw, label in pairs.items():
        lut[raw] = label
    return lut


class Subset:
    """The items ``indices`` of ``base``, in that order; every other attribute is the base's."""

    def __init__(self, base: SegmentationDataset | VideoDataset, indices: Sequence[int], name: str):
        self.base = base
        self.indices = [int(i) for i in indices]
        self.name = name

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.base[self.indices[i]]

    def __getattr__(self, attr: str) -> Any:
        if attr == "base":  # not yet set, as while unpickling in a DataLoader worker
            raise AttributeError(attr)
        return getattr(self.base, attr)


def subset(dataset: D, fraction: float, seed: int) -> D:
    """A deterministic random ``fraction`` of ``dataset`` (at least one item), in index order.

    The same (dataset length, fraction, seed) always picks the same items; Hummingbird's
    training fractions are 1/8, 1/64 and 1/128 over several seeds.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = len(dataset)
    k = max(1, round(n * fraction))
    picked = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    return Subset(dataset, picked.tolist(), f"{dataset.name}[{fraction:g}@{seed}]")  # type: ignore[return-value]


def read_clip(
    name: str, frames: Sequence[Path], masks: Sequence[Path | None], layout: str, origin: str
) -> VideoClip:
    """A clip from frame JPEGs and, per frame, a palette PNG of object ids or None (unannotated).

    frames (T, H, W, 3) uint8; masks (T, H, W) int64, the palette INDICES with 255 (DAVIS's
    "void") and every unannotated frame IGNORE; annotated (T,) bool.
    """
    images = np.stack([read_rgb(f, layout, origin) for f in frames])
    labels = np.full(images.shape[:3], IGNORE, dtype=np.int64)
    for t, path in enumerate(masks):
        if path is not None:
            raw = read_indices(path, layout, origin)
            if raw.shape != labels.shape[1:]:
                raise DatasetError(
                    f"{path}: mask {raw.shape} and frame {labels.shape[1:]} differ in size; "
                    f"expected {layout} ({origin})"
                )
            labels[t] = np.where(raw == 255, IGNORE, raw.astype(np.int64))
    annotated = np.array([m is not None for m in masks], dtype=bool)
    return VideoClip(name=name, frames=images, masks=labels, annotated=annotated)
