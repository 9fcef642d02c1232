"""Generated videos written as evaluation datasets in the real DAVIS 2017 and VOC 2012 layouts.

The layer masks of ``mosic.stages.synthetic`` are the ground truth: object ids for DAVIS
(0 = background, then each layer its own object) and class ids for VOC: what a layer is
(``SHAPE_CLASSES``: background, ellipse, polygon, bar), the same class in every video, as a
semantic label must be.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from mosic.stages.synthetic import SyntheticVideo


def _palette_png(path: Path, labels: np.ndarray) -> None:
    """A palette PNG whose pixel values are the labels (as DAVIS's and VOC's are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    colours = np.zeros((256, 3), np.uint8)
    colours[1:8] = [[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128],
                    [0, 128, 128], [128, 128, 128]]  # fmt: skip
    image.putpalette(colours.tobytes())
    image.save(path)


def write_davis(videos: Sequence[SyntheticVideo], root: str | Path, names: Sequence[str]) -> Path:
    """DAVIS 2017 layout: ``JPEGImages/480p/<name>/00000.jpg``, ``Annotations/480p/...png``,
    ``ImageSets/2017/val.txt`` listing every video. Returns ``root``."""
    root = Path(root)
    for video, name in zip(videos, names, strict=True):
        for t, (frame, mask) in enumerate(zip(video.frames, video.masks, strict=True)):
            path = root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(path, quality=95)
            _palette_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", mask)
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "val.txt").write_text("\n".join(names) + "\n")
    return root


def write_voc(
    videos: Sequence[SyntheticVideo],
    root: str | Path,
    names: Sequence[str],
    every: int,
    train_videos: int,
) -> Path:
    """VOC 2012 layout from every ``every``-th frame: the first ``train_videos`` videos make
    ``trainaug``/``train``, the others ``val``; labels are ``SyntheticVideo.class_masks``.
    Returns ``root / "VOCdevkit"``."""
    base = Path(root) / "VOCdevkit" / "VOC2012"
    splits: dict[str, list[str]] = {"train": [], "val": []}
    for i, (video, name) in enumerate(zip(videos, names, strict=True)):
        labels = video.class_masks()
        for t in range(0, len(video.frames), every):
            image_name = f"{name}_{t:05d}"
            (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
            Image.fromarray(video.frames[t]).save(base / "JPEGImages" / f"{image_name}.jpg")
            for folder in ("SegmentationClass", "SegmentationClassAug"):
                _palette_png(base / folder / f"{image_name}.png", labels[t])
            splits["train" if i < train_videos else "val"].append(image_name)
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    for split, items in (("trainaug", splits["train"]), *splits.items()):
        (sets / f"{split}.txt").write_text("\n".join(items) + "\n")
    return Path(root) / "VOCdevkit"
