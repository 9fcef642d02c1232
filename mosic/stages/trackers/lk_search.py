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
    radii: np.ndarray,
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Best place of each template within ``radii`` pixels (canonical) of its centre.

    image: (H, W) float32; centres: (M, 2) (x, y); frames: (M,) complex canonical -> image
    similarities the search regions are sampled along; templates: (M, size * size) canonical
    patches; radii: (M,) int. Each region is sampled along its frame, so a template is matched
    as turned and scaled as its point is believed to be. Returns the (M, 2) (x, y) image
    positions of the best zero-mean normalised correlations (M,) (sub-pixel peaks).
    """
    count = len(centres)
    found = np.zeros((count, 2), np.float32)
    scores = np.full(count, -1.0, np.float32)
    if not count:
        return found, scores
    widest = int(radii.max())
    side = 2 * widest + size
    regions = patches_at(image, centres, side, frames).reshape(count, side, side)
    for i in range(count):
        cut = widest - int(radii[i])
        region = regions[i, cut : side - cut, cut : side - cut]
        template = templates[i].reshape(size, size)
        response = cv2.matchTemplate(region, template, cv2.TM_CCOEFF_NORMED)
        _, best, _, (bx, by) = cv2.minMaxLoc(response)
        dx = bx - radii[i] + _parabola_peak(response[by, max(bx - 1, 0) : bx + 2], bx)
        dy = by - radii[i] + _parabola_peak(response[max(by - 1, 0) : by + 2, bx], by)
        scores[i] = best
        offset = frames[i] * complex(dx, dy)
        found[i] = centres[i] + np.array([offset.real, offset.imag], np.float32)
    return found, scores


def _parabola_peak(values: np.ndarray, at: int) -> float:
    """Sub-pixel offset of a peak from three samples around it (0 at a border)."""
    if len(values) < 3 or at == 0:
        return 0.0
    left, mid, right = (float(v) for v in values)
    curve = left - 2 * mid + right
    return float(np.clip(0.5 * (left - right) / curve, -0.5, 0.5)) if curve < 0 else 0.0


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """A small float32 copy of a uint8 (H, W) frame, for comparing whole frames."""
    return cv2.resize(gray, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)


def thumbnail_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-mean normalised correlation of two thumbnails, in [-1, 1]."""
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-6))
