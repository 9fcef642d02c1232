"""Neighbour motion of the ``lk`` tracker: which neighbours move alike, and the similarity
(rotation, scale, translation) their motion shows. Points are complex numbers x + iy."""

from __future__ import annotations

import numpy as np


def update_affinity(
    cost: np.ndarray, neighbours: np.ndarray, ok: np.ndarray, moved: np.ndarray, rate: float
) -> None:
    """Running mean squared step difference (px^2) between each point and its (N, K)
    ``neighbours``, over steps (N, 2) where both were tracked (``ok`` (N,)); (N, K) in place."""
    both = ok[:, None] & ok[neighbours]
    gap = np.sum((moved[:, None] - moved[neighbours]) ** 2, axis=-1)
    cost[both] += rate * (gap[both] - cost[both])


def masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, the median of the masked entries of (M, K, 2) ``values`` (lower median for an
    even count), (M, 2); every row needs one masked entry at least (a faster np.nanmedian)."""
    ordered = np.sort(np.where(mask[..., None], values, np.inf), axis=1)
    middle = (mask.sum(axis=1) - 1) // 2
    return np.take_along_axis(ordered, middle[:, None, None], axis=1)[:, 0]


def fit_similarity(
    src: np.ndarray,
    dst: np.ndarray,
    mask: np.ndarray,
    prior: float,
    expected: np.ndarray | complex = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the similarity ``w = a * (z - z_mean) + w_mean`` fitted by least squares to
    the masked pairs of (M, K) complex ``src`` -> ``dst`` points, its linear part ``a`` pulled
    towards ``expected`` ((M,) or scalar) with weight ``prior`` (px^2). Rows without pairs get
    ``a = expected`` and zero means.

    Returns a (M,), z_mean (M,), w_mean (M,) complex.
    """
    count = np.maximum(mask.sum(axis=1), 1)
    z_mean = np.sum(np.where(mask, src, 0), axis=1) / count
    w_mean = np.sum(np.where(mask, dst, 0), axis=1) / count
    zc = np.where(mask, src - z_mean[:, None], 0)
    wc = np.where(mask, dst - w_mean[:, None], 0)
    numerator = np.sum(np.conj(zc) * wc, axis=1) + prior * expected
    a = numerator / (np.sum(np.abs(zc) ** 2, axis=1) + prior)
    return a, z_mean, w_mean


def fit_similarity_trimmed(
    src: np.ndarray,
    dst: np.ndarray,
    mask: np.ndarray,
    prior: float,
    expected: np.ndarray | complex,
    trim: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``fit_similarity``, then again without the pairs the first fit misses by more than
    ``trim`` pixels (neighbours on another surface)."""
    a, z_mean, w_mean = fit_similarity(src, dst, mask, prior, expected)
    miss = np.abs(a[:, None] * (src - z_mean[:, None]) + w_mean[:, None] - dst)
    return fit_similarity(src, dst, mask & (miss <= trim), prior, expected)


def clip_zoom(a: np.ndarray, largest: float) -> np.ndarray:
    """Complex similarities (M,) with their scale clipped to [1 / largest, largest]."""
    scale = np.abs(a) + 1e-12
    return a / scale * np.clip(scale, 1 / largest, largest)
