"""Label masks resized exactly as PIL's nearest-neighbour ``resize`` does, which is what the
reference protocols apply to their ground truth (torchvision transforms on PIL images: NeCo's
linear and overclustering, open-hummingbird-eval, TimeT's video loader).

Pillow (``ImagingScaleAffine``) picks source index ``int(s / 2 + i * s)`` for output index i,
with the step s = input / output accumulated in double precision; torch's ``nearest`` picks
``floor(i * s)`` (a shift of up to one source pixel: region borders move) and ``nearest-exact``
``floor((i + 0.5) * s)`` in single precision (a different index for about 1 in 7,000 output
pixels on random crops).
"""

from __future__ import annotations

import numpy as np
import torch


def pil_nearest_indices(length: int, size: int) -> np.ndarray:
    """(size,) int64: the source index PIL's nearest resize takes for each output index when
    resizing ``length`` pixels to ``size``."""
    step = length / size
    positions = np.cumsum(np.r_[step / 2, np.full(size - 1, step)])  # sequential, as Pillow
    return np.minimum(positions.astype(np.int64), length - 1)


def pil_nearest(
    mask: torch.Tensor, size: int, box: tuple[int, int, int, int] | None = None
) -> torch.Tensor:
    """Crop ``box`` = (top, left, height, width) of mask (..., H, W) (None: all of it, which must
    lie inside the mask) and resize it to size x size as PIL's NEAREST does."""
    top, left, height, width = box if box is not None else (0, 0, *mask.shape[-2:])
    rows = torch.from_numpy(top + pil_nearest_indices(height, size))
    cols = torch.from_numpy(left + pil_nearest_indices(width, size))
    return mask.index_select(-2, rows.to(mask.device)).index_select(-1, cols.to(mask.device))
