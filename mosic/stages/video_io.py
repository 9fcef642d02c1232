"""Stage one's input: find the videos and decode them to RGB uint8 frames at storage size.

A video is a video file (decoded with PyAV) or a folder of frame images (read with PIL, sorted
by name in natural order). Every frame is resized as soon as it is decoded, so memory follows
the storage size, not the source size.

Frame conversions: grayscale, palette, CMYK and the like become RGB through PIL; alpha is
dropped (colour values kept as they are, not composited onto a background); 16-bit frames
(PIL modes ``I;16*`` and ``I``) become 8-bit by ``>> 8``, a fixed scale, so the brightness of a
frame does not depend on its content and frames of one video stay comparable.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

_SIZE = re.compile(r"(\d+)(?:[xX](\d+))?")
_PIL_LIMIT = threading.Lock()


class VideoError(Exception):
    """A video that cannot be used; str() is one line: '<path>: <reason>'."""

    def __init__(self, path: Path, reason: str):
        self.path = path
        self.reason = " ".join(reason.split())
        super().__init__(f"{path}: {self.reason}")

    def __reduce__(self) -> tuple:
        """Pickled with its own arguments (it crosses from the I/O child process)."""
        return type(self), (self.path, self.reason)


@dataclass(frozen=True)
class VideoSource:
    """One input video: a video file or a folder of frames, and its name under the input root."""

    path: Path
    name: str


@dataclass(frozen=True)
class SizeSpec:
    """Storage size of frames: the shorter side in pixels (aspect ratio kept), or a fixed size.

    ``fixed`` is (width, height) and wins over ``shorter_side``, which it sets to None.
    """

    shorter_side: int | None = 256
    fixed: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.fixed is not None:
            object.__setattr__(self, "shorter_side", None)
        sides = self.fixed or (self.shorter_side,)
        if any(side is None or side < 1 for side in sides):
            raise ValueError(f"size must be at least 1 pixel per side, got {self}")

    @classmethod
    def parse(cls, text: str) -> SizeSpec:
        """'256' -> shorter side 256; '320x240' -> fixed WIDTHxHEIGHT (like ffmpeg -s)."""
        match = _SIZE.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f"invalid size {text!r}: expected a shorter side like '256' "
                "or WIDTHxHEIGHT like '320x240'"
            )
        width, height = match.groups()
        if height is None:
            return cls(shorter_side=int(width))
        return cls(fixed=(int(width), int(height)))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of a height x width frame after resizing (half pixels round up)."""
        if self.fixed is not None:
            return self.fixed[1], self.fixed[0]
        side = self.shorter_side
        if height <= width:
            return side, (2 * width * side + height) // (2 * height)
        return (2 * height * side + width) // (2 * width), side

    def __str__(self) -> str:
        if self.fixed is not None:
            return f"{self.fixed[0]}x{self.fixed[1]}"
        return str(self.shorter_side)


@dataclass(frozen=True)
class DecodedVideo:
    """A decoded video at storage size.

    frames: (T, H, W, 3) uint8 RGB, source frames 0, s, 2s, ... (s = frame_stride).
    original_size: (height, width) of the source frames.
    fps: source frame rate (video files) or None (frame folders).
    decoded_frames: source frames read, up to the last kept one when max_frames stopped the read
        (for a folder, frame files skipped by the stride count without being decoded).
    """

    frames: np.ndarray
    original_size: tuple[int, int]
    fps: float | None
    decoded_frames: int
    frame_stride: int


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _is_image(path: Path) -> bool:
    return not _hidden(path) and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def _is_video(path: Path) -> bool:
    return not _hidden(path) and path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file()


def _natural_key(path: Path) -> list[str | int]:
    """Sort key putting 'f2.jpg' before 'f10.jpg'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _frame_files(folder: Path) -> list[Path]:
    """The frame images of a folder, in natural name order."""
    return sorted(filter(_is_image, folder.iterdir()), key=_natural_key)


def _is_frame_folder(folder: Path) -> bool:
    """Whether a sub-folder is one video: it holds frame images, or nothing else to search.

    An empty or broken video folder is thus still listed, and reading it reports what is wrong.
    """
    entries = [entry for entry in folder.iterdir() if not _hidden(entry)]
    if any(map(_is_image, entries)):
        return True
    return not any(entry.is_dir() or _is_video(entry) for entry in entries)


def _walk(folder: Path, root: Path, seen: set[Path]) -> Iterator[VideoSource]:
    """Frame folders and video files under folder; frame folders are not searched further."""
    real = folder.resolve()
    if real in seen:  # a symlink loop
        return
    seen.add(real)
    for entry in folder.iterdir():
        if _hidden(entry):
            continue
        name = entry.relative_to(root).as_posix()
        if entry.is_dir():
            if _is_frame_folder(entry):
                yield VideoSource(entry, name)
            else:
                yield from _walk(entry, root, seen)
        elif _is_video(entry):
            yield VideoSource(entry, name)


def _read_list(list_file: Path) -> list[VideoSource]:
    """The paths a list file names, relative ones resolved against its folder."""
    base = list_file.absolute().parent
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ValueError(
            f"{list_file}: neither a video file ({', '.join(sorted(VIDEO_EXTENSIONS))}) "
            "nor a UTF-8 text list of paths"
        ) from None
    sources = {}
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            path = Path(os.path.normpath(base / entry))
            name = (path.relative_to(base) if path.is_relative_to(base) else path).as_posix()
            sources[name] = VideoSource(path, name)
    return list(sources.values())


def list_sources(src: Path) -> list[VideoSource]:
    """The videos of an input, sorted by name.

    src is a folder of frame folders and/or video files (searched recursively; a folder holding
    only ``JPEGImages`` stands for that folder; a folder of frames is itself one video; a
    sub-folder with no images, videos or sub-folders is a video that will fail to read), a text
    file listing such paths (one per line, blank lines and '#' comments skipped; listed paths are
    returned even when missing), or a single video file. Hidden entries are skipped.
    """
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"input not found: {src}")
    if not src.is_dir():
        if src.suffix.lower() in VIDEO_EXTENSIONS:
            return [VideoSource(src.absolute(), src.name)]
        return sorted(_read_list(src), key=lambda source: source.name)
    root = src.absolute()
    visible = [entry for entry in root.iterdir() if not _hidden(entry)]
    if [entry.name for entry in visible] == ["JPEGImages"] and visible[0].is_dir():
        root = visible[0]
    if _frame_files(root):
        return [VideoSource(root, root.name)]
    return sorted(_walk(root, root, set()), key=lambda source: source.name)


def _message(exc: BaseException) -> str:
    """An exception's text, without the file name that FFmpeg and OSError errors append."""
    text = getattr(exc, "strerror", None)
    if text:
        return text
    if isinstance(exc, OSError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def _resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (height, width, 3) uint8; INTER_AREA shrinks, INTER_LINEAR enlarges."""
    if frame.shape[:2] == (height, width):
        return frame
    shrink = height * width < frame.shape[0] * frame.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(frame, (width, height), interpolation=interpolation)


class _Kept:
    """Source frames 0, stride, 2 * stride, ... resized to storage size, at most max_frames."""

    def __init__(self, size: SizeSpec, stride: int, max_frames: int | None):
        self.size = size
        self.stride = stride
        self.max_frames = max_frames
        self.frames: list[np.ndarray] = []
        self.seen = 0
        self.original_size: tuple[int, int] | None = None

    def wants_next(self) -> bool:
        """Count the next source frame; True when it is to be kept (then pass it to add)."""
        self.seen += 1
        return (self.seen - 1) % self.stride == 0

    def add(self, frame: np.ndarray, original_size: tuple[int, int]) -> None:
        """Keep a (h, w, 3) uint8 frame from a source of (height, width) original_size.

        All frames are resized to the storage size of the first one's original size.
        """
        if self.original_size is None:
            self.original_size = original_size
        self.frames.append(_resize(frame, *self.size.output_size(*self.original_size)))

    @property
    def full(self) -> bool:
        """Whether max_frames frames are kept."""
        return len(self.frames) == self.max_frames

    def result(self, path: Path, fps: float | None) -> DecodedVideo:
        """The kept frames as a video; VideoError when there are none."""
        if not self.frames:
            raise VideoError(path, "no frames decoded")
        return DecodedVideo(np.stack(self.frames), self.original_size, fps, self.seen, self.stride)


def _read_file(path: Path, kept: _Kept) -> DecodedVideo:
    """Decode a video file forward with PyAV, counting the frames that really decode."""
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(path, _message(exc)) from None
    with container:
        if not container.streams.video:
            raise VideoError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        try:
            for frame in container.decode(stream):
                if kept.wants_next():
                    kept.add(frame.to_ndarray(format="rgb24"), (frame.height, frame.width))
                    if kept.full:
                        break
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(
                path, f"decoding failed at frame {kept.seen}: {_message(exc)}"
            ) from None
    return kept.result(path, float(rate) if rate else None)


def _open_image(file: Path) -> Image.Image:
    """Image.open without PIL's decompression-bomb limit, for this module only.

    Frames may be huge photos (each is shrunk right after decoding). The limit is a global that
    Image.open reads, so it is lifted just for the open (which reads the header only), under a
    lock so that concurrent opens restore it correctly.
    """
    with _PIL_LIMIT:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(file)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _to_rgb(image: Image.Image) -> np.ndarray:
    """A PIL image as (h, w, 3) uint8 RGB; 16-bit and 32-bit integer gray scaled by >> 8."""
    if image.mode.startswith("I"):
        gray = (np.clip(np.asarray(image), 0, 65535) >> 8).astype(np.uint8)
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    return np.asarray(image.convert("RGB"))


def _read_image(file: Path, size: SizeSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """A frame file as (h, w, 3) uint8 RGB, and its original (height, width).

    JPEGs are decoded at a reduced scale (Image.draft) that is still at least the storage size.
    """
    with _open_image(file) as image:
        width, height = image.size
        out_height, out_width = size.output_size(height, width)
        image.draft(None, (out_width, out_height))
        return _to_rgb(image), (height, width)


def _read_folder(path: Path, kept: _Kept) -> DecodedVideo:
    """Read a folder of frame images; all must have the size of the first."""
    try:
        files = _frame_files(path)
    except OSError as exc:
        raise VideoError(path, _message(exc)) from None
    if not files:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise VideoError(path, f"no frame images ({extensions}) in the folder")
    for file in files:
        if not kept.wants_next():
            continue
        try:
            frame, original_size = _read_image(file, kept.size)
        except Exception as exc:  # PIL raises many types for a corrupt file
            raise VideoError(path, f"cannot read {file.name}: {_message(exc)}") from None
        if kept.original_size not in (None, original_size):
            (h0, w0), (h, w) = kept.original_size, original_size
            raise VideoError(path, f"{file.name} is {w}x{h} but {files[0].name} is {w0}x{h0}")
        kept.add(frame, original_size)
        if kept.full:
            break
    return kept.result(path, None)


def read_video(
    source: VideoSource, size: SizeSpec, *, frame_stride: int = 1, max_frames: int | None = None
) -> DecodedVideo:
    """Decode a video file or frame folder to (T, H, W, 3) uint8 RGB frames at storage size.

    Keeps source frames 0, frame_stride, 2 * frame_stride, ... and stops decoding once
    max_frames are kept. Raises VideoError (one line: path and reason) for a video that cannot
    be used, ValueError for bad arguments.
    """
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be at least 1, got {frame_stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1 or None, got {max_frames}")
    path = source.path
    kept = _Kept(size, frame_stride, max_frames)
    if path.is_dir():
        return _read_folder(path, kept)
    if path.is_file():
        return _read_file(path, kept)
    reason = "not a regular file or folder" if path.exists() else "no such file or folder"
    raise VideoError(path, reason)
