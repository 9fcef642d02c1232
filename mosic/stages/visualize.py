"""Pictures of tracks: points drawn over frames, hidden points hollow."""

from __future__ import annotations

import math
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image


def _unit(values: np.ndarray) -> np.ndarray:
    """Values rescaled to [0, 1] (NaN stays NaN)."""
    low, high = np.nanmin(values), np.nanmax(values)
    return (values - low) / max(float(high - low), 1e-6)


_SHIFT = 4  # cv2 draws at 1/16-pixel precision with shift=4


def _to_px(point: np.ndarray, scale: int) -> tuple[int, int]:
    """(x, y) (pixel centres at integers) -> cv2 fixed-point coordinates on the scaled canvas."""
    x, y = ((point + 0.5) * scale - 0.5) * (1 << _SHIFT)
    return int(round(x)), int(round(y))


def point_colours(points: np.ndarray) -> np.ndarray:
    """A colour per point from its first position, (N, 3) uint8 RGB (hue along x, value on y)."""
    x, y = _unit(points[:, 0]), _unit(points[:, 1])
    hsv = np.stack([x * 160, np.full_like(x, 255), 155 + y * 100], axis=1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def pick_points(num_points: int, about: int) -> np.ndarray:
    """Indices of a regular sub-grid of about ``about`` of a square grid's ``num_points``."""
    grid = math.isqrt(num_points)
    stride = max(1, math.ceil(grid / math.isqrt(max(about, 1))))
    return np.arange(grid * grid).reshape(grid, grid)[::stride, ::stride].ravel()


def draw_tracks(
    frames: np.ndarray, positions: np.ndarray, visible: np.ndarray, scale: int = 2, trail: int = 6
) -> np.ndarray:
    """Draw tracks over frames.

    frames: (F, H, W, 3) uint8; positions: (F, N, 2) (x, y) pixels; visible: (F, N) bool.
    Returns (F, H * scale, W * scale, 3) uint8: visible points filled, hidden points hollow,
    with a trail of the last ``trail`` visible positions.
    """
    colours = [tuple(int(c) for c in rgb) for rgb in point_colours(positions[0])]
    out = []
    for f, frame in enumerate(frames):
        canvas = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        for n, colour in enumerate(colours):
            if not np.all(np.isfinite(positions[f, n])):
                continue
            for g in range(max(0, f - trail), f):
                if visible[g, n] and visible[g + 1, n]:
                    start, end = _to_px(positions[g, n], scale), _to_px(positions[g + 1, n], scale)
                    cv2.line(canvas, start, end, colour, 1, cv2.LINE_AA, _SHIFT)
            centre = _to_px(positions[f, n], scale)
            if visible[f, n]:  # filled, with a dark rim
                cv2.circle(canvas, centre, 4 << _SHIFT, (0, 0, 0), -1, cv2.LINE_AA, _SHIFT)
                cv2.circle(canvas, centre, 3 << _SHIFT, colour, -1, cv2.LINE_AA, _SHIFT)
            else:  # hollow
                cv2.circle(canvas, centre, 3 << _SHIFT, colour, 2, cv2.LINE_AA, _SHIFT)
        out.append(canvas)
    return np.stack(out)


def contact_sheet(frames: np.ndarray, columns: int = 4) -> np.ndarray:
    """Tile frames (F, H, W, 3) into one (rows * H, columns * W, 3) image, row-major."""
    f, h, w, _ = frames.shape
    rows = -(-f // columns)
    sheet = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = frame
    return sheet


def write_frames(frames: np.ndarray, path: Path, fps: float = 8.0) -> None:
    """Write frames (F, H, W, 3) uint8 as a GIF or MP4 animation, or a PNG/JPEG contact sheet."""
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(
            path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
        )
    elif suffix == ".mp4":
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=int(fps))
            stream.height, stream.width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
            stream.pix_fmt = "yuv420p"
            for frame in frames:
                crop = frame[: stream.height, : stream.width]
                container.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
            container.mux(stream.encode())
    elif suffix in {".png", ".jpg", ".jpeg"}:
        Image.fromarray(contact_sheet(frames)).save(path)
    else:
        raise ValueError(f"{path}: unknown picture type {suffix!r} (use .gif, .mp4, .png or .jpg)")
