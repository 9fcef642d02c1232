"""Clip augmentation that moves the tracks with the pixels: one crop, one flip, one jitter per clip.

Coordinates follow mosic's convention (``mosic.stages.trackers.base``): ``(x, y)`` pixels with
pixel centres at integers. ``cv2.resize`` maps pixel centres the same way, so a crop
``[x0, x0 + w) x [y0, y0 + h)`` resized to ``S x S`` sends ``x`` to
``(x - x0 + 0.5) * S / w - 0.5`` exactly (and ``y`` likewise).

Crop geometry (``AugmentConfig.crop_geometry``):
- ``paper`` (the paper's code): every frame squashed to ``S x S``, then a random resized crop of
  that square. mosic draws the crop on an ``S x S`` canvas, maps it back to the stored frame
  (edges rounded to whole stored pixels) and resizes once, so a wide frame is squashed as in
  the paper without a second resampling.
- ``aspect``: the random resized crop is drawn on the stored frame itself (its aspect ratio
  kept); on 16:9 video it never covers more than about 75 % of the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

CROP_GEOMETRIES = ("paper", "aspect")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings.

    input_size: side S of the square output, pixels.
    crop_scale: range of the crop's area as a fraction of the frame's.
    crop_ratio: range of the crop's aspect ratio (width / height; in ``paper`` geometry, on the
        squashed square), drawn log-uniformly.
    flip: mirror the clip horizontally with probability 1/2.
    color_jitter: strength s of brightness, contrast and saturation jitter (factors drawn in
        [max(0, 1 - s), 1 + s], once per clip); 0 turns it off.
    crop_geometry: ``paper`` (frames squashed to S x S, then cropped: the paper's code) or
        ``aspect`` (cropped from the stored frame, aspect ratio kept); see the module's notes.
    """

    input_size: int = 224
    crop_scale: tuple[float, float] = (0.4, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    color_jitter: float = 0.0
    crop_geometry: str = "paper"

    def __post_init__(self) -> None:
        if self.crop_geometry not in CROP_GEOMETRIES:
            raise ValueError(f"--crop-geometry {self.crop_geometry!r}: use paper or aspect")


def crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """A random crop ``(x0, y0, w, h)`` with torchvision ``RandomResizedCrop`` semantics.

    Ten tries at an area fraction uniform in ``scale`` and an aspect ratio log-uniform in
    ``ratio``; if none fits, the largest centred crop with a ratio inside ``ratio``.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            return x0, y0, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def clip_crop(
    height: int, width: int, config: AugmentConfig, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """The crop ``(x0, y0, w, h)`` of a clip, in pixels of its ``height x width`` stored frames.

    ``aspect``: ``crop_box`` on the stored frame. ``paper``: ``crop_box`` on the ``S x S``
    square the paper squashes every frame to, scaled back to the stored frame (edges rounded to
    whole pixels), so that resizing it to ``S x S`` gives the paper's crop.
    """
    scale, ratio = config.crop_scale, config.crop_ratio
    if config.crop_geometry == "aspect":
        return crop_box(height, width, scale, ratio, rng)
    size = config.input_size
    x0, y0, w, h = crop_box(size, size, scale, ratio, rng)
    left, right = round(x0 * width / size), round((x0 + w) * width / size)
    top, bottom = round(y0 * height / size), round((y0 + h) * height / size)
    return left, top, max(right - left, 1), max(bottom - top, 1)


def _jitter(frames: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, then contrast, then saturation, one factor each for the whole clip.

    frames: (F, S, S, 3) uint8 RGB -> (F, S, S, 3) uint8. Contrast blends towards the clip's
    mean grey, saturation towards each pixel's grey (ITU-R 601 luma, as torchvision).
    """
    low = max(0.0, 1.0 - strength)
    brightness, contrast, saturation = rng.uniform(low, 1.0 + strength, size=3)
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    out = frames.astype(np.float32) * brightness
    mean = (out @ luma).mean()
    out = (out - mean) * contrast + mean
    grey = (out @ luma)[..., None]
    out = (out - grey) * saturation + grey
    return np.clip(out, 0, 255, out=out).round().astype(np.uint8)


def augment_clip(
    frames: np.ndarray,
    positions: np.ndarray,
    visible: np.ndarray,
    config: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop, resize, flip and colour-jitter a clip and transform its tracks exactly.

    frames: (F, H, W, 3) uint8 RGB; positions: (F, N, 2) float32 (x, y) pixels; visible: (F, N)
    bool. Returns frames (F, S, S, 3) uint8, positions (F, N, 2) float32 in output pixels and
    visible (F, N) bool, False also where a point falls outside the crop
    (outside ``[-0.5, S - 0.5)``) or has no position (NaN). Draws from ``rng`` in a fixed
    order: the crop, the flip, then the jitter.
    """
    size = config.input_size
    _, height, width, _ = frames.shape
    x0, y0, w, h = clip_crop(height, width, config, rng)
    flip = config.flip and rng.random() < 0.5
    # Bilinear, as albumentations' RandomResizedCrop: six times cheaper than area averaging
    # at the usual crops (a 256-px store shrinks by less than 2x); averaging only from 2x down.
    halving = w >= 2 * size and h >= 2 * size
    interpolation = cv2.INTER_AREA if halving else cv2.INTER_LINEAR
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for frame, target in zip(frames, out, strict=True):
        cv2.resize(frame[y0 : y0 + h, x0 : x0 + w], (size, size), target, 0, 0, interpolation)
        if flip:
            cv2.flip(target, 1, target)

    scale = np.array([size / w, size / h], np.float32)
    origin = np.array([x0, y0], np.float32)
    moved = (positions.astype(np.float32) - origin + 0.5) * scale - 0.5
    inside = ((moved >= -0.5) & (moved < size - 0.5)).all(axis=-1)
    if flip:
        moved[..., 0] = size - 1 - moved[..., 0]
    if config.color_jitter > 0:
        out = _jitter(out, config.color_jitter, rng)
    return out, moved, visible & inside
