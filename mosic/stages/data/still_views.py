"""Image-only training clips: one still frame seen through independent augmentations.

A "clip" of ``views`` frames, each the same still image through its own draw of the training
augmentation (``augment_clip``: crop, resize, flip, brightness/contrast/saturation jitter),
with the exact position of a grid of points in every view. Trained with the MoSiC objective,
it is the image-level warm-up of the trajectory benchmark: points are paired only across
changes that image augmentation makes, never across time.
"""

from __future__ import annotations

import numpy as np

from mosic.stages.data.augment import AugmentConfig, augment_clip
from mosic.stages.data.clips import channels_first
from mosic.stages.queries import grid_points


def still_views(
    image: np.ndarray, views: int, grid: int, config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``views`` augmented views of ``image`` and where a grid of its points lands in each.

    image: (H, W, 3) uint8 RGB. Returns frames (V, 3, S, S) uint8, positions (V, N, 2)
    float32 (x, y) output pixels of the ``grid`` x ``grid`` points (N = grid ** 2) and visible
    (V, N) bool (False where a view's crop leaves the point out).
    """
    height, width, _ = image.shape
    points = grid_points(height, width, grid)[None]  # (1, N, 2)
    seen = np.ones((1, len(points[0])), bool)
    frames, positions, visible = [], [], []
    for _ in range(views):
        frame, position, inside = augment_clip(image[None], points, seen, config, rng)
        frames.append(frame[0])
        positions.append(position[0])
        visible.append(inside[0])
    return channels_first(np.stack(frames)), np.stack(positions), np.stack(visible)
