"""Patch and neighbourhood helpers of the ``lk`` tracker (pixel centres at integers)."""

from __future__ import annotations

import cv2
import numpy as np


def patches_at(image: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """Bilinear ``size`` x ``size`` patches of a float32 image centred on (M, 2) (x, y)
    points, (M, size * size) float32 (rows of the patch flattened)."""
    if not len(points):
        return np.zeros((0, size * size), np.float32)
    offsets = np.arange(size, dtype=np.float32) - (size - 1) / 2
    oy, ox = np.meshgrid(offsets, offsets, indexing="ij")
    map_x = (points[:, :1] + ox.ravel()[None]).astype(np.float32)
    map_y = (points[:, 1:] + oy.ravel()[None]).astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """Gaussian weights over a flattened ``size`` x ``size`` patch, summing to 1, (size**2,)."""
    offsets = np.arange(size, dtype=np.float32) - (size - 1) / 2
    g = np.exp(-0.5 * (offsets / sigma) ** 2)
    w = np.outer(g, g).ravel()
    return w / w.sum()


def compare_patches(
    patches: np.ndarray, templates: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How well (M, P) patches match (M, P) templates under (P,) weights: NCC (M,) in [-1, 1],
    and the residual (M,): weighted RMS difference over the template's weighted contrast
    (std + 4 grey levels), which unlike NCC also sees a shift along a smooth intensity ramp."""
    a = patches - (patches @ weights)[:, None]
    b = templates - (templates @ weights)[:, None]
    var_a, var_b = (a * a) @ weights, (b * b) @ weights
    ncc = ((a * b) @ weights) / np.sqrt(var_a * var_b + 1e-6)
    residual = np.sqrt(((patches - templates) ** 2) @ weights) / (np.sqrt(var_b) + 4.0)
    return ncc, residual


def tiles_around(image: np.ndarray, centres: np.ndarray, radius: int) -> np.ndarray:
    """Square crops of side 2 * radius + 1 around (M, 2) integer (x, y) centres of a (H, W)
    image (edges replicated), laid side by side in one (2 * radius + 1, M * side) image."""
    side = 2 * radius + 1
    padded = np.pad(image, radius, mode="edge")
    offsets = np.arange(side)
    rows = np.clip(centres[:, 1, None] + offsets, 0, padded.shape[0] - 1)  # (M, side)
    cols = np.clip(centres[:, 0, None] + offsets, 0, padded.shape[1] - 1)
    crops = padded[rows[:, :, None], cols[:, None, :]]  # (M, side, side)
    return np.ascontiguousarray(crops.transpose(1, 0, 2).reshape(side, -1))


def as_complex(points: np.ndarray) -> np.ndarray:
    """(..., 2) (x, y) points as complex numbers x + iy, (...,)."""
    return points[..., 0].astype(np.float64) + 1j * points[..., 1]


def inside_frame(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Whether (M, 2) (x, y) points lie in the frame, (M,)."""
    x, y = points[:, 0], points[:, 1]
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def grid_neighbours(queries: np.ndarray, count: int) -> np.ndarray:
    """For each query, the ``count`` nearest queries of the same start frame, (N, count) int.

    queries: (N, 3) rows (t, x, y). Rows are padded with the query itself when its start frame
    has too few queries.
    """
    result = np.tile(np.arange(len(queries))[:, None], (1, count))
    for t in np.unique(queries[:, 0]):
        group = np.flatnonzero(queries[:, 0] == t)
        dist = np.linalg.norm(queries[group, None, 1:3] - queries[None, group, 1:3], axis=-1)
        np.fill_diagonal(dist, np.inf)
        k = min(count, len(group) - 1)
        if k > 0:
            result[group, :k] = group[np.argsort(dist, axis=1)[:, :k]]
    return result
