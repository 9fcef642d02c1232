"""Patch and neighbourhood helpers of the ``lk`` tracker (pixel centres at integers).

A point's *frame* is a complex number ``z = scale * exp(i * angle)``: the linear part of the
similarity from its patches' canonical pixels to the image around it (x + iy convention), so
that a patch is sampled turned and scaled like the surface it shows.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np


def patches_at(
    image: np.ndarray, points: np.ndarray, size: int, frames: np.ndarray | None = None
) -> np.ndarray:
    """Bilinear ``size`` x ``size`` patches of a float32 (H, W) or (H, W, C) image centred on
    (M, 2) (x, y) points, sampled along (M,) complex ``frames`` (None: upright), (M, size *
    size) float32 (rows of the patch flattened; (M, size * size, C) for C channels; edges
    replicated)."""
    if not len(points):
        return np.zeros((0, size * size, *image.shape[2:]), np.float32)
    ox, oy = _offsets(size)
    x, y = points[:, :1].astype(np.float32), points[:, 1:2].astype(np.float32)
    if frames is None:
        map_x, map_y = x + ox, y + oy
    else:
        c = frames.real.astype(np.float32)[:, None]
        s = frames.imag.astype(np.float32)[:, None]
        map_x, map_y = x + c * ox - s * oy, y + s * ox + c * oy
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@functools.cache
def _offsets(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(1, size * size) float32 x and y offsets of a patch's pixels from its centre."""
    steps = np.arange(size, dtype=np.float32) - (size - 1) / 2
    oy, ox = np.meshgrid(steps, steps, indexing="ij")
    return ox.reshape(1, -1), oy.reshape(1, -1)


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """Gaussian weights over a flattened ``size`` x ``size`` patch, summing to 1, (size**2,)."""
    offsets = np.arange(size, dtype=np.float32) - (size - 1) / 2
    g = np.exp(-0.5 * (offsets / sigma) ** 2)
    w = np.outer(g, g).ravel()
    return w / w.sum()


def weighted_stats(patches: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean (M,) and standard deviation (M,) of (M, P) patches under (P,) weights."""
    mean = patches @ weights
    centred = patches - mean[:, None]
    return mean, np.sqrt((centred * centred) @ weights)


def compare_patches(
    patches: np.ndarray, templates: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How well (M, P) patches match (M, P) templates under (P,) weights: NCC (M,) in [-1, 1],
    and the residual (M,): weighted RMS difference over the template's weighted contrast
    (std + 4 grey levels), which unlike NCC also sees a shift along a smooth intensity
    ramp (so patches must share the templates' photometry: the tracker compares them in its
    window's photometry)."""
    a = patches - (patches @ weights)[:, None]
    b = templates - (templates @ weights)[:, None]
    var_a, var_b = (a * a) @ weights, (b * b) @ weights
    ncc = ((a * b) @ weights) / np.sqrt(var_a * var_b + 1e-6)
    residual = np.sqrt(((patches - templates) ** 2) @ weights) / (np.sqrt(var_b) + 4.0)
    return ncc, residual


def noise_sigma(gray: np.ndarray) -> float:
    """Standard deviation of a (H, W) grey image's pixel noise (Immerkaer's estimator: the
    mean absolute response of a Laplacian-difference kernel, blind to smooth structure)."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = cv2.filter2D(gray.astype(np.float32), -1, kernel)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.mean(np.abs(response)) / 6)


def as_complex(points: np.ndarray) -> np.ndarray:
    """(..., 2) (x, y) points as complex numbers x + iy, (...,)."""
    return points[..., 0].astype(np.float64) + 1j * points[..., 1]


def as_points(values: np.ndarray) -> np.ndarray:
    """(...,) complex numbers x + iy as (..., 2) float32 (x, y) points."""
    return np.stack([values.real, values.imag], -1).astype(np.float32)


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
