"""YouTube-VOS 2019 as TimeT evaluates it: object ids mapped to meta.json categories, on
fully annotated clips held out of the official train split.

Layout: ``<split>/JPEGImages/<vid>/<frame>.jpg``, palette PNGs of object ids in
``<split>/Annotations/<vid>/<frame>.png`` and ``<split>/meta.json`` naming each video's objects,
their categories and the frames they appear in. A frame without a PNG is unannotated
(``annotated`` False, mask IGNORE).

TimeT (SMSD75/Timetuning, ``data_loader.py``): ``make_loader("ytvos_val")`` reads ``val1/``
(JPEGImages, Annotations, meta.json), a folder its ``split_directory_to_train_val`` makes from
the official ``train`` split: the train videos listed (``os.listdir``), shuffled with Python's
``random``, the first 80 % copied to ``train1/`` and the last 20 % to ``val1/``. ``train``
stores every 5th frame, each with a mask of every object, so ``val1`` clips are fully
annotated. ``YVOSDataset`` maps each object id to its category through meta.json
(``make_categories_dict``: the sorted category names of all meta.json videos -> 1..K, 0 the
background; ``map_instances``), in every evaluation mode. ``split_train`` builds the same kind of
split (the exact membership of TimeT's is not published and depended on the listing order).

The official ``valid`` split annotates each object only in the frame where it first appears
(and its meta.json names no categories): its masks are not a dense ground truth, and opening it
is refused with a message saying what to use.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np

from mosic.stages.evaluation.datasets.base import IGNORE, DatasetError, VideoClip, require
from mosic.stages.evaluation.datasets.common import CHECKED, read_clip

LAYOUT = (
    "YouTubeVOS/<split>/{JPEGImages/<vid>/<frame>.jpg, Annotations/<vid>/<frame>.png, "
    "meta.json with {'videos': {<vid>: {'objects': {<id>: {'category': ..., 'frames': [...]}}}}}}"
)
ORIGIN = "YouTube-VOS 2019: train.zip from youtube-vos.org (the CodaLab challenge)"
BUILD = (
    "build TimeT's evaluation split from the official train split with "
    "'mosic ytvos-split <root>/train --out <root>' and evaluate --val-split val1"
)


class YTVOS:
    """The videos of ``<root>/<split>/JPEGImages``, sorted by id, their masks holding meta.json
    categories (``labels="category"``, TimeT's) or the raw object ids (``labels="object"``).

    ``max_items``: the first N videos; ``max_frames``: the first N frames of each. Clips: frames
    (T, H, W, 3) uint8, masks (T, H, W) int64 (0 background, 1..K categories in sorted name
    order, or object ids; IGNORE on unannotated frames, DAVIS-style 255 and ids meta.json does
    not list), annotated (T,) bool. ``categories``: the names of classes 1..K.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val1",
        *,
        max_items: int | None = None,
        max_frames: int | None = None,
        labels: str = "category",
    ):
        if labels not in ("category", "object"):
            raise ValueError(f"YouTube-VOS labels must be 'category' or 'object', got {labels!r}")
        base = Path(root) / split
        self.name = f"ytvos/{split}"
        self.labels = labels
        self.max_frames = max_frames
        meta_path = require(base / "meta.json", "meta.json", LAYOUT, ORIGIN)
        try:
            videos = json.loads(meta_path.read_text())["videos"]
            self._meta = {vid: dict(v["objects"]) for vid, v in videos.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            raise DatasetError(
                f"{meta_path}: not a YouTube-VOS meta.json ({reason}); expected {LAYOUT} ({ORIGIN})"
            ) from err
        uncategorised = [v for v, objects in self._meta.items() if _no_category(objects)]
        if uncategorised and labels == "category":
            raise DatasetError(
                f"{meta_path}: names no object categories (video {uncategorised[0]}), as the "
                "official valid split's, whose masks annotate each object only in the frame where "
                f"it first appears; {BUILD}"
            )
        self.categories = sorted(
            {str(o["category"]) for objects in self._meta.values() for o in objects.values()}
            if labels == "category"
            else set()
        )
        self._frames = require(base / "JPEGImages", "frame folder", LAYOUT, ORIGIN)
        self._masks = require(base / "Annotations", "mask folder", LAYOUT, ORIGIN)
        # The split's videos are its frame folders (TimeT walks JPEGImages/); meta.json may
        # list more (TimeT's val1 holds a copy of the whole train meta.json).
        folders = sorted(p.name for p in self._frames.iterdir() if p.is_dir())
        unknown = [vid for vid in folders if vid not in self._meta]
        if unknown:
            raise DatasetError(
                f"{self._frames / unknown[0]}: a video meta.json does not list; expected "
                f"{LAYOUT} ({ORIGIN})"
            )
        self.videos = folders[:max_items]
        if not self.videos:
            raise DatasetError(f"{self._frames}: no video folders; expected {LAYOUT} ({ORIGIN})")
        for vid in self.videos[:CHECKED]:
            require(self._masks / vid, "masks of a video", LAYOUT, ORIGIN)
            self._check_dense(vid)

    def _check_dense(self, vid: str) -> None:
        """DatasetError when meta.json lists an object in a frame that has an image but no
        mask: first-appearance-only masks (the official valid split's)."""
        frames = {p.stem for p in (self._frames / vid).glob("*.jpg")}
        masks = {p.stem for p in (self._masks / vid).glob("*.png")}
        for obj, info in self._meta[vid].items():
            unmasked = sorted(set(map(str, info.get("frames", ()))) & frames - masks)
            if unmasked:
                raise DatasetError(
                    f"{self._masks / vid}: no mask for frame {unmasked[0]}, where meta.json lists "
                    f"object {obj}: these masks annotate objects only where they first appear "
                    f"(the official valid split's), not a dense ground truth; {BUILD}"
                )

    def __len__(self) -> int:
        return len(self.videos)

    def objects(self, i: int) -> dict[int, str]:
        """Video ``i``'s object ids (the stored mask values) -> their meta.json categories."""
        return {int(k): str(o.get("category", "")) for k, o in self._meta[self.videos[i]].items()}

    def label_table(self, i: int) -> np.ndarray:
        """(256,) int64: stored mask value of video ``i`` -> its label (0 stays the background,
        255 and ids missing from meta.json -> IGNORE)."""
        table = np.full(256, IGNORE, dtype=np.int64)
        table[0] = 0
        number = {name: j + 1 for j, name in enumerate(self.categories)}
        for obj, category in self.objects(i).items():
            if 0 < obj < 255:
                table[obj] = number[category] if self.labels == "category" else obj
        return table

    def __getitem__(self, i: int) -> VideoClip:
        """Read video ``i``: its first ``max_frames`` frames and the masks that exist."""
        vid = self.videos[i]
        frames = sorted((self._frames / vid).glob("*.jpg"))[: self.max_frames]
        if not frames:
            raise DatasetError(f"{self._frames / vid}: no frames; expected {LAYOUT} ({ORIGIN})")
        annotated = {p.stem for p in (self._masks / vid).glob("*.png")}
        masks = [
            self._masks / vid / f"{f.stem}.png" if f.stem in annotated else None for f in frames
        ]
        clip = read_clip(vid, frames, masks, LAYOUT, ORIGIN)
        table = self.label_table(i)
        labels = np.where(clip.masks == IGNORE, IGNORE, table[clip.masks.clip(0, 255)])
        return VideoClip(clip.name, clip.frames, labels, clip.annotated)


def _no_category(objects: dict) -> bool:
    return any(not isinstance(o, dict) or not o.get("category") for o in objects.values())


def split_train(
    train: str | Path, out: str | Path, train_fraction: float = 0.8, seed: int = 1
) -> tuple[list[str], list[str]]:
    """TimeT's evaluation split of the official YouTube-VOS train split (``train`` holding
    JPEGImages/, Annotations/, meta.json): the video ids sorted, shuffled with
    ``random.Random(seed)``, the first ``int(n * train_fraction)`` -> ``<out>/train1``, the rest
    -> ``<out>/val1`` (TimeT: 0.8); each gets symbolic links to the videos' frame and mask
    folders and a copy of meta.json (as TimeT's loader reads it). Returns (train1 ids, val1
    ids)."""
    train, out = Path(train), Path(out)
    meta = require(train / "meta.json", "meta.json", LAYOUT, ORIGIN)
    frames = require(train / "JPEGImages", "frame folder", LAYOUT, ORIGIN)
    masks = require(train / "Annotations", "mask folder", LAYOUT, ORIGIN)
    if not 0 < train_fraction < 1:
        raise ValueError(f"--train-fraction must be in (0, 1), got {train_fraction}")
    videos = sorted(p.name for p in frames.iterdir() if p.is_dir())
    if not videos:
        raise DatasetError(f"{frames}: no video folders; expected {LAYOUT} ({ORIGIN})")
    random.Random(seed).shuffle(videos)
    cut = int(len(videos) * train_fraction)
    parts = {"train1": videos[:cut], "val1": videos[cut:]}
    for name, ids in parts.items():
        target = out / name
        if target.exists():
            raise ValueError(f"{target}: exists; remove it to build the split again")
        for vid in ids:
            for folder, source in (("JPEGImages", frames), ("Annotations", masks)):
                (target / folder).mkdir(parents=True, exist_ok=True)
                (target / folder / vid).symlink_to((source / vid).resolve(), True)
        shutil.copyfile(meta, target / "meta.json")
    return parts["train1"], parts["val1"]
