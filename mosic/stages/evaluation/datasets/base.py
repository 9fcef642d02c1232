"""What every evaluation dataset provides."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

IGNORE = -1  # the label of pixels that no metric counts


class DatasetError(Exception):
    """A missing or malformed dataset; str() is one line naming the expected layout and the
    dataset's origin."""


@dataclass(frozen=True)
class SegmentationSample:
    """One labelled image.

    image: (H, W, 3) uint8 RGB. mask: (H, W) int64 class ids ``0 .. num_classes - 1``, with
    ``IGNORE`` (-1) where the dataset says "ignore" (VOC's 255, ADE20K's 0, ...).
    """

    name: str
    image: np.ndarray
    mask: np.ndarray


class SegmentationDataset(Protocol):
    """An image segmentation split (VOC, ADE20K, COCO-Stuff things/stuff)."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> SegmentationSample: ...


@dataclass(frozen=True)
class VideoClip:
    """One annotated video clip.

    frames: (T, H, W, 3) uint8 RGB. masks: (T, H, W) int64 object ids (0 = background),
    ``IGNORE`` where unannotated. annotated: (T,) bool, frames that carry a ground-truth mask.
    """

    name: str
    frames: np.ndarray
    masks: np.ndarray
    annotated: np.ndarray


class VideoDataset(Protocol):
    """A video object segmentation split (DAVIS 2017, YouTube-VOS 2019)."""

    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> VideoClip: ...


def require(path: Path, what: str, layout: str, origin: str) -> Path:
    """``path`` if it exists, else a DatasetError naming the expected layout and origin."""
    if not path.exists():
        raise DatasetError(f"{path}: missing {what}; expected {layout} ({origin})")
    return path
