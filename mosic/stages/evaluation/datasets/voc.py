"""Pascal VOC 2012 segmentation with the SBD "trainaug" split: 21 classes (background + 20),
255 (object borders, "difficult") -> IGNORE.

Which masks for which split follows open-hummingbird-eval (``hbird/data/voc_data.py``) and
NeCo / Leopart (``data/VOCdevkit/vocdata.py``): ``trainaug`` and ``train`` read
``SegmentationClassAug`` (grey PNGs of 0..20, 255), ``val`` reads ``SegmentationClass`` (the
official palette PNGs, read as palette INDICES). Where only one of the two folders is there,
``train`` and ``val`` fall back to the other (their masks are the same labels);
``trainaug`` needs ``SegmentationClassAug``, since SBD's images have no ``SegmentationClass``.

Two layouts are accepted at ``root``: the official ``VOCdevkit/VOC2012`` (or that folder itself)
with ``JPEGImages/`` and ``ImageSets/Segmentation/{trainaug,train,val}.txt``, or the flat one
that Hummingbird, Leopart and NeCo ship (``images/``, ``sets/``).
"""

from __future__ import annotations

from pathlib import Path

from mosic.stages.evaluation.datasets.base import DatasetError, require
from mosic.stages.evaluation.datasets.common import ImageMaskDataset, label_table, read_names

CLASS_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
LAYOUT = (
    "VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClassAug/*.png, SegmentationClass/*.png, "
    "ImageSets/Segmentation/{trainaug,train,val}.txt} (or images/, sets/ in place of "
    "JPEGImages/, ImageSets/Segmentation/)"
)
ORIGIN = (
    "Pascal VOC 2012 + SBD trainaug: VOCtrainval_11-May-2012.tar from "
    "host.robots.ox.ac.uk/pascal/VOC/voc2012 and the SegmentationClassAug masks with "
    "trainaug.txt of the DeepLab / SBD augmented set"
)
MASK_DIRS = {  # preferred first
    "trainaug": ("SegmentationClassAug",),
    "train": ("SegmentationClassAug", "SegmentationClass"),
    "val": ("SegmentationClass", "SegmentationClassAug"),
}


def _layout(root: Path) -> tuple[Path, Path, Path]:
    """(VOC2012 folder, image folder, list folder) of either accepted layout."""
    for base in (root / "VOC2012", root):
        if (base / "JPEGImages").is_dir():
            return base, base / "JPEGImages", base / "ImageSets" / "Segmentation"
        if (base / "images").is_dir() and (base / "sets").is_dir():
            return base, base / "images", base / "sets"
    raise DatasetError(f"{root}: missing JPEGImages/ (or images/); expected {LAYOUT} ({ORIGIN})")


class VOC(ImageMaskDataset):
    """Pascal VOC 2012, ``split`` in ``trainaug`` (10,582), ``train`` (1,464), ``val`` (1,449).

    ``root``: ``VOCdevkit``, ``VOCdevkit/VOC2012`` or a flat Hummingbird/Leopart folder.
    Samples: image (H, W, 3) uint8, mask (H, W) int64 in 0..20 or IGNORE.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        *,
        max_items: int | None = None,
        subset_file: str | Path | None = None,
    ):
        if split not in MASK_DIRS:
            raise ValueError(f"VOC split must be one of {sorted(MASK_DIRS)}, got {split!r}")
        base, image_dir, list_dir = _layout(Path(root))
        preferred = [base / d for d in MASK_DIRS[split] if (base / d).is_dir()]
        mask_dir = require(
            (preferred or [base / MASK_DIRS[split][0]])[0], "mask folder", LAYOUT, ORIGIN
        )
        list_file = list_dir / f"{split}.txt"
        names = read_names(list_file, "image list", LAYOUT, ORIGIN)
        items = [(n, image_dir / f"{n}.jpg", mask_dir / f"{n}.png") for n in names]
        super().__init__(
            f"voc/{split}",
            CLASS_NAMES,
            items,
            list_file,
            label_table({i: i for i in range(len(CLASS_NAMES))}),
            LAYOUT,
            ORIGIN,
            subset_file=subset_file,
            max_items=max_items,
        )
