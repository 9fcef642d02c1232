"""YouTube-VOS 2019: ``<split>/JPEGImages/<vid>/<frame>.jpg``, palette PNGs of object ids in
``<split>/Annotations/<vid>/<frame>.png`` and ``<split>/meta.json`` naming each video's objects
and their categories. A frame without a PNG is unannotated (``annotated`` False, mask IGNORE):
the official ``valid`` split annotates only the frame where each object first appears; ``train``
stores every 5th frame, each annotated.

TimeT (SMSD75/Timetuning, ``data_loader.make_loader``) trains on ``train1/`` and evaluates on
``val1/`` (each with JPEGImages, Annotations, meta.json): folders of its own that, by their
names and the fully annotated clips its evaluation assumes, hold a split of the official
``train`` videos, since the official ``valid`` masks are first-appearance only. It reads a
clip's frames and annotation PNGs by position, samples frames per clip, and maps object ids to
categories through meta.json (sorted category names -> 1..K, 0 background). Here ``split`` is
any folder under ``root`` (``train``, ``valid``, or such a ``val1``), masks stay object ids and
``objects(i)`` gives the categories for that mapping.
"""

from __future__ import annotations

import json
from pathlib import Path

from mosic.stages.evaluation.datasets.base import DatasetError, VideoClip, require
from mosic.stages.evaluation.datasets.common import CHECKED, read_clip

LAYOUT = (
    "YouTubeVOS/<split>/{JPEGImages/<vid>/<frame>.jpg, Annotations/<vid>/<frame>.png, "
    "meta.json with {'videos': {<vid>: {'objects': {<id>: {'category': ...}}}}}}"
)
ORIGIN = "YouTube-VOS 2019: train.zip and valid.zip from youtube-vos.org (the CodaLab challenge)"


class YTVOS:
    """The videos of ``<root>/<split>/meta.json``, sorted by id.

    ``max_items``: the first N videos; ``max_frames``: the first N frames of each. Clips: frames
    (T, H, W, 3) uint8, masks (T, H, W) int64 object ids (IGNORE on unannotated frames),
    annotated (T,) bool.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "valid",
        *,
        max_items: int | None = None,
        max_frames: int | None = None,
    ):
        base = Path(root) / split
        self.name = f"ytvos/{split}"
        self.max_frames = max_frames
        meta_path = require(base / "meta.json", "meta.json", LAYOUT, ORIGIN)
        try:
            videos = json.loads(meta_path.read_text())["videos"]
            self._objects = {
                vid: {int(k): str(o.get("category", "")) for k, o in v["objects"].items()}
                for vid, v in videos.items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            raise DatasetError(
                f"{meta_path}: not a YouTube-VOS meta.json ({reason}); expected {LAYOUT} ({ORIGIN})"
            ) from err
        self._frames = require(base / "JPEGImages", "frame folder", LAYOUT, ORIGIN)
        self._masks = require(base / "Annotations", "mask folder", LAYOUT, ORIGIN)
        self.videos = sorted(self._objects)[:max_items]
        if not self.videos:
            raise DatasetError(f"{meta_path}: lists no videos; expected {LAYOUT} ({ORIGIN})")
        for vid in self.videos[:CHECKED]:
            require(self._frames / vid, "frames of a meta.json video", LAYOUT, ORIGIN)
            require(self._masks / vid, "masks of a meta.json video", LAYOUT, ORIGIN)

    def __len__(self) -> int:
        return len(self.videos)

    def objects(self, i: int) -> dict[int, str]:
        """Video ``i``'s object ids (the mask values) -> their meta.json categories."""
        return dict(self._objects[self.videos[i]])

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
        return read_clip(vid, frames, masks, LAYOUT, ORIGIN)
