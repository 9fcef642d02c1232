"""Conditions of generated videos: composable edits of a scene before it is rendered.

A condition is a small frozen dataclass with a ``name``, a ``stage`` and ``apply(scene, rng)``,
which edits a ``synthetic_scene.Scene`` in place: it may add layers, remove them from frames
(``Layer.present``), change their motion (``centre``, ``angle``, ``scale``), their textures or
their own appearance over time (``Layer.gain``/``bias``), or what the camera adds (``Scene.gain``
/``bias``, ``exposure``, sensor noise). ``make_video(seed, conditions=[...])`` applies them in
the order of their stage, so any combination composes the same way whatever order it is given
in, and each draws from its own random stream. A new condition is one more class here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import ClassVar, Protocol

import cv2
import numpy as np

from mosic.stages.synthetic_scene import Layer, Scene, base_layers, shape, texture, wobble

# Stages, applied in this order: layers are added, a cut splits the video, then motion,
# appearance and the camera are changed (so a motion condition moves every added object).
ADD_LAYERS, CUT, MOTION, APPEARANCE, CAMERA = range(5)


class Condition(Protocol):
    """One property a generated video can have (see the module docstring)."""

    name: ClassVar[str]
    stage: ClassVar[int]

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        """Edit ``scene`` in place, drawing randomness from ``rng`` only."""
        ...


def _objects(scene: Scene) -> list[Layer]:
    """The layers that move on their own."""
    return [layer for layer in scene.layers if layer.role == "object"]


@dataclass(frozen=True)
class Objects:
    """Independent objects: ``count`` (lowest, highest) more textured shapes, each swinging
    on its own path through the middle of the frame at up to ``speed`` px/frame per axis, so
    they pass over each other and over the plain scene's shapes (below its bar)."""

    count: tuple[int, int] = (3, 5)
    speed: tuple[float, float] = (1.0, 3.5)
    name: ClassVar[str] = "objects"
    stage: ClassVar[int] = ADD_LAYERS

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        """Insert the objects under the first occluder (on top when there is none)."""
        t = np.arange(scene.num_frames, dtype=np.float64)
        extent = np.array([scene.width, scene.height], np.float64)
        roles = [layer.role for layer in scene.layers]
        at = roles.index("occluder") if "occluder" in roles else len(roles)
        for _ in range(int(rng.integers(self.count[0], self.count[1] + 1))):
            radius = rng.uniform(0.10, 0.18) * extent.min() + 6
            mask, origin, kind = shape(rng, radius)
            surface = texture(rng, *mask.shape)
            middle = (extent - 1) / 2 + rng.uniform(-0.15, 0.15, 2) * extent
            amplitude = rng.uniform(0.2, 0.4, 2) * extent
            omega = rng.uniform(*self.speed, 2) / amplitude
            phase = rng.uniform(0, 2 * np.pi, 2)
            centre = middle + amplitude * np.sin(omega * t[:, None] + phase)
            angle = rng.uniform(0, 360) + wobble(rng, t, rng.uniform(-1, 1), 0.5)
            scale = np.exp(wobble(rng, t, 0.0, 0.01))
            layer = Layer(surface, mask, origin, centre, angle, scale, kind, "object")
            scene.layers.insert(at, layer)


@dataclass(frozen=True)
class Exits:
    """Objects leave the frame entirely and come back: each object (with probability
    ``share``) is carried out through its nearest border and back by a smooth excursion of
    ``duration`` frames, fully outside for about the middle third of it."""

    share: float = 1.0
    duration: tuple[float, float] = (45.0, 65.0)
    name: ClassVar[str] = "exits"
    stage: ClassVar[int] = MOTION

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        """Add the excursion to each chosen object's path."""
        t = np.arange(scene.num_frames, dtype=np.float64)
        high = np.array([scene.width - 1, scene.height - 1], np.float64)
        for layer in _objects(scene):
            if rng.random() >= self.share:
                continue
            length = min(rng.uniform(*self.duration), scene.num_frames)
            start = rng.uniform(0, scene.num_frames - length)
            middle = int(round(start + length / 2))
            where = layer.centre[middle]
            gaps = np.concatenate([where, high - where])  # to the left, top, right, bottom
            side = int(np.argmin(gaps + rng.uniform(0, 0.25, 4) * high.max()))
            direction = np.zeros(2)
            direction[side % 2] = -1.0 if side < 2 else 1.0
            reach = 0.5 * max(layer.shape.shape) * float(layer.scale.max())
            distance = 1.3 * (gaps[side] + reach + 2)
            phase = np.clip((t - start) / length, 0, 1)
            excursion = 0.5 * (1 - np.cos(2 * np.pi * phase))
            layer.centre = layer.centre + distance * excursion[:, None] * direction


@dataclass(frozen=True)
class Rotation:
    """Fast rotation: each object turns steadily at ``rate`` (lowest, highest) degrees per
    frame, either way, plus a small wobble (instead of its own slow turn)."""

    rate: tuple[float, float] = (2.0, 4.0)
    name: ClassVar[str] = "rotation"
    stage: ClassVar[int] = MOTION

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        """Replace each object's angle path."""
        t = np.arange(scene.num_frames, dtype=np.float64)
        for layer in _objects(scene):
            turn = rng.choice([-1.0, 1.0]) * rng.uniform(*self.rate)
            layer.angle = layer.angle[0] + turn * t + wobble(rng, t, 0.0, 0.4)


@dataclass(frozen=True)
class Lighting:
    """Brightness and contrast drift over the clip: the camera's contrast moves smoothly
    within a factor ``contrast`` either way and its brightness by up to ``brightness`` grey
    levels; ``per_layer`` > 0 also drifts each layer's own gain within ``exp(+-per_layer)``
    (its mean kept)."""

    contrast: float = 1.4
    brightness: float = 30.0
    per_layer: float = 0.0
    name: ClassVar[str] = "lighting"
    stage: ClassVar[int] = APPEARANCE

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        """Set the scene's (and each layer's) gain and bias per frame."""
        t = np.arange(scene.num_frames, dtype=np.float64)
        gain = self.contrast ** _slow(rng, t)
        bias = 128.0 * (1 - gain) + self.brightness * _slow(rng, t)
        scene.gain, scene.bias = gain.astype(np.float32), bias.astype(np.float32)
        if self.per_layer > 0:
            for layer in scene.layers:
                own = np.exp(self.per_layer * _slow(rng, t))
                layer.gain = own.astype(np.float32)
                layer.bias = ((1 - own) * layer.texture.mean()).astype(np.float32)


def _slow(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A slow smooth path in [-1, 1] over ``t`` (T,): a sine of period 1-2 clips."""
    period = rng.uniform(1.0, 2.0) * max(len(t), 2)
    return np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))


@dataclass(frozen=True)
class SensorNoise:
    """Sensor noise: std ``sqrt(read**2 + shot * pixel)`` grey levels, fresh every frame."""

    read: float = 3.0
    shot: float = 0.25
    name: ClassVar[str] = "noise"
    stage: ClassVar[int] = CAMERA

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        """Set the scene's sensor noise (drawn when rendering)."""
        scene.read_noise, scene.shot_noise = self.read, self.shot


@dataclass(frozen=True)
class MotionBlur:
    """Motion blur: the shutter stays open ``exposure`` of the frame interval, and each frame
    averages the scene over that time (positions are those at the middle)."""

    exposure: float = 0.6
    name: ClassVar[str] = "blur"
    stage: ClassVar[int] = CAMERA

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        """Set the scene's exposure."""
        scene.exposure = self.exposure


@dataclass(frozen=True)
class LowTexture:
    """Weak texture: plain regions covering about ``share`` of the background (sky, a wall)
    and plain objects (each with probability ``objects``), their texture's contrast scaled by
    ``contrast`` and its fine detail blurred away."""

    share: float = 0.4
    objects: float = 0.3
    contrast: float = 0.1
    name: ClassVar[str] = "low-texture"
    stage: ClassVar[int] = APPEARANCE

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        """Flatten part of each background and whole objects."""
        for layer in scene.layers:
            plain = self._plain(layer.texture)
            if layer.role == "background":
                field = cv2.GaussianBlur(
                    rng.standard_normal(layer.texture.shape[:2]).astype(np.float32), (0, 0), 24
                )
                edge = np.quantile(field, 1 - self.share)
                region = np.clip((field - edge) / (0.2 * field.std()) + 0.5, 0, 1)[..., None]
                layer.texture = region * plain + (1 - region) * layer.texture
            elif layer.role == "object" and rng.random() < self.objects:
                layer.texture = plain

    def _plain(self, surface: np.ndarray) -> np.ndarray:
        """(h, w, 3) float32 ``surface`` with ``contrast`` of its coarse variation only."""
        mean = surface.mean(axis=(0, 1))
        smooth = cv2.GaussianBlur(surface, (0, 0), 6)
        return (mean + self.contrast * (smooth - mean)).astype(np.float32)


@dataclass(frozen=True)
class SceneCut:
    """A scene cut: from frame ``round(at * T)`` on, another plain scene (its own background,
    shapes and bar) replaces every layer; nothing seen before the cut is visible after it."""

    at: float = 0.5
    name: ClassVar[str] = "scene-cut"
    stage: ClassVar[int] = CUT

    def apply(self, scene: Scene, rng: np.random.Generator) -> None:
        """End every layer at the cut and add the next scene's layers from it."""
        cut = int(round(self.at * scene.num_frames))
        before = np.arange(scene.num_frames) < cut
        for layer in scene.layers:
            layer.present = before if layer.present is None else layer.present & before
        after = base_layers(rng, scene.num_frames, scene.height, scene.width, None)
        for layer in after:
            layer.present = ~before
        scene.layers.extend(after)


HARD = (Objects(), Exits(), Rotation(), Lighting(), SensorNoise(), MotionBlur(), LowTexture())
CONDITIONS: dict[str, Condition] = {c.name: c for c in (*HARD, SceneCut())}


def conditions_named(names: str) -> tuple[Condition, ...]:
    """Conditions from a comma-separated list of ``CONDITIONS`` names; ``"all"`` is ``HARD``
    (every condition but the scene cut), ``""`` none."""
    if names.strip() == "all":
        return HARD
    chosen = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name not in CONDITIONS:
            close = difflib.get_close_matches(name, CONDITIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(CONDITIONS)
            raise ValueError(f"unknown condition {name!r}{hint}; known: all, {known}")
        chosen.append(CONDITIONS[name])
    return tuple(chosen)
