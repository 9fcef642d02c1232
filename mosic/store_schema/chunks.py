"""Encoding and decoding one chunk: a frame (JPEG or raw pixels) or a query set's tracks.

Each function is the exact codec chain that ``layout`` writes into the arrays' ``zarr.json``
(vlen-bytes [+ zstd] + crc32c for frames, bytes + blosc + crc32c for tracks), so plain zarr
decodes what these encode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simplejpeg
from numcodecs import Blosc, Zstd

from mosic.store_schema import layout
from mosic.store_schema.errors import DamagedData
from mosic.store_schema.shards import with_crc

_ZSTD = Zstd(level=layout.RAW_ZSTD_LEVEL)
_BLOSC = Blosc(
    cname=layout.BLOSC["cname"], clevel=layout.BLOSC["clevel"], shuffle=Blosc.SHUFFLE,
    blocksize=layout.BLOSC["blocksize"],
)  # fmt: skip


@dataclass(frozen=True)
class FrameCodec:
    """How frames are stored: ``jpeg`` at ``quality`` (4:2:0 chroma), or ``raw`` (lossless)."""

    name: str = layout.DEFAULT_FRAME_CODEC
    quality: int = layout.DEFAULT_JPEG_QUALITY

    def __post_init__(self) -> None:
        if self.name not in layout.FRAME_CODECS:
            raise ValueError(f"--frame-codec {self.name!r}: use one of {layout.FRAME_CODECS}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"--jpeg-quality {self.quality}: use 1 to 100")

    def attrs(self) -> dict:
        """What the store records (the root's ``frame_codec`` attribute)."""
        return {"name": self.name, "quality": self.quality if self.name == "jpeg" else None}

    @classmethod
    def from_attrs(cls, attrs: dict) -> FrameCodec:
        """The codec a store recorded."""
        return cls(attrs["name"], attrs.get("quality") or layout.DEFAULT_JPEG_QUALITY)

    def encode(self, frame: np.ndarray) -> bytes:
        """One (H, W, 3) uint8 RGB frame -> its chunk's bytes."""
        if self.name == "jpeg":
            payload = simplejpeg.encode_jpeg(
                np.ascontiguousarray(frame), quality=self.quality, colorspace="RGB",
                colorsubsampling="420",
            )  # fmt: skip
        else:
            payload = np.ascontiguousarray(frame, np.uint8).tobytes()
        element = len(payload).to_bytes(4, "little")
        chunk = b"\x01\x00\x00\x00" + element + payload  # vlen-bytes: count, length, bytes
        return with_crc(_ZSTD.encode(chunk) if self.name == "raw" else chunk)

    def decode(
        self, body: bytes, height: int, width: int, where: str, out: np.ndarray | None = None
    ) -> np.ndarray:
        """A checked chunk body (CRC32C removed) -> the (height, width, 3) uint8 frame, decoded
        into ``out`` (a C-contiguous (height, width, 3) uint8 array) when given."""
        out = np.empty((height, width, 3), np.uint8) if out is None else out
        try:
            raw = bytes(_ZSTD.decode(body)) if self.name == "raw" else body
            count, length = np.frombuffer(raw[:8], "<u4")
            payload = raw[8 : 8 + length]
            if count != 1 or len(payload) != length:
                raise ValueError("not one element")
            if self.name == "jpeg":
                shape = simplejpeg.decode_jpeg_header(payload)[:2]
                if shape != (height, width):
                    raise DamagedData(f"{where}: a {shape} frame, expected {height}x{width}")
                simplejpeg.decode_jpeg(payload, colorspace="RGB", buffer=out)
            elif length != height * width * 3:
                raise DamagedData(f"{where}: {length} bytes, expected a {height}x{width} frame")
            else:
                out[...] = np.frombuffer(payload, np.uint8).reshape(height, width, 3)
        except (ValueError, RuntimeError) as exc:
            raise DamagedData(f"{where}: undecodable ({exc})") from None
        return out


def encode_tracks(positions: np.ndarray, visible: np.ndarray, confidence: np.ndarray | None
                  ) -> list[bytes]:  # fmt: skip
    """Query sets' tracks -> one chunk each.

    positions (Q, horizon, N, 2) (x, y); visible (Q, horizon, N) bool; confidence
    (Q, horizon, N) or None. A chunk is (C, horizon, N) float16: x, y, visible [, confidence].
    """
    channels = [positions[..., 0], positions[..., 1], visible]
    if confidence is not None:
        channels.append(confidence)
    with np.errstate(over="ignore"):  # a diverged track beyond float16's range becomes inf
        stacked = np.stack(channels, axis=1).astype(layout.TRACK_DTYPE)
    return [with_crc(_BLOSC.encode(np.ascontiguousarray(q))) for q in stacked]


def decode_tracks(body: bytes, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A checked tracks chunk body -> (C, horizon, N) float16."""
    try:
        out = np.frombuffer(_BLOSC.decode(body), layout.TRACK_DTYPE)
        return out.reshape(shape)
    except (ValueError, RuntimeError) as exc:
        raise DamagedData(f"{where}: undecodable ({exc})") from None


def split_tracks(tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(..., C, horizon, N) float16 -> positions (..., horizon, N, 2) float32 (x, y),
    visible (..., horizon, N) bool, confidence (..., horizon, N) float32 or None."""
    positions = np.stack([tracks[..., 0, :, :], tracks[..., 1, :, :]], axis=-1).astype(np.float32)
    visible = tracks[..., 2, :, :] > 0.5
    confidence = tracks[..., 3, :, :].astype(np.float32) if tracks.shape[-3] > 3 else None
    return positions, visible, confidence
