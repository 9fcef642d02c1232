"""COCO-Stuff 164k, coarsened the way the unsupervised-segmentation field does (IIC, PiCIE,
STEGO, Leopart, NeCo): the 182 fine labels of the ``stuffthingmaps`` PNGs (0..181 = COCO category
id - 1; 255 unlabelled) map to 27 coarse classes, 12 things (0..11) then 15 stuff (12..26).

``coco-things``: the 12 thing classes, 0..11; stuff pixels -> IGNORE. ``coco-stuff``: the 15
stuff classes, relabelled 0..14; thing pixels -> IGNORE. Unlabelled (255) -> IGNORE in both.
These are Leopart's / NeCo's COCO-Things and COCO-Stuff: the 12 thing and the 15 stuff COCO
supercategories (NeCo builds them from the panoptic and stuff jsons; the sets are the same,
only the order of the class ids differs, which no metric sees).

``subset_file``: a text file of image names (``000000000139`` or ``000000000139.jpg``, one a
line) to keep, e.g. the 10 % train subset Leopart and NeCo train their linear heads on, or
STEGO's curated ``Coco164kFull_Stuff_Coarse.txt`` lists.
"""

from __future__ import annotations

from pathlib import Path

from mosic.stages.evaluation.datasets.common import ImageMaskDataset, image_mask_pairs, label_table

# Fine label (stuffthingmaps value) -> coarse class, copied from STEGO's ``Coco.fine_to_coarse``
# (mhamilton723/STEGO, src/data.py), itself PiCIE's table (janghyuncho/PiCIE).
# fmt: off
FINE_TO_COARSE = (
    9, 11, 11, 11, 11, 11, 11, 11, 11, 8,  # 0..9
    8, 8, 8, 8, 8, 7, 7, 7, 7, 7,  # 10..19
    7, 7, 7, 7, 7, 6, 6, 6, 6, 6,  # 20..29
    6, 6, 6, 10, 10, 10, 10, 10, 10, 10,  # 30..39
    10, 10, 10, 5, 5, 5, 5, 5, 5, 5,  # 40..49
    5, 2, 2, 2, 2, 2, 2, 2, 2, 2,  # 50..59
    2, 3, 3, 3, 3, 3, 3, 3, 3, 3,  # 60..69
    3, 0, 0, 0, 0, 0, 0, 1, 1, 1,  # 70..79
    1, 1, 1, 4, 4, 4, 4, 4, 4, 4,  # 80..89
    4, 17, 17, 22, 20, 20, 22, 15, 25, 16,  # 90..99
    13, 12, 12, 17, 17, 23, 15, 15, 17, 15,  # 100..109
    21, 15, 25, 13, 13, 13, 13, 13, 22, 26,  # 110..119
    14, 14, 15, 22, 21, 21, 24, 20, 22, 15,  # 120..129
    17, 16, 15, 22, 24, 21, 17, 25, 16, 21,  # 130..139
    17, 22, 16, 21, 21, 25, 21, 26, 21, 24,  # 140..149
    20, 17, 14, 21, 26, 15, 23, 20, 21, 24,  # 150..159
    15, 24, 22, 25, 15, 20, 17, 17, 22, 14,  # 160..169
    18, 18, 18, 18, 18, 18, 18, 26, 26, 19,  # 170..179
    19, 24,  # 180..181
)

COARSE_NAMES = (  # STEGO / PiCIE order: 12 things, then 15 stuff
    "electronic", "appliance", "food", "furniture", "indoor", "kitchen", "accessory", "animal",
    "outdoor", "person", "sports", "vehicle",
    "ceiling", "floor", "food", "furniture", "rawmaterial", "textile", "wall", "window",
    "building", "ground", "plant", "sky", "solid", "structural", "water",
)
# fmt: on
NUM_THINGS = 12
LAYOUT = (
    "cocostuff/{images,annotations}/{train2017,val2017}/<12-digit id>.{jpg,png}, the "
    "annotations being stuffthingmaps (fine labels 0..181, 255 unlabelled)"
)
ORIGIN = (
    "COCO-Stuff 164k: train2017.zip and val2017.zip from cocodataset.org and "
    "stuffthingmaps_trainval2017.zip from github.com/nightrome/cocostuff"
)
SPLITS = {"train": "train2017", "val": "val2017"}


class COCOCoarse(ImageMaskDataset):
    """COCO-Stuff 164k with ``kind`` ``things`` (12 classes) or ``stuff`` (15 classes);
    ``split`` in ``train`` (118k images) or ``val`` (5k).

    ``root``: the folder holding ``images/`` and ``annotations/``. Samples: image (H, W, 3)
    uint8, mask (H, W) int64 in 0..num_classes - 1 or IGNORE.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        kind: str,
        *,
        max_items: int | None = None,
        subset_file: str | Path | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"COCO split must be one of {sorted(SPLITS)}, got {split!r}")
        if kind == "things":
            pairs = {f: c for f, c in enumerate(FINE_TO_COARSE) if c < NUM_THINGS}
            names = COARSE_NAMES[:NUM_THINGS]
        elif kind == "stuff":
            pairs = {f: c - NUM_THINGS for f, c in enumerate(FINE_TO_COARSE) if c >= NUM_THINGS}
            names = COARSE_NAMES[NUM_THINGS:]
        else:
            raise ValueError(f"COCO kind must be 'things' or 'stuff', got {kind!r}")
        image_dir, items = image_mask_pairs(Path(root), SPLITS[split], LAYOUT, ORIGIN)
        super().__init__(
            f"coco-{kind}/{split}",
            names,
            items,
            image_dir,
            label_table(pairs),
            LAYOUT,
            ORIGIN,
            subset_file=subset_file,
            max_items=max_items,
        )


def COCOThings(root: str | Path, split: str = "val", **options) -> COCOCoarse:  # noqa: N802
    """COCO-Things: the 12 coarse thing classes of COCO-Stuff 164k (see ``COCOCoarse``)."""
    return COCOCoarse(root, split, "things", **options)


def COCOStuff(root: str | Path, split: str = "val", **options) -> COCOCoarse:  # noqa: N802
    """COCO-Stuff-15: the 15 coarse stuff classes of COCO-Stuff 164k (see ``COCOCoarse``)."""
    return COCOCoarse(root, split, "stuff", **options)
