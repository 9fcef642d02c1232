"""Searches of the ``lk`` tracker: hidden points found again by their template, scene cuts."""

from __future__ import annotations

import cv2
import numpy as np

from mosic.stages.trackers.lk_patches import patches_at

THUMB_SIZE = (32, 24)  # (width, height) of the thumbnails compared to find scene cuts


def search_templates(
    image: np.ndarray,
    centres: np.ndarray,
    frames: np.ndarray,
    templates: np.ndarray,
    radius: int,
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Best place of each template within ``radius`` pixels (canonical) of its centre.

    image: (H, W) float32; centres: (M, 2) (x, y); frames: (M,) complex canonical -> image
    similarities the search regions are sampled along (a template is matched turned and
    scaled as its point is believed to be); templates: (M, size * size) canonical patches.
    Returns the (M, 2) (x, y) image positions of the best zero-mean normalised correlations
    (M,) (sub-pixel peaks).
    """
    count = len(centres)
    if not count:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    side = 2 * radius + size
    regions = patches_at(image, centres, side, frames).reshape(count, side, side)
    shaped = templates.reshape(count, size, size)
    pairs = zip(regions, shaped, strict=True)
    response = np.stack([cv2.matchTemplate(r, t, cv2.TM_CCOEFF_NORMED) for r, t in pairs])
    # response: (M, 2 * radius + 1, 2 * radius + 1)
    flat = response.reshape(count, -1).argmax(axis=1)
    by, bx = np.divmod(flat, 2 * radius + 1)
    rows = np.arange(count)
    scores = response[rows, by, bx]
    padded = np.pad(response, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    dx = _parabola(padded[rows, by + 1, bx], padded[rows, by + 1, bx + 2], scores)
    dy = _parabola(padded[rows, by, bx + 1], padded[rows, by + 2, bx + 1], scores)
    offset = frames * ((bx - radius + dx) + 1j * (by - radius + dy))
    found = centres + np.stack([offset.real, offset.imag], 1).astype(np.float32)
    return found, scores.astype(np.float32)


def _parabola(left: np.ndarray, right: np.ndarray, mid: np.ndarray) -> np.ndarray:
    """Sub-pixel offsets (M,) of peaks ``mid`` (M,) from their two neighbours (0 at a border)."""
    curve = left - 2 * mid + right
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = np.where(np.isfinite(curve) & (curve < 0), 0.5 * (left - right) / curve, 0.0)
    return np.clip(np.nan_to_num(offset), -0.5, 0.5)


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """A small float32 copy of a uint8 (H, W) frame, for comparing whole frames."""
    return cv2.resize(gray, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)


def thumbnail_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-mean normalised correlation of two thumbnails, in [-1, 1]."""
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-6))
