"""The layers of the drifting-categories videos (``mosic.stages.drift_videos``): geometry.

A layer maps canonical points ``c`` to pixels by ``p = M_t(c + D_t(c))`` (``M_t`` a similarity,
camera after object; ``D_t`` a smooth bending field). ``to_pixels`` is that forward map (the
tracks), ``to_canonical`` its inverse (fixed-point iteration on the contraction ``D_t``, used to
render every pixel), ``coverage`` the soft outline and ``pattern`` the category's texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CATEGORIES = ("background", "stripes", "dots", "checker")  # category id = index
_INVERSE_ITERATIONS = 10  # fixed-point steps inverting c + D(c) = u (contraction <= 0.45)


@dataclass(frozen=True)
class Layer:
    """One layer's appearance and motion; ``maps`` (T, 2, 3) canonical -> pixels."""

    category: int
    maps: np.ndarray
    colours: np.ndarray  # (T, 2, 3) float32 RGB in [0, 255], the two colours of each frame
    period: float
    angle: float  # pattern orientation, radians
    radius: np.ndarray | None  # (64,) outline radius at evenly spaced angles; None: background
    bend: np.ndarray  # (6,) amplitude, wave number, speed, phase, direction angle, wave angle
    texture: np.ndarray | None  # background only: (h, w) float32 in [0, 1], canonical pixels


def similarity(centre: np.ndarray, angle: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(T, 2, 3) maps sending canonical (0, 0) to ``centre`` (T, 2), rotated by ``angle`` (T,)
    radians and scaled by ``scale`` (T,)."""
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    linear = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    return np.concatenate([linear, centre[..., None]], axis=-1)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(T, 2, 3) affine maps ``outer`` after ``inner``."""
    linear = outer[..., :2] @ inner[..., :2]
    offset = np.einsum("tij,tj->ti", outer[..., :2], inner[..., 2]) + outer[..., 2]
    return np.concatenate([linear, offset[..., None]], axis=-1)


def bend_field(layer: Layer, t: np.ndarray | int, c: np.ndarray) -> np.ndarray:
    """The bending field D_t(c): (..., 2) canonical points -> (..., 2) displacements."""
    amplitude, wave, speed, phase, direction, across = layer.bend
    if amplitude == 0:
        return np.zeros_like(c)
    along = np.cos(across) * c[..., 0] + np.sin(across) * c[..., 1]
    value = amplitude * np.sin(wave * along + speed * np.asarray(t, np.float64) + phase)
    return value[..., None] * np.array([np.cos(direction), np.sin(direction)])


def to_pixels(layer: Layer, t: int, c: np.ndarray) -> np.ndarray:
    """Canonical points (N, 2) of ``layer`` -> pixels (N, 2) at frame ``t``."""
    moved = c + bend_field(layer, t, c)
    m = layer.maps[t]
    return moved @ m[:, :2].T + m[:, 2]


def to_canonical(layer: Layer, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) at frames ``t`` (N,) -> canonical points (N, 2) of ``layer``."""
    inverse = np.linalg.inv(layer.maps[:, :, :2])[t]  # (N, 2, 2), from T inversions
    u = np.einsum("nij,nj->ni", inverse, p - layer.maps[t, :, 2])
    c = u.copy()
    for _ in range(_INVERSE_ITERATIONS if layer.bend[0] else 0):
        c = u - bend_field(layer, t, c)
    return c


def coverage(layer: Layer, c: np.ndarray) -> np.ndarray:
    """Soft coverage (...,) in [0, 1] of canonical points (..., 2) by the layer's outline."""
    if layer.radius is None:
        return np.ones(c.shape[:-1])
    angle = np.arctan2(c[..., 1], c[..., 0])
    position = (angle % (2 * np.pi)) / (2 * np.pi) * len(layer.radius)
    i = np.floor(position).astype(int) % len(layer.radius)
    f = position - np.floor(position)
    edge = layer.radius[i] * (1 - f) + layer.radius[(i + 1) % len(layer.radius)] * f
    return np.clip(edge - np.hypot(c[..., 0], c[..., 1]) + 0.5, 0.0, 1.0)


def footprint(layer: Layer, t: int, height: int, width: int) -> np.ndarray:
    """Flat indices (M,) of the pixels that ``layer`` can cover at frame ``t`` (every pixel for
    the background; the bounding box of the bent, moved outline for an object)."""
    if layer.radius is None:
        return np.arange(height * width)
    m = layer.maps[t]
    reach = (layer.radius.max() + abs(layer.bend[0])) * np.sqrt(abs(np.linalg.det(m[:, :2]))) + 2
    x0, y0 = np.floor(m[:, 2] - reach).astype(int)
    x1, y1 = np.ceil(m[:, 2] + reach).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
    if x1 < x0 or y1 < y0:
        return np.zeros(0, int)
    ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    return (ys * width + xs).ravel()


def pattern(layer: Layer, c: np.ndarray) -> np.ndarray:
    """The mix (...,) in [0, 1] between the layer's two colours at canonical points (..., 2)."""
    cos, sin = np.cos(layer.angle), np.sin(layer.angle)
    x = (cos * c[..., 0] + sin * c[..., 1]) * 2 * np.pi / layer.period
    y = (-sin * c[..., 0] + cos * c[..., 1]) * 2 * np.pi / layer.period
    name = CATEGORIES[layer.category]
    if name == "stripes":
        return 0.5 + 0.5 * np.sin(x)
    if name == "checker":
        return 0.5 + 0.5 * np.tanh(2.5 * np.sin(x) * np.sin(y))
    if name == "dots":
        return 1 / (1 + np.exp(-5 * (np.cos(x) + np.cos(y) - 0.9)))
    raise ValueError(f"no pattern for category {name!r}")
