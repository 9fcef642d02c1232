"""ADE20K SceneParsing (ADEChallengeData2016) as the references hold it: 151 classes, class 0
("other", unlabelled) kept in the class list but its pixels IGNORE, classes 1..150 as stored.

open-hummingbird-eval (``hbird/data/ade20k/ade20k_data.py``: ``get_num_classes() == 151``, ignore
index 0) and NeCo (``linear_finetune.py``, ``eval_overcluster.py``: ``num_classes = 151``,
``ignore_index = 0``) do this, and average the IoU over all 151 classes, class 0 contributing 0:
their mIoU is the 150-class mean x 150 / 151. Results carry both figures (``miou``, the field's;
``miou_present_classes``, the 150-class one on the full val set). Class names: "other", then the
benchmark's objectInfo150 short names, as in mmsegmentation's ``ade_classes()``.
"""

from __future__ import annotations

from pathlib import Path

from mosic.stages.evaluation.datasets.common import ImageMaskDataset, image_mask_pairs, label_table

# fmt: off
CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
# fmt: on
LAYOUT = "ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*.{jpg,png}"
ORIGIN = "ADE20K SceneParsing: ADEChallengeData2016.zip from sceneparsing.csail.mit.edu"
SPLITS = {"train": "training", "val": "validation"}


class ADE20K(ImageMaskDataset):
    """ADE20K, ``split`` in ``train`` (20,210 images) or ``val`` (2,000).

    ``root``: ``ADEChallengeData2016``. Samples: image (H, W, 3) uint8, mask (H, W) int64 in
    1..150 or IGNORE (the stored 0); ``num_classes`` 151.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        *,
        max_items: int | None = None,
        subset_file: str | Path | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"ADE20K split must be one of {sorted(SPLITS)}, got {split!r}")
        image_dir, items = image_mask_pairs(Path(root), SPLITS[split], LAYOUT, ORIGIN)
        super().__init__(
            f"ade20k/{split}",
            ("other", *CLASS_NAMES),
            items,
            image_dir,
            label_table({i: i for i in range(1, len(CLASS_NAMES) + 1)}),
            LAYOUT,
            ORIGIN,
            subset_file=subset_file,
            max_items=max_items,
        )
