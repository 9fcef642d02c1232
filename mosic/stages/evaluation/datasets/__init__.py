"""Evaluation datasets in their real on-disk layouts, by name.

``open_dataset("voc", "/data/VOCdevkit", "val", max_items=100)``; ``subset(dataset, 1 / 8,
seed)`` for Hummingbird's training fractions. Every constructor checks the layout at once and
raises a one-line ``DatasetError`` naming the path, the expected layout and the dataset's origin.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mosic.stages.evaluation.datasets.ade20k import ADE20K
from mosic.stages.evaluation.datasets.base import (
    IGNORE,
    DatasetError,
    SegmentationDataset,
    SegmentationSample,
    VideoClip,
    VideoDataset,
)
from mosic.stages.evaluation.datasets.coco import COCOStuff, COCOThings
from mosic.stages.evaluation.datasets.common import Subset, subset
from mosic.stages.evaluation.datasets.davis import DAVIS
from mosic.stages.evaluation.datasets.voc import VOC
from mosic.stages.evaluation.datasets.ytvos import YTVOS

DATASETS: dict[str, Callable[..., SegmentationDataset | VideoDataset]] = {
    "voc": VOC,
    "ade20k": ADE20K,
    "coco-things": COCOThings,
    "coco-stuff": COCOStuff,
    "davis": DAVIS,
    "ytvos": YTVOS,
}


def open_dataset(
    name: str, root: str | Path, split: str, **options: Any
) -> SegmentationDataset | VideoDataset:
    """The dataset ``name`` at ``root``; ``options`` go to its constructor (``max_items``,
    ``subset_file``, ``max_frames``, ...)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name](root, split, **options)


__all__ = [
    "ADE20K",
    "COCOStuff",
    "COCOThings",
    "DATASETS",
    "DAVIS",
    "IGNORE",
    "VOC",
    "YTVOS",
    "DatasetError",
    "SegmentationDataset",
    "SegmentationSample",
    "Subset",
    "VideoClip",
    "VideoDataset",
    "open_dataset",
    "subset",
]
