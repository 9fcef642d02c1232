"""Synthetic test videos with exact ground truth: textured layers under known similarity motions.

A video is a stack of layers, bottom to top: a textured background (id 0), 1-3 textured
foreground shapes (ids 1..L) and a textured bar that crosses the frame (id L + 1). Each layer
has a texture and a soft shape mask in its own canonical coordinates and a similarity transform
per frame (canonical -> image pixels). Frames are rendered by inverse-warping every layer with
``cv2.warpAffine`` (which, like mosic, puts pixel centres at integer coordinates) and
compositing, so the ground-truth tracks, computed from the same transforms, agree with the
pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

_SUPERSAMPLE = 8  # shape masks are drawn this much finer, then box-filtered (soft edges)
_POLY_SHIFT = 4  # cv2.fillPoly fixed-point bits
SHAPE_CLASSES = ("background", "ellipse", "polygon", "bar")  # class id = index


@dataclass(frozen=True)
class SyntheticVideo:
    """A rendered video and what is needed to answer ground-truth queries.

    frames: (T, H, W, 3) uint8 RGB.
    masks: (T, H, W) uint8, id of the layer seen at each pixel (0 = background,
        1..L = foreground shapes, L + 1 = the occluding bar).
    transforms: (T, K, 2, 3) float64, canonical -> image similarity of each of the K layers
        (K = L + 2, bottom to top) at each frame.
    shapes: K soft masks (h_k, w_k) float32 in [0, 1] over each layer's canonical coordinates;
        a layer covers a canonical point where the bilinear sample of its mask is >= 0.5.
    kinds: K names from ``SHAPE_CLASSES``, what each layer is (its semantic class).
    """

    frames: np.ndarray
    masks: np.ndarray
    transforms: np.ndarray
    shapes: tuple[np.ndarray, ...]
    kinds: tuple[str, ...]

    def class_masks(self) -> np.ndarray:
        """Semantic labels (T, H, W) uint8: the ``SHAPE_CLASSES`` index of the layer seen at
        each pixel, so that a label names what a thing is, not where it lies in the stack."""
        lookup = np.array([SHAPE_CLASSES.index(kind) for kind in self.kinds], np.uint8)
        return lookup[self.masks]

    def _covers(self, layer: int, frame: int | np.ndarray, points: np.ndarray) -> np.ndarray:
        """Whether ``layer`` covers image ``points`` (N, 2) at ``frame`` (scalar or (N,)), (N,)."""
        if layer == 0:
            return np.ones(len(points), bool)
        canonical = _apply(_invert(self.transforms[frame, layer]), points)
        return _bilinear(self.shapes[layer], canonical) >= 0.5

    def ground_truth(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact tracks of query points, followed forward from their own frame.

        queries: (N, 3) rows ``(t, x, y)``, t a frame index, (x, y) pixels.
        Returns positions (T, N, 2) float32 (x, y), NaN before each query's frame, and
        visible (T, N) bool: inside the frame and not covered by a layer above the point's own.
        """
        num_frames, height, width = self.masks.shape
        t = np.round(queries[:, 0]).astype(int)
        points = queries[:, 1:3].astype(np.float64)
        layer = np.zeros(len(queries), int)
        for k in range(1, len(self.shapes)):
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


def _similarity(centre: np.ndarray, angle: np.ndarray, scale: np.ndarray, origin) -> np.ndarray:
    """(T, 2, 3) maps: canonical ``origin`` -> ``centre`` (T, 2), rotated by ``angle`` (T,)
    degrees (counter-clockwise on screen) and scaled by ``scale`` (T,)."""
    rad = np.deg2rad(angle)
    cos, sin = np.cos(rad) * scale, np.sin(rad) * scale
    linear = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2)
    offset = centre - np.einsum("tij,j->ti", linear, np.asarray(origin, np.float64))
    return np.concatenate([linear, offset[..., None]], axis=-1)


def _wobble(rng: np.random.Generator, t: np.ndarray, rate: float, swing: float) -> np.ndarray:
    """A smooth 1-D path from 0: drift ``rate`` per frame plus a sine whose speed peaks at
    ``swing`` per frame, (T,)."""
    period = rng.uniform(60, 140)
    omega = 2 * np.pi / period
    phase = rng.uniform(0, 2 * np.pi)
    amplitude = swing / omega
    return rate * t + amplitude * (np.sin(omega * t + phase) - np.sin(phase))


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
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


def _polygon_mask(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
    """Soft mask (height, width) float32 of a polygon (V, 2) given in pixel-centre (x, y)."""
    f = _SUPERSAMPLE
    canvas = np.zeros((height * f, width * f), np.uint8)
    fine = ((vertices + 0.5) * f - 0.5) * (1 << _POLY_SHIFT)
    cv2.fillPoly(canvas, [np.round(fine).astype(np.int32)], 255, cv2.LINE_8, _POLY_SHIFT)
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA) / np.float32(255)


def _shape(rng: np.random.Generator, radius: float) -> tuple[np.ndarray, np.ndarray, str]:
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
    return _polygon_mask(pts.T + centre, size, size), centre, kind


def make_video(
    seed: int,
    *,
    num_frames: int = 80,
    height: int = 128,
    width: int = 160,
    num_foreground: int | None = None,
    noise: float = 2.0,
) -> SyntheticVideo:
    """Render a deterministic synthetic video for ``seed``.

    Background: slow drift (<= ~1 px/frame), slight rotation and zoom. Foreground shapes
    (``num_foreground``, 1-3 at random when None): up to ~2.5 px/frame, ~1.8 deg/frame,
    ~1 %/frame zoom, free to leave the frame partly. A tilted textured bar sweeps across the
    whole frame at <= 3 px/frame, hiding every layer under it for a few frames. Gaussian
    pixel noise of std ``noise``. Returns frames (T, H, W, 3) uint8 and the ground truth.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames, dtype=np.float64)
    frame_centre = np.array([(width - 1) / 2, (height - 1) / 2])
    textures, shapes, transforms, kinds = [], [], [], ["background"]

    # Background: a texture larger than the frame by the farthest it can drift.
    pad = int(1.2 * num_frames + 0.2 * max(height, width)) + 8
    textures.append(_texture(rng, height + 2 * pad, width + 2 * pad))
    shapes.append(np.ones((1, 1), np.float32))
    direction = rng.uniform(0, 2 * np.pi)
    drift = rng.uniform(0.1, 0.5) * np.array([np.cos(direction), np.sin(direction)])
    centre = frame_centre + np.stack([_wobble(rng, t, d, 0.4) for d in drift], -1)
    angle = _wobble(rng, t, rng.uniform(-0.1, 0.1), 0.1)
    scale = np.exp(_wobble(rng, t, 0.0, 0.003))
    origin = ((width + 2 * pad - 1) / 2, (height + 2 * pad - 1) / 2)
    transforms.append(_similarity(centre, angle, scale, origin))

    # Foreground shapes.
    count = num_foreground if num_foreground is not None else int(rng.integers(1, 4))
    for _ in range(count):
        radius = rng.uniform(0.12, 0.22) * min(height, width) + 6
        mask, origin, kind = _shape(rng, radius)
        shapes.append(mask)
        kinds.append(kind)
        textures.append(_texture(rng, *mask.shape))
        start, end = frame_centre + rng.uniform(-0.3, 0.3, (2, 2)) * np.array([width, height])
        drift = (end - start) / num_frames
        centre = start + np.stack([_wobble(rng, t, d, rng.uniform(0.8, 1.5)) for d in drift], -1)
        angle = rng.uniform(0, 360) + _wobble(rng, t, rng.uniform(-1.2, 1.2), 0.6)
        scale = np.exp(_wobble(rng, t, 0.0, 0.01))
        transforms.append(_similarity(centre, angle, scale, origin))

    # Occluder: a long tilted bar crossing the frame horizontally, entering at frame ~0.
    bar_width = rng.uniform(0.1, 0.15) * width
    length = 2.2 * np.hypot(height, width)
    size_x, size_y = int(np.ceil(bar_width)) + 6, int(np.ceil(length)) + 6
    origin = np.array([(size_x - 1) / 2, (size_y - 1) / 2])
    half = np.array([[-bar_width / 2, -length / 2], [bar_width / 2, -length / 2]])
    corners = np.concatenate([half, -half]) + origin
    shapes.append(_polygon_mask(corners, size_y, size_x))
    kinds.append("bar")
    textures.append(_texture(rng, size_y, size_x))
    speed = min((width + 2 * bar_width) / (0.85 * num_frames), 3.0)
    sign = rng.choice([-1.0, 1.0])
    x = frame_centre[0] - sign * (frame_centre[0] + bar_width / 2) + sign * speed * t
    centre = np.stack([x, frame_centre[1] + 0 * t], -1)
    angle = rng.uniform(-20, 20) + _wobble(rng, t, 0.0, 0.2)
    transforms.append(_similarity(centre, angle, np.ones_like(t), origin))

    transforms = np.stack(transforms, axis=1)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    masks = np.zeros((num_frames, height, width), np.uint8)
    for s in range(num_frames):
        image = np.zeros((height, width, 3), np.float32)
        for k, (texture, shape) in enumerate(zip(textures, shapes, strict=True)):
            matrix = transforms[s, k]
            layer = cv2.warpAffine(
                texture,
                matrix,
                (width, height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT_101,
            )
            if k == 0:
                image = layer
                continue
            alpha = cv2.warpAffine(shape, matrix, (width, height), flags=cv2.INTER_LINEAR)
            image += alpha[..., None] * (layer - image)
            masks[s][alpha >= 0.5] = k
        image += noise * rng.standard_normal(image.shape).astype(np.float32)
        frames[s] = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return SyntheticVideo(frames, masks, transforms, tuple(shapes), tuple(kinds))


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
