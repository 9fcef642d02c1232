"""Scenes of the video generator: textured layers under known similarity motions, rendered.

A ``Scene`` is a stack of ``Layer``s, bottom to top, plus what the camera adds (lighting,
shutter, sensor noise). Each layer has a texture and a soft shape mask in its own canonical
coordinates and, per frame, a similarity (canonical -> image pixels) given by the image
position of its canonical ``origin``, an angle and a scale. ``render`` inverse-warps every
layer with ``cv2.warpAffine`` (which, like mosic, puts pixel centres at integer coordinates)
and composites, so ground truth computed from the same transforms agrees with the pixels.
Conditions (``mosic.stages.synthetic_conditions``) edit a scene before it is rendered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

_SUPERSAMPLE = 8  # shape masks are drawn this much finer, then box-filtered (soft edges)
_POLY_SHIFT = 4  # cv2.fillPoly fixed-point bits
_FULL = np.ones((1, 1), np.float32)  # the shape of a layer that covers the whole frame


@dataclass
class Layer:
    """One layer of a scene (fields are edited in place by conditions).

    texture: (h, w, 3) float32 in [0, 255]; shape: (h, w) float32 soft mask in [0, 1] in the
        same canonical pixels (unused for ``role == "background"``, which covers everything).
    origin: canonical (x, y) point placed at ``centre``; centre: (T, 2) float64 image (x, y) of
        ``origin`` per frame; angle: (T,) degrees (counter-clockwise on screen); scale: (T,).
    kind: what the layer is (its semantic class name); role: ``"background"``, ``"object"``
        (moves on its own) or ``"occluder"``.
    gain, bias: (T,) float32 or None: the layer's own appearance per frame, ``texture * gain +
        bias`` (per-object appearance drift); None keeps the texture as it is.
    present: (T,) bool or None: frames the layer exists in (None: every frame).
    """

    texture: np.ndarray
    shape: np.ndarray
    origin: np.ndarray
    centre: np.ndarray
    angle: np.ndarray
    scale: np.ndarray
    kind: str
    role: str
    gain: np.ndarray | None = None
    bias: np.ndarray | None = None
    present: np.ndarray | None = None

    def transforms(self, times: np.ndarray | None = None) -> np.ndarray:
        """(len(times), 2, 3) canonical -> image similarities at (fractional) frame ``times``
        (motion interpolated linearly between frames), or (T, 2, 3) at every frame."""
        if times is None:
            return _similarity(self.centre, self.angle, self.scale, self.origin)
        frames = np.arange(len(self.angle))
        centre = np.stack([np.interp(times, frames, c) for c in self.centre.T], -1)
        angle = np.interp(times, frames, self.angle)
        scale = np.interp(times, frames, self.scale)
        return _similarity(centre, angle, scale, self.origin)


@dataclass
class Scene:
    """What a video is rendered from.

    layers: bottom to top. gain, bias: (T,) float32 or None, the camera's exposure and black
    level per frame (``pixel * gain + bias``, then clipped), for brightness and contrast drift.
    exposure: fraction of the frame interval the shutter is open (motion blur; 0 = sharp).
    read_noise, shot_noise: sensor noise, std ``sqrt(read_noise**2 + shot_noise * pixel)``
    grey levels, on top of the generator's plain Gaussian ``noise``.
    """

    num_frames: int
    height: int
    width: int
    layers: list[Layer] = field(default_factory=list)
    gain: np.ndarray | None = None
    bias: np.ndarray | None = None
    exposure: float = 0.0
    read_noise: float = 0.0
    shot_noise: float = 0.0

    def present(self) -> np.ndarray:
        """(T, K) bool: which layer exists at each frame."""
        every = np.ones(self.num_frames, bool)
        return np.stack([every if k.present is None else k.present for k in self.layers], 1)


def render(scene: Scene, rng: np.random.Generator, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 RGB and layer ids (T, H, W) uint8 of ``scene``.

    Each frame is the mean of composites over the open shutter (``scene.exposure``), lit by
    ``scene.gain``/``bias``, plus Gaussian noise of std ``noise`` and sensor noise, drawn from
    ``rng``. The ids are those of the sharp composite at the frame's own time.
    """
    t_count, height, width = scene.num_frames, scene.height, scene.width
    frames = np.empty((t_count, height, width, 3), np.uint8)
    masks = np.zeros((t_count, height, width), np.uint8)
    present = scene.present()
    sharp = np.stack([layer.transforms() for layer in scene.layers], 1)  # (T, K, 2, 3)
    for s in range(t_count):
        if scene.exposure > 0:
            _composite(scene, s, present[s], sharp[s], masks[s], ids_only=True)
            image = _blurred_composite(scene, s, present[s])
        else:
            image = _composite(scene, s, present[s], sharp[s], masks[s])
        if scene.gain is not None:
            image = image * scene.gain[s] + scene.bias[s]
        image += noise * rng.standard_normal(image.shape).astype(np.float32)
        if scene.read_noise or scene.shot_noise:
            var = scene.read_noise**2 + scene.shot_noise * np.clip(image, 0, 255)
            image += np.sqrt(var) * rng.standard_normal(image.shape).astype(np.float32)
        frames[s] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return frames, masks


def _blurred_composite(scene: Scene, s: int, present: np.ndarray) -> np.ndarray:
    """Frame ``s`` averaged over the open shutter, (H, W, 3) float32: each present layer's
    colour and coverage are averaged over enough sub-frames that it moves under 1 px between
    two, inside the box it sweeps, then composited bottom to top."""
    image = np.zeros((scene.height, scene.width, 3), np.float32)
    frame_corners = np.array([[0, 0], [scene.width - 1, 0], [0, scene.height - 1],
                              [scene.width - 1, scene.height - 1]], np.float64)  # fmt: skip
    last = scene.num_frames - 1
    for k, layer in enumerate(scene.layers):
        if not present[k]:
            continue
        ends = layer.transforms(np.clip(s + scene.exposure * np.array([-0.5, 0.5]), 0, last))
        if layer.role == "background":  # canonical points seen at the frame's corners
            corners = _map(cv2.invertAffineTransform(layer.transforms()[s]), frame_corners)
        else:
            h, w = layer.shape.shape
            corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
        sweep = np.max(np.linalg.norm(_map(ends[1], corners) - _map(ends[0], corners), axis=1))
        count = int(np.clip(np.ceil(sweep), 0, 24)) + 1
        times = np.clip(s + scene.exposure * (np.linspace(0, 1, count) - 0.5), 0, last)
        matrices = layer.transforms(times)
        surface = layer.texture
        if layer.gain is not None:
            surface = surface * layer.gain[s] + layer.bias[s]
        if layer.role == "background":
            image = np.mean([_warp(surface, m, (0, 0), image.shape) for m in matrices], axis=0)
            continue
        box = np.concatenate([_map(m, corners) for m in matrices])
        x0, y0 = np.maximum(np.floor(box.min(axis=0)).astype(int) - 1, 0)
        x1 = min(int(np.ceil(box[:, 0].max())) + 2, scene.width)
        y1 = min(int(np.ceil(box[:, 1].max())) + 2, scene.height)
        if x1 <= x0 or y1 <= y0:
            continue
        shape = (y1 - y0, x1 - x0)
        alpha = np.zeros(shape, np.float32)
        colour = np.zeros((*shape, 3), np.float32)
        for m in matrices:
            a = _warp(layer.shape, m, (x0, y0), shape)
            alpha += a
            colour += a[..., None] * _warp(surface, m, (x0, y0), shape)
        region = image[y0:y1, x0:x1]
        region *= 1 - alpha[..., None] / count
        region += colour / count
    return image


def _warp(
    source: np.ndarray, matrix: np.ndarray, corner: tuple[int, int], shape: tuple[int, ...]
) -> np.ndarray:
    """``source`` warped by a (2, 3) canonical -> image ``matrix`` into the (h, w) box whose
    top-left pixel is image ``corner`` (x, y); textures reflect at their borders, masks are
    0 outside."""
    moved = matrix.copy()
    moved[:, 2] -= corner
    border = cv2.BORDER_REFLECT_101 if source.ndim == 3 else cv2.BORDER_CONSTANT
    size = (shape[1], shape[0])
    return cv2.warpAffine(source, moved, size, flags=cv2.INTER_LINEAR, borderMode=border)


def _map(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A (2, 3) affine map applied to (M, 2) points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def _composite(
    scene: Scene,
    s: int,
    present: np.ndarray,
    matrices: np.ndarray,
    ids: np.ndarray | None = None,
    ids_only: bool = False,
) -> np.ndarray | None:
    """The layers present at frame ``s``, placed by (K, 2, 3) ``matrices``, composited into
    (H, W, 3) float32 (None when ``ids_only``); writes the id of the layer seen at each pixel
    into ``ids`` (H, W) when given."""
    size = (scene.width, scene.height)
    image = np.zeros((scene.height, scene.width, 3), np.float32)
    for k, layer in enumerate(scene.layers):
        if not present[k]:
            continue
        alpha = None
        if layer.role != "background":
            alpha = cv2.warpAffine(layer.shape, matrices[k], size, flags=cv2.INTER_LINEAR)
        if ids is not None:
            ids[...] = k if alpha is None else np.where(alpha >= 0.5, k, ids)
        if ids_only:
            continue
        surface = layer.texture
        if layer.gain is not None:
            surface = surface * layer.gain[s] + layer.bias[s]
        warped = cv2.warpAffine(
            surface, matrices[k], size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        if alpha is None:
            image = warped
        else:
            image += alpha[..., None] * (warped - image)
    return None if ids_only else image


def _similarity(centre: np.ndarray, angle: np.ndarray, scale: np.ndarray, origin) -> np.ndarray:
    """(T, 2, 3) maps: canonical ``origin`` -> ``centre`` (T, 2), rotated by ``angle`` (T,)
    degrees (counter-clockwise on screen) and scaled by ``scale`` (T,)."""
    rad = np.deg2rad(angle)
    cos, sin = np.cos(rad) * scale, np.sin(rad) * scale
    linear = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)
    offset = centre - np.einsum("tij,j->ti", linear, np.asarray(origin, np.float64))
    return np.concatenate([linear, offset[..., None]], axis=-1)


def wobble(rng: np.random.Generator, t: np.ndarray, rate: float, swing: float) -> np.ndarray:
    """A smooth 1-D path from 0: drift ``rate`` per frame plus a sine whose speed peaks at
    ``swing`` per frame, (T,)."""
    period = rng.uniform(60, 140)
    omega = 2 * np.pi / period
    phase = rng.uniform(0, 2 * np.pi)
    amplitude = swing / omega
    return rate * t + amplitude * (np.sin(omega * t + phase) - np.sin(phase))


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Multi-octave coloured noise, (height, width, 3) float32 in [0, 255]."""
    base = rng.uniform(40, 215, size=3)
    image = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((32, 1.0), (16, 0.9), (8, 0.8), (4, 0.7)):
        grid = rng.standard_normal((height // cell + 3, width // cell + 3, 3)).astype(np.float32)
        grid[..., 1:] = 0.5 * grid[..., 1:] + 0.5 * grid[..., :1]  # mostly luminance
        size = (grid.shape[1] * cell, grid.shape[0] * cell)
        up = cv2.resize(grid, size, interpolation=cv2.INTER_CUBIC)
        image += weight * up[cell : cell + height, cell : cell + width]
    image *= 45 / image.std()
    return np.clip(image + base, 0, 255)


def polygon_mask(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
    """Soft mask (height, width) float32 of a polygon (V, 2) given in pixel-centre (x, y)."""
    f = _SUPERSAMPLE
    canvas = np.zeros((height * f, width * f), np.uint8)
    fine = ((vertices + 0.5) * f - 0.5) * (1 << _POLY_SHIFT)
    cv2.fillPoly(canvas, [np.round(fine).astype(np.int32)], 255, cv2.LINE_8, _POLY_SHIFT)
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA) / np.float32(255)


def shape(rng: np.random.Generator, radius: float) -> tuple[np.ndarray, np.ndarray, str]:
    """A random ellipse or star-convex polygon: soft mask (h, w) float32, its centre and its
    kind (``"ellipse"`` or ``"polygon"``)."""
    size = int(np.ceil(2 * radius)) + 6
    centre = np.array([(size - 1) / 2, (size - 1) / 2])
    kind = "ellipse" if rng.random() < 0.5 else "polygon"
    if kind == "ellipse":
        angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        axes = radius * np.array([1.0, rng.uniform(0.5, 0.9)])
        tilt = rng.uniform(0, np.pi)
        x, y = axes[0] * np.cos(angles), axes[1] * np.sin(angles)
        pts = np.stack([x * np.cos(tilt) - y * np.sin(tilt), x * np.sin(tilt) + y * np.cos(tilt)])
    else:
        count = rng.integers(5, 9)
        angles = np.sort(rng.uniform(0, 2 * np.pi, count))
        radii = radius * rng.uniform(0.6, 1.0, count)
        pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)])
    return polygon_mask(pts.T + centre, size, size), centre, kind


def base_layers(
    rng: np.random.Generator,
    num_frames: int,
    height: int,
    width: int,
    num_foreground: int | None,
) -> list[Layer]:
    """The layers of the plain generated scene, bottom to top.

    Background: slow drift (<= ~1 px/frame), slight rotation and zoom. Foreground shapes
    (``num_foreground``, 1-3 at random when None): up to ~2.5 px/frame, ~1.8 deg/frame,
    ~1 %/frame zoom, free to leave the frame partly. A tilted textured bar sweeps across the
    whole frame at <= 3 px/frame, hiding every layer under it for a few frames.
    """
    t = np.arange(num_frames, dtype=np.float64)
    frame_centre = np.array([(width - 1) / 2, (height - 1) / 2])

    # Background: a texture larger than the frame by the farthest it can drift.
    pad = int(1.2 * num_frames + 0.2 * max(height, width)) + 8
    background = texture(rng, height + 2 * pad, width + 2 * pad)
    direction = rng.uniform(0, 2 * np.pi)
    drift = rng.uniform(0.1, 0.5) * np.array([np.cos(direction), np.sin(direction)])
    centre = frame_centre + np.stack([wobble(rng, t, d, 0.4) for d in drift], -1)
    angle = wobble(rng, t, rng.uniform(-0.1, 0.1), 0.1)
    scale = np.exp(wobble(rng, t, 0.0, 0.003))
    origin = np.array([(width + 2 * pad - 1) / 2, (height + 2 * pad - 1) / 2])
    layers = [Layer(background, _FULL, origin, centre, angle, scale, "background", "background")]

    count = num_foreground if num_foreground is not None else int(rng.integers(1, 4))
    for _ in range(count):
        radius = rng.uniform(0.12, 0.22) * min(height, width) + 6
        mask, origin, kind = shape(rng, radius)
        surface = texture(rng, *mask.shape)
        start, end = frame_centre + rng.uniform(-0.3, 0.3, (2, 2)) * np.array([width, height])
        drift = (end - start) / num_frames
        centre = start + np.stack([wobble(rng, t, d, rng.uniform(0.8, 1.5)) for d in drift], -1)
        angle = rng.uniform(0, 360) + wobble(rng, t, rng.uniform(-1.2, 1.2), 0.6)
        scale = np.exp(wobble(rng, t, 0.0, 0.01))
        layers.append(Layer(surface, mask, origin, centre, angle, scale, kind, "object"))

    # Occluder: a long tilted bar crossing the frame horizontally, entering at frame ~0.
    bar_width = rng.uniform(0.1, 0.15) * width
    length = 2.2 * np.hypot(height, width)
    size_x, size_y = int(np.ceil(bar_width)) + 6, int(np.ceil(length)) + 6
    origin = np.array([(size_x - 1) / 2, (size_y - 1) / 2])
    half = np.array([[-bar_width / 2, -length / 2], [bar_width / 2, -length / 2]])
    corners = np.concatenate([half, -half]) + origin
    mask = polygon_mask(corners, size_y, size_x)
    surface = texture(rng, size_y, size_x)
    speed = min((width + 2 * bar_width) / (0.85 * num_frames), 3.0)
    sign = rng.choice([-1.0, 1.0])
    x = frame_centre[0] - sign * (frame_centre[0] + bar_width / 2) + sign * speed * t
    centre = np.stack([x, frame_centre[1] + 0 * t], -1)
    angle = rng.uniform(-20, 20) + wobble(rng, t, 0.0, 0.2)
    layers.append(Layer(surface, mask, origin, centre, angle, np.ones_like(t), "bar", "occluder"))
    return layers
