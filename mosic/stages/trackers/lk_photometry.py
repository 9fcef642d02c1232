"""Brightness and contrast changes in the ``lk`` tracker.

OpenCV's pyramidal LK assumes that a point keeps its grey level from frame to frame; a slow
brightness or contrast drift makes every step slightly wrong in the same direction, and the
error adds up (2 px after 40 frames of a 1 %/frame drift). Two remedies:

- ``refine_steps`` moves each LK result to where the patch matches the previous frame's by
  zero-mean normalised correlation (Gauss-Newton on mean- and contrast-normalised patches),
  which no gain or offset between the two frames can bias;
- ``light_step`` measures the global gain and offset between two frames from the patches of
  the points tracked between them, so that the tracker can compare appearance in one
  photometry for the whole window (its *window photometry*) however long ago a template or
  reference was cut.
"""

from __future__ import annotations

import cv2
import numpy as np

from mosic.stages.trackers.lk_patches import patches_at, weighted_stats


def with_gradients(image: np.ndarray) -> np.ndarray:
    """A float32 (H, W) image stacked with its horizontal and vertical derivatives (grey levels
    per pixel), (H, W, 3)."""
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
    return cv2.merge([image, gx, gy])


def _normalised(patches: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, P) patches less their weighted mean, over their weighted std; and that std (M,)."""
    mean, std = weighted_stats(patches, weights)
    std = std + 1e-3
    return (patches - mean[:, None]) / std[:, None], std


def refine_steps(
    stacked: np.ndarray,
    landed: np.ndarray,
    templates: np.ndarray,
    frames: np.ndarray,
    weights: np.ndarray,
    iterations: int,
) -> np.ndarray:
    """Points (M, 2) moved from ``landed`` to where their patches in an image, sampled along
    (M,) complex ``frames``, best match (M, P) ``templates`` by normalised correlation.

    stacked: ``with_gradients(image)``, (H, W, 3); weights: (P,) Gaussian weights of the
    square patches. Each Gauss-Newton step is at most 1 px per axis.
    """
    size = int(round(np.sqrt(len(weights))))
    target, _ = _normalised(templates, weights)
    points = landed.astype(np.float32).copy()
    for _ in range(iterations):
        sampled = patches_at(stacked, points, size, frames)
        seen, std = _normalised(sampled[..., 0], weights)
        gx, gy = sampled[..., 1], sampled[..., 2]
        gx = (gx - (gx @ weights)[:, None]) / std[:, None]
        gy = (gy - (gy @ weights)[:, None]) / std[:, None]
        error = seen - target
        hxx, hxy, hyy = (gx * gx) @ weights, (gx * gy) @ weights, (gy * gy) @ weights
        bx, by = (gx * error) @ weights, (gy * error) @ weights
        det = hxx * hyy - hxy * hxy
        solvable = det > 1e-6
        det = np.where(solvable, det, 1.0)
        dx = np.where(solvable, (hxy * by - hyy * bx) / det, 0.0)
        dy = np.where(solvable, (hxy * bx - hxx * by) / det, 0.0)
        points += np.clip(np.stack([dx, dy], 1), -1, 1).astype(np.float32)
    return points


def light_step(
    previous: np.ndarray,
    image: np.ndarray,
    start: np.ndarray,
    landed: np.ndarray,
    weights: np.ndarray,
    min_std: float,
    min_points: int = 8,
) -> tuple[float, float] | None:
    """Gain and offset ``(g, o)`` with ``image ~ g * previous + o``, from the patches of points
    tracked from ``start`` (M, 2) in ``previous`` to ``landed`` (M, 2) in ``image`` (both
    (H, W) float32): medians over the points whose patch has a weighted std above ``min_std``
    of the contrast ratio and of the offset. None with fewer than ``min_points`` such points.
    """
    size = int(round(np.sqrt(len(weights))))
    mean_a, std_a = weighted_stats(patches_at(previous, start, size), weights)
    mean_b, std_b = weighted_stats(patches_at(image, landed, size), weights)
    use = std_a > min_std
    if use.sum() < min_points:
        return None
    gain = float(np.median(std_b[use] / std_a[use]))
    return gain, float(np.median(mean_b[use] - gain * mean_a[use]))
