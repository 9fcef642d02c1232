"""Synthetic test videos with exact ground truth: textured layers under known similarity motions.

A video is a stack of layers, bottom to top: a textured background (id 0), 1-3 textured
foreground shapes (ids 1..L) and a textured bar that crosses the frame (id L + 1); conditions
(``mosic.stages.synthetic_conditions``: independent objects, exits and re-entries, fast
rotation, lighting drift, sensor noise, motion blur, low texture, a scene cut) change that
scene before it is rendered (``mosic.stages.synthetic_scene``). The ground-truth tracks are
computed from the same per-frame transforms as the pixels, so they agree with them.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from mosic.stages.synthetic_conditions import Condition
from mosic.stages.synthetic_scene import Scene, base_layers, render

SHAPE_CLASSES = ("background", "ellipse", "polygon", "bar")  # class id = index


@dataclass(frozen=True)
class SyntheticVideo:
    """A rendered video and what is needed to answer ground-truth queries.

    frames: (T, H, W, 3) uint8 RGB.
    masks: (T, H, W) uint8, id of the layer seen at each pixel (0 = background,
        1..L = foreground shapes, L + 1 = the occluding bar, then layers conditions add).
    transforms: (T, K, 2, 3) float64, canonical -> image similarity of each of the K layers
        (bottom to top) at each frame.
    shapes: K soft masks (h_k, w_k) float32 in [0, 1] over each layer's canonical coordinates;
        a layer covers a canonical point where the bilinear sample of its mask is >= 0.5
        (a ``"background"`` layer covers every point).
    kinds: K names from ``SHAPE_CLASSES``, what each layer is (its semantic class).
    roles: K roles (``"background"``, ``"object"``, ``"occluder"``); () means layer 0 is the
        only background.
    present: (T, K) bool, the frames each layer exists in (a scene cut replaces every layer);
        None means every layer in every frame.
    """

    frames: np.ndarray
    masks: np.ndarray
    transforms: np.ndarray
    shapes: tuple[np.ndarray, ...]
    kinds: tuple[str, ...]
    roles: tuple[str, ...] = ()
    present: np.ndarray | None = None

    def class_masks(self) -> np.ndarray:
        """Semantic labels (T, H, W) uint8: the ``SHAPE_CLASSES`` index of the layer seen at
        each pixel, so that a label names what a thing is, not where it lies in the stack."""
        lookup = np.array([SHAPE_CLASSES.index(kind) for kind in self.kinds], np.uint8)
        return lookup[self.masks]

    def _exists(self, layer: int, frame: int | np.ndarray) -> np.ndarray | bool:
        """Whether ``layer`` exists at ``frame`` (scalar or (N,))."""
        return True if self.present is None else self.present[frame, layer]

    def _covers(self, layer: int, frame: int | np.ndarray, points: np.ndarray) -> np.ndarray:
        """Whether ``layer`` covers image ``points`` (N, 2) at ``frame`` (scalar or (N,)), (N,)."""
        background = self.roles[layer] == "background" if self.roles else layer == 0
        if background:
            covered = np.ones(len(points), bool)
        else:
            canonical = _apply(_invert(self.transforms[frame, layer]), points)
            covered = _bilinear(self.shapes[layer], canonical) >= 0.5
        return covered & self._exists(layer, frame)

    def ground_truth(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact tracks of query points, followed forward from their own frame.

        queries: (N, 3) rows ``(t, x, y)``, t a frame index, (x, y) pixels.
        Returns positions (T, N, 2) float32 (x, y), NaN before each query's frame, and
        visible (T, N) bool: inside the frame, its layer present and not covered by a layer
        above the point's own.
        """
        num_frames, height, width = self.masks.shape
        t = np.round(queries[:, 0]).astype(int)
        points = queries[:, 1:3].astype(np.float64)
        layer = np.zeros(len(queries), int)
        for k in range(len(self.shapes)):
            layer[self._covers(k, t, points)] = k
        canonical = _apply(_invert(self.transforms[t, layer]), points)  # (N, 2)
        positions = _apply(self.transforms[:, layer], canonical[None])  # (T, N, 2)
        inside = (
            (positions[..., 0] >= 0)
            & (positions[..., 0] <= width - 1)
            & (positions[..., 1] >= 0)
            & (positions[..., 1] <= height - 1)
        )
        visible = inside
        if self.present is not None:
            visible &= self.present[:, layer]
        for s in range(num_frames):
            for k in range(1, len(self.shapes)):
                above = layer < k
                if above.any():
                    frame_s = np.full(above.sum(), s)
                    covered = self._covers(k, frame_s, positions[s, above])
                    visible[s, np.flatnonzero(above)[covered]] = False
        started = np.arange(num_frames)[:, None] >= t[None, :]
        positions[~started] = np.nan
        return positions.astype(np.float32), visible & started


def _invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of affine maps (..., 2, 3) -> (..., 2, 3)."""
    linear = np.linalg.inv(matrix[..., :2])
    offset = -np.einsum("...ij,...j->...i", linear, matrix[..., 2])
    return np.concatenate([linear, offset[..., None]], axis=-1)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Affine maps (..., 2, 3) applied to points (..., 2) (broadcast) -> (..., 2)."""
    return np.einsum("...ij,...j->...i", matrix[..., :2], points) + matrix[..., 2]


def _bilinear(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples of a 2-D ``image`` at (N, 2) (x, y) points, 0 outside, (N,)."""
    padded = np.pad(image, 1)
    x = np.clip(points[:, 0] + 1, 0, padded.shape[1] - 1.001)
    y = np.clip(points[:, 1] + 1, 0, padded.shape[0] - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    top = padded[y0, x0] * (1 - fx) + padded[y0, x0 + 1] * fx
    bottom = padded[y0 + 1, x0] * (1 - fx) + padded[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def make_video(
    seed: int,
    *,
    num_frames: int = 80,
    height: int = 128,
    width: int = 160,
    num_foreground: int | None = None,
    noise: float = 2.0,
    conditions: Sequence[Condition] = (),
) -> SyntheticVideo:
    """Render a deterministic synthetic video for ``seed``.

    The plain scene (``synthetic_scene.base_layers``): a slowly drifting background, 1-3
    foreground shapes (``num_foreground``) and a bar sweeping across the frame; Gaussian pixel
    noise of std ``noise``. Each of ``conditions`` then edits the scene, in the order of their
    ``stage`` (add layers, cut, motion, appearance, camera), each with its own random stream
    (seeded by ``seed`` and its name), so a condition added or removed leaves the draws of the
    others, and the plain scene, unchanged. Returns frames (T, H, W, 3) uint8 and the ground
    truth.
    """
    rng = np.random.default_rng(seed)
    scene = Scene(num_frames, height, width)
    scene.layers = base_layers(rng, num_frames, height, width, num_foreground)
    for condition in sorted(conditions, key=lambda c: c.stage):
        stream = np.random.default_rng([seed, zlib.crc32(condition.name.encode())])
        condition.apply(scene, stream)
    frames, masks = render(scene, rng, noise)
    transforms = np.stack([layer.transforms() for layer in scene.layers], axis=1)
    present = scene.present()
    return SyntheticVideo(
        frames,
        masks,
        transforms,
        tuple(layer.shape for layer in scene.layers),
        tuple(layer.kind for layer in scene.layers),
        tuple(layer.role for layer in scene.layers),
        None if present.all() else present,
    )


def write_frame_folder(video: SyntheticVideo, folder: str | Path, ext: str = "jpg") -> Path:
    """Write frames as ``00000.<ext>``, ``00001.<ext>``... (the DAVIS JPEGImages layout).

    video.frames: (T, H, W, 3) uint8 RGB. Returns the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    options = {"quality": 95} if ext.lower() in ("jpg", "jpeg") else {}
    for i, frame in enumerate(video.frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.{ext}", **options)
    return folder


def write_video_file(video: SyntheticVideo, path: str | Path, fps: int = 24) -> Path:
    """Encode frames (T, H, W, 3) uint8 RGB (H and W even) to a video file with PyAV.

    ``.mp4`` (and other suffixes) use libx264, ``.avi`` uses mpeg4; pixels are yuv420p.
    Returns the path.
    """
    path = Path(path)
    _, height, width, _ = video.frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs an even frame size, got {height}x{width}")
    codec = "mpeg4" if path.suffix.lower() == ".avi" else "libx264"
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "17"}
        else:
            stream.bit_rate = 8_000_000
        for frame in video.frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path
