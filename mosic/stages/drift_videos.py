"""Generated videos on which trajectories must matter: object categories whose appearance drifts.

Every video shows a textured background and 2-3 objects, each an instance of one of a few
shared categories (``CATEGORIES``). A category is its texture's *pattern* (stripes, dots,
checker); everything else is the instance's own and changes over time in ways the training
pipeline's image augmentation (one crop, flip and brightness/contrast/saturation jitter per
clip) never shows:

- colour: each object's two colours turn around the hue circle (3-6 degrees per frame) and its
  brightness swings, so the same physical point looks different a few frames later; the
  background's colours drift slowly (a slow change of light);
- geometry: objects translate (1.5-3 px per frame, across their own size within a clip),
  bounce off the frame's borders, rotate, scale and bend non-rigidly (a travelling wave in
  their own coordinates); the camera pans, rotates and zooms the background;
- occlusion: objects pass in front of each other and leave and re-enter the frame;
- instances: the pattern's period and orientation, the colours, the outline and the motion
  are drawn per video, so a held-out video shows new instances of the same categories.

A point's track therefore pairs it with itself under a change of colour, orientation and shape,
while the pixel at the same place a few frames later is most often another object. Ground
truth: exact tracks of any query point (``DriftVideo.ground_truth``), per-frame category masks
(``masks``, the ``CATEGORIES`` index seen at each pixel) and object masks (``objects``).

Rendering and tracks follow one map per layer (``mosic.stages.drift_layers``), so tracks and
pixels agree.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace

import cv2
import numpy as np

from mosic.stages.drift_layers import (
    CATEGORIES,
    Layer,
    compose,
    coverage,
    footprint,
    pattern,
    similarity,
    to_canonical,
    to_pixels,
)


@dataclass(frozen=True)
class DriftSettings:
    """How much changes over time (per frame unless said otherwise); 0 turns a change off."""

    hue_speed: tuple[float, float] = (3.0, 6.0)  # degrees per frame, object colours
    background_hue_speed: float = 1.0  # degrees per frame at most, background colours
    background_saturation: tuple[float, float] = (0.45, 0.9)  # of the background's colours
    background_value: tuple[float, float] = (0.45, 0.95)  # brightness of its colours
    object_size: tuple[float, float] = (0.18, 0.26)  # radius, fraction of the frame's height
    brightness_swing: float = 0.3  # relative amplitude of each object's brightness
    object_speed: tuple[float, float] = (1.5, 3.0)  # px per frame at 128 px frame width
    object_spin: float = 2.0  # degrees per frame at most
    bend: float = 2.5  # px, amplitude of the non-rigid wave (at 128 px)
    camera_speed: float = 1.0  # px per frame at most (at 128 px)
    noise: float = 2.0  # std of Gaussian pixel noise, grey levels


@dataclass(frozen=True)
class DriftScene:
    """What a video shows, before rendering: its size and layers (bottom to top)."""

    num_frames: int
    height: int
    width: int
    layers: tuple[Layer, ...]
    noise: float

    @property
    def categories(self) -> tuple[int, ...]:
        """The ``CATEGORIES`` index of each layer, bottom to top (0: the background)."""
        return tuple(layer.category for layer in self.layers)

    def ground_truth(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact tracks of query points, followed forward from their own frame.

        queries: (N, 3) rows ``(t, x, y)``, t a frame index, (x, y) pixels.
        Returns positions (T, N, 2) float32 (x, y), NaN before each query's frame, and visible
        (T, N) bool: inside the frame and not covered by a layer above the point's own.
        """
        num_frames, height, width = self.num_frames, self.height, self.width
        t0 = np.round(queries[:, 0]).astype(int)
        points = queries[:, 1:3].astype(np.float64)
        owner = np.zeros(len(queries), int)
        canonical = np.zeros_like(points)
        for k, layer in enumerate(self.layers):
            c = to_canonical(layer, t0, points)
            if k == 0:
                canonical[:] = c
                continue
            covered = coverage(layer, c) >= 0.5
            owner[covered], canonical[covered] = k, c[covered]
        positions = np.zeros((num_frames, len(queries), 2))
        for k, layer in enumerate(self.layers):
            mine = owner == k
            if mine.any():
                for t in range(num_frames):
                    positions[t, mine] = to_pixels(layer, t, canonical[mine])
        x, y = positions[..., 0], positions[..., 1]
        visible = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
        for t in range(num_frames):
            for k in range(1, len(self.layers)):
                below = owner < k
                if below.any():
                    c = to_canonical(self.layers[k], np.full(below.sum(), t), positions[t, below])
                    hidden = coverage(self.layers[k], c) >= 0.5
                    visible[t, np.flatnonzero(below)[hidden]] = False
        started = np.arange(num_frames)[:, None] >= t0[None, :]
        positions[~started] = np.nan
        return positions.astype(np.float32), visible & started


@dataclass(frozen=True)
class DriftVideo:
    """A rendered scene and its ground truth.

    frames: (T, H, W, 3) uint8 RGB.
    masks: (T, H, W) uint8, the ``CATEGORIES`` index seen at each pixel (0 = background).
    objects: (T, H, W) uint8, the layer seen at each pixel (0 = background, 1..L objects).
    scene: what was rendered (tracks: ``ground_truth``).
    """

    frames: np.ndarray
    masks: np.ndarray
    objects: np.ndarray
    scene: DriftScene

    def class_masks(self) -> np.ndarray:
        """Semantic labels (T, H, W) uint8: the category seen at each pixel (= ``masks``)."""
        return self.masks

    def ground_truth(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``DriftScene.ground_truth``: exact tracks of (t, x, y) queries (N, 3)."""
        return self.scene.ground_truth(queries)

    def every(self, step: int) -> DriftVideo:
        """Every ``step``-th frame, with its masks (tracks are no longer those of ``scene``)."""
        pick = slice(None, None, step)
        return replace(self, frames=self.frames[pick], masks=self.masks[pick],
                       objects=self.objects[pick])  # fmt: skip


def _smooth_path(rng: np.random.Generator, t: np.ndarray, speed: float) -> np.ndarray:
    """A smooth 1-D path from 0 whose speed stays below ``speed`` per frame, (T,)."""
    period = rng.uniform(40, 120)
    omega = 2 * np.pi / period
    phase = rng.uniform(0, 2 * np.pi)
    drift = rng.uniform(-0.5, 0.5) * speed
    amplitude = (speed - abs(drift)) / omega
    return drift * t + amplitude * (np.sin(omega * t + phase) - np.sin(phase))


def _colours(
    rng: np.random.Generator,
    t: np.ndarray,
    hue_speed: float,
    swing: float,
    saturation: tuple[float, float] = (0.45, 0.9),
    value: tuple[float, float] = (0.45, 0.95),
) -> np.ndarray:
    """Two colours per frame, (T, 2, 3) float32 RGB in [0, 255]: a random pair of hues that turns
    at ``hue_speed`` degrees per frame, brightness swinging by ``swing`` around its level."""
    hue = rng.uniform(0, 1) + np.array([0.0, rng.uniform(1 / 6, 1 / 2)])
    saturation = rng.uniform(*saturation, 2)
    value = rng.uniform(*value, 2)
    turn = hue_speed / 360 * t * rng.choice([-1.0, 1.0])
    light = 1 + swing * np.sin(2 * np.pi * t / rng.uniform(30, 60) + rng.uniform(0, 2 * np.pi))
    out = np.empty((len(t), 2, 3), np.float32)
    for i in range(len(t)):
        for j in range(2):
            v = min(value[j] * light[i], 1.0)
            out[i, j] = colorsys.hsv_to_rgb((hue[j] + turn[i]) % 1.0, saturation[j], v)
    return out * 255


def _background_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth noise (height, width) float32 in [0, 1]: blobs of about 20 px, no fine detail."""
    image = np.zeros((height, width), np.float32)
    for cell, weight in ((48, 1.0), (24, 0.7)):
        grid = rng.standard_normal((height // cell + 3, width // cell + 3)).astype(np.float32)
        up = cv2.resize(grid, (grid.shape[1] * cell, grid.shape[0] * cell), cv2.INTER_CUBIC)
        image += weight * up[cell : cell + height, cell : cell + width]
    image = (image - image.mean()) / (image.std() + 1e-6)
    return 1 / (1 + np.exp(-1.5 * image))


def make_drift_video(
    seed: int,
    *,
    num_frames: int = 48,
    height: int = 96,
    width: int = 128,
    num_objects: int | None = None,
    settings: DriftSettings = DriftSettings(),
) -> DriftVideo:
    """Render the deterministic video of ``seed``: a background and ``num_objects`` (2 or 3 at
    random when None) objects of random categories, changing as ``settings`` say."""
    scene = drift_scene(
        seed, num_frames=num_frames, height=height, width=width, num_objects=num_objects,
        settings=settings,
    )  # fmt: skip
    return render(scene, np.random.default_rng((seed, 1)))


def drift_scene(
    seed: int,
    *,
    num_frames: int = 48,
    height: int = 96,
    width: int = 128,
    num_objects: int | None = None,
    settings: DriftSettings = DriftSettings(),
) -> DriftScene:
    """The scene of ``make_drift_video`` (cheap: nothing is rendered)."""
    rng = np.random.default_rng(seed)
    s = settings
    unit = width / 128  # speeds and sizes are given at 128 px
    t = np.arange(num_frames, dtype=np.float64)
    centre = np.array([(width - 1) / 2, (height - 1) / 2])

    cam_shift = np.stack([_smooth_path(rng, t, s.camera_speed * unit) for _ in range(2)], -1)
    cam_angle = np.deg2rad(_smooth_path(rng, t, 0.3 * (s.camera_speed > 0)))
    cam_scale = np.exp(_smooth_path(rng, t, 0.004 * (s.camera_speed > 0)))
    # The camera: a similarity about the frame's centre.
    camera = compose(
        similarity(centre + cam_shift, cam_angle, cam_scale),
        similarity(-centre[None].repeat(num_frames, 0), 0 * t, 1 + 0 * t),
    )

    pad = int(s.camera_speed * unit * num_frames + 0.3 * max(height, width)) + 8
    texture = _background_texture(rng, height + 2 * pad, width + 2 * pad)
    origin = np.array([(width + 2 * pad - 1) / 2, (height + 2 * pad - 1) / 2])
    place = similarity(np.repeat((centre - origin)[None], num_frames, 0), 0 * t, 1 + 0 * t)
    layers = [
        Layer(
            category=0,
            maps=compose(camera, place),
            colours=_colours(
                rng,
                t,
                s.background_hue_speed * rng.uniform(0, 1),
                0.1,
                s.background_saturation,
                s.background_value,
            ),
            period=1.0,
            angle=0.0,
            radius=None,
            bend=np.zeros(6),
            texture=texture,
        )
    ]

    count = num_objects if num_objects is not None else int(rng.integers(2, 4))
    for _ in range(count):
        size = rng.uniform(*s.object_size) * min(height, width)
        angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        wobble = sum(
            rng.uniform(0, 0.12) * np.cos(k * angles + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
        )
        aspect = rng.uniform(0.7, 1.0)
        radius = size / np.sqrt((np.cos(angles) / 1) ** 2 + (np.sin(angles) / aspect) ** 2)
        radius = radius * (1 + wobble)
        start = centre + rng.uniform(-0.3, 0.3, 2) * np.array([width, height])
        speed = rng.uniform(*s.object_speed) * unit
        heading = rng.uniform(0, 2 * np.pi)
        turn = rng.uniform(-0.03, 0.03)  # radians per frame: curved paths
        direction = heading + turn * t
        steps = speed * np.stack([np.cos(direction), np.sin(direction)], -1)
        path = start + np.concatenate([np.zeros((1, 2)), np.cumsum(steps[:-1], 0)])
        # Bounce inside the frame (the centre stays within 5 % of it); paths are in pixels, so
        # the camera moves the background only.
        low, high = -0.05 * np.array([width, height]), 1.05 * np.array([width, height])
        span = high - low
        folded = np.mod(path - low, 2 * span)
        path = low + np.where(folded > span, 2 * span - folded, folded)
        spin = np.deg2rad(rng.uniform(0, 360) + _smooth_path(rng, t, s.object_spin))
        scale = np.exp(_smooth_path(rng, t, 0.01))
        bend = np.array(
            [
                s.bend * unit * rng.uniform(0.6, 1.0),
                2 * np.pi / (rng.uniform(1.2, 2.0) * size),  # wave number: a wave per object
                rng.uniform(0.15, 0.3) * rng.choice([-1, 1]),  # radians per frame
                rng.uniform(0, 2 * np.pi),
                rng.uniform(0, 2 * np.pi),
                rng.uniform(0, 2 * np.pi),
            ]
        )
        bend[0] = min(bend[0], 0.45 / bend[1])  # keep c + D(c) invertible by iteration
        layers.append(
            Layer(
                category=int(rng.integers(1, len(CATEGORIES))),
                maps=similarity(path, spin, scale),
                colours=_colours(rng, t, rng.uniform(*s.hue_speed), s.brightness_swing),
                period=rng.uniform(5.0, 9.0) * unit,
                angle=rng.uniform(0, np.pi),
                radius=radius,
                bend=bend,
                texture=None,
            )
        )

    return DriftScene(num_frames, height, width, tuple(layers), s.noise)


def render(scene: DriftScene, rng: np.random.Generator) -> DriftVideo:
    """Frames (with pixel noise from ``rng``), category and object masks of ``scene``."""
    num_frames, height, width, layers = scene.num_frames, scene.height, scene.width, scene.layers
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    pixels = np.stack([xs.ravel(), ys.ravel()], -1)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    masks = np.zeros((num_frames, height, width), np.uint8)
    objects = np.zeros((num_frames, height, width), np.uint8)
    for f in range(num_frames):
        image = np.zeros((height * width, 3), np.float32)
        label = np.zeros(height * width, np.uint8)
        owner = np.zeros(height * width, np.uint8)
        for k, layer in enumerate(layers):
            where = footprint(layer, f, height, width)
            if where.size == 0:
                continue
            c = to_canonical(layer, np.full(len(where), f), pixels[where])
            if layer.texture is not None:
                maps = c.astype(np.float32).reshape(height, width, 2)
                mix = cv2.remap(
                    layer.texture, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT_101,
                ).ravel()  # fmt: skip
                alpha = np.ones(len(where), np.float32)
            else:
                mix = pattern(layer, c).astype(np.float32)
                alpha = coverage(layer, c).astype(np.float32)
            a, b = layer.colours[f]
            colour = a + mix[:, None] * (b - a)
            image[where] += alpha[:, None] * (colour - image[where])
            covered = where[alpha >= 0.5]
            label[covered], owner[covered] = layer.category, k
        image += scene.noise * rng.standard_normal(image.shape).astype(np.float32)
        frames[f] = np.clip(np.round(image), 0, 255).astype(np.uint8).reshape(height, width, 3)
        masks[f] = label.reshape(height, width)
        objects[f] = owner.reshape(height, width)
    return DriftVideo(frames, masks, objects, scene)
