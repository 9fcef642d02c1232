"""DAVIS 2017 (semi-supervised trainval, 480p): every frame carries a palette PNG whose INDICES
are object ids (0 background, 1..N objects, 255 void -> IGNORE). Layout as the official
davis2017-evaluation toolkit and TimeT's ``dataset_README.md`` describe it.
"""

from __future__ import annotations

from pathlib import Path

from mosic.stages.evaluation.datasets.base import DatasetError, VideoClip, require
from mosic.stages.evaluation.datasets.common import CHECKED, read_clip, read_names

LAYOUT = (
    "DAVIS/{JPEGImages/480p/<seq>/00000.jpg, Annotations/480p/<seq>/00000.png, "
    "ImageSets/2017/{train,val}.txt}"
)
ORIGIN = "DAVIS 2017: DAVIS-2017-trainval-480p.zip from davischallenge.org"


class DAVIS:
    """DAVIS 2017 sequences of ``ImageSets/2017/<split>.txt`` (``train`` 60, ``val`` 30).

    ``root``: the ``DAVIS`` folder. ``resolution``: ``480p`` or ``Full-Resolution``.
    ``max_items``: the first N sequences of the list; ``max_frames``: the first N frames of each.
    Clips: frames (T, H, W, 3) uint8, masks (T, H, W) int64 object ids, annotated all True.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        *,
        resolution: str = "480p",
        max_items: int | None = None,
        max_frames: int | None = None,
    ):
        root = Path(root)
        self.name = f"davis/{split}"
        self.max_frames = max_frames
        self._frames = require(root / "JPEGImages" / resolution, "frame folder", LAYOUT, ORIGIN)
        self._masks = require(root / "Annotations" / resolution, "mask folder", LAYOUT, ORIGIN)
        names = read_names(root / "ImageSets" / "2017" / f"{split}.txt", "list", LAYOUT, ORIGIN)
        self.sequences = names[:max_items]
        for seq in self.sequences[:CHECKED]:
            require(self._frames / seq, "listed sequence", LAYOUT, ORIGIN)
            require(self._masks / seq, "masks of a listed sequence", LAYOUT, ORIGIN)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> VideoClip:
        """Read sequence ``i``: its first ``max_frames`` frames and their masks."""
        seq = self.sequences[i]
        frames = sorted((self._frames / seq).glob("*.jpg"))[: self.max_frames]
        if not frames:
            raise DatasetError(f"{self._frames / seq}: no frames; expected {LAYOUT} ({ORIGIN})")
        masks = [self._masks / seq / f"{f.stem}.png" for f in frames]
        return read_clip(seq, frames, masks, LAYOUT, ORIGIN)
