"""Tests of finding and decoding videos; every input is built for real on disk."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from mosic.stages.video_io import (
    DecodedVideo,
    SizeSpec,
    VideoError,
    VideoSource,
    list_sources,
    read_video,
)


def _solid(values: list[tuple[int, int, int]], height: int = 64, width: int = 96) -> np.ndarray:
    """(len(values), height, width, 3) uint8 frames, frame i filled with colour values[i]."""
    return np.stack([np.full((height, width, 3), v, np.uint8) for v in values])


def _write_video(path: Path, frames: np.ndarray, codec: str = "libx264") -> Path:
    """Encode (T, H, W, 3) uint8 RGB frames at 25 fps; skip the test if the encoder is missing."""
    try:
        av.codec.Codec(codec, "w")
    except av.codec.codec.UnknownCodecError:
        pytest.skip(f"the FFmpeg bundled with PyAV has no {codec} encoder")
    pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def _write_frames(folder: Path, images: list[Image.Image], ext: str = ".png") -> Path:
    """Save images as folder/00000<ext>, 00001<ext>, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(folder / f"{i:05d}{ext}")
    return folder


def _read(path: Path, size: str = "32", **kwargs) -> DecodedVideo:
    return read_video(VideoSource(path, path.name), SizeSpec.parse(size), **kwargs)


def _error(path: Path, **kwargs) -> str:
    """The one-line message of the VideoError that reading path raises."""
    with pytest.raises(VideoError) as info:
        _read(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message == f"{path}: {info.value.reason}"
    return message


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


# --- list_sources ------------------------------------------------------------------------------


def test_list_sources_folder(tmp_path: Path) -> None:
    for rel in ["sub/clip 01.mp4", "CLIP.MOV", "bear/00000.jpg", "bear/inner.mp4", "a/b/c/00.png"]:
        _touch(tmp_path / rel)
    for rel in [".hidden/x.mp4", "sub/.x.mp4", "notes.txt", "sub/x.gif", "broken/readme.md"]:
        _touch(tmp_path / rel)
    (tmp_path / "a/empty").mkdir()
    sources = list_sources(tmp_path)
    names = ["CLIP.MOV", "a/b/c", "a/empty", "bear", "broken", "sub/clip 01.mp4"]
    assert [s.name for s in sources] == names
    assert sources[3].path == tmp_path / "bear"
    assert all(s.path.is_absolute() for s in sources)


@pytest.mark.parametrize("point_at", ["parent", "JPEGImages"])
def test_list_sources_jpegimages(tmp_path: Path, point_at: str) -> None:
    for rel in ["JPEGImages/bear/00000.jpg", "JPEGImages/car/00000.jpg", ".DS_Store"]:
        _touch(tmp_path / rel)
    src = tmp_path if point_at == "parent" else tmp_path / "JPEGImages"
    assert [s.name for s in list_sources(src)] == ["bear", "car"]


def test_list_sources_frame_folder_and_single_video(tmp_path: Path) -> None:
    _touch(tmp_path / "bear/00000.jpg")
    _touch(tmp_path / "v.mp4")
    assert list_sources(tmp_path / "bear") == [VideoSource(tmp_path / "bear", "bear")]
    assert list_sources(tmp_path / "v.mp4") == [VideoSource(tmp_path / "v.mp4", "v.mp4")]


def test_list_sources_list_file(tmp_path: Path) -> None:
    _touch(tmp_path / "outside.mp4")
    listing = tmp_path / "lists" / "videos.txt"
    _touch(listing)
    lines = ["# a comment", "", "  b/clip.mp4  ", "missing/frames/", f"{tmp_path}/outside.mp4"]
    listing.write_text("\n".join([*lines, "b/clip.mp4", "../outside.mp4"]) + "\n")
    sources = list_sources(listing)
    outside = (tmp_path / "outside.mp4").as_posix()
    assert [s.name for s in sources] == [outside, "b/clip.mp4", "missing/frames"]
    assert sources[1].path == tmp_path / "lists/b/clip.mp4"
    assert sources[2].path == tmp_path / "lists/missing/frames"


def test_list_sources_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="input not found") as info:
        list_sources(tmp_path / "nope")
    assert "\n" not in str(info.value)
    binary = tmp_path / "frame.jpg"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match="neither a video file"):
        list_sources(binary)


# --- SizeSpec ----------------------------------------------------------------------------------


def test_size_spec() -> None:
    assert SizeSpec.parse(" 256 ") == SizeSpec() == SizeSpec(shorter_side=256)
    assert SizeSpec.parse("320x240") == SizeSpec(fixed=(320, 240))
    assert str(SizeSpec.parse("320X240")) == "320x240"
    assert str(SizeSpec.parse("256")) == "256"
    assert SizeSpec().output_size(480, 854) == (256, 455)
    assert SizeSpec().output_size(854, 480) == (455, 256)
    assert SizeSpec(shorter_side=3).output_size(4, 6) == (3, 5)  # 4.5 rounds up
    assert SizeSpec.parse("320x240").output_size(1080, 1920) == (240, 320)


@pytest.mark.parametrize("text", ["", "abc", "256x", "x256", "-5", "1.5", "0", "320x0"])
def test_size_spec_bad(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        SizeSpec.parse(text)


# --- read_video: video files -------------------------------------------------------------------


def test_read_mp4(tmp_path: Path) -> None:
    grey = [(12 * i,) * 3 for i in range(20)]
    path = _write_video(tmp_path / "clip.mp4", _solid(grey))
    video = _read(path)
    assert video.frames.shape == (20, 32, 48, 3)
    assert video.frames.dtype == np.uint8
    assert video.original_size == (64, 96)
    assert video.fps == 25.0
    assert (video.decoded_frames, video.frame_stride) == (20, 1)
    np.testing.assert_allclose(video.frames.mean(axis=(1, 2, 3)), 12 * np.arange(20), atol=4)


@pytest.mark.parametrize(
    ("stride", "max_frames", "kept", "decoded"),
    [(3, None, [0, 3, 6, 9, 12, 15, 18], 20), (3, 4, [0, 3, 6, 9], 10), (1, 5, range(5), 5)],
)
def test_read_stride_max_frames(
    tmp_path: Path, stride: int, max_frames: int | None, kept: list[int], decoded: int
) -> None:
    path = _write_video(tmp_path / "clip.mp4", _solid([(12 * i,) * 3 for i in range(20)]))
    video = _read(path, frame_stride=stride, max_frames=max_frames)
    assert (video.decoded_frames, video.frame_stride) == (decoded, stride)
    np.testing.assert_allclose(video.frames.mean(axis=(1, 2, 3)), 12 * np.array(kept), atol=4)


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("clip.mp4", "libx264"),
        ("clip.avi", "mpeg4"),
        ("clip.mov", "libx264"),
        ("clip.mkv", "ffv1"),
        ("clip.webm", "libvpx"),
    ],
)
def test_read_containers_keep_colour(tmp_path: Path, name: str, codec: str) -> None:
    colour = (200, 40, 90)
    path = _write_video(tmp_path / name, _solid([colour] * 6), codec)
    video = _read(path)
    assert video.frames.shape == (6, 32, 48, 3)
    np.testing.assert_allclose(video.frames.mean(axis=(0, 1, 2)), colour, atol=6)


def test_read_resize_modes(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "small.mp4", _solid([(90, 90, 90)] * 3, height=24, width=32))
    assert _read(path, "48").frames.shape == (3, 48, 64, 3)  # enlarged
    assert _read(path, "40x30").frames.shape == (3, 30, 40, 3)


def test_read_trusts_decoding_not_the_header(tmp_path: Path) -> None:
    """A truncated AVI whose header claims 30 frames and whose decoder just stops early."""
    frames = np.random.default_rng(0).integers(0, 256, (30, 48, 64, 3), np.uint8)
    full = _write_video(tmp_path / "full.avi", frames, "mpeg4").read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(full[: len(full) // 2])
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 30
    video = _read(path)
    assert 0 < video.decoded_frames < 30
    assert len(video.frames) == video.decoded_frames


def test_read_unicode_and_spaces(tmp_path: Path) -> None:
    (tmp_path / "dir ☃").mkdir()
    path = _write_video(tmp_path / "dir ☃" / "vidéo ☃.mp4", _solid([(50, 50, 50)] * 4))
    folder = _write_frames(tmp_path / "dir ☃" / "frames é x", [Image.new("RGB", (48, 32))] * 3)
    sources = list_sources(tmp_path / "dir ☃")
    assert [s.name for s in sources] == ["frames é x", "vidéo ☃.mp4"]
    assert [s.path for s in sources] == [folder, path]
    assert [len(read_video(s, SizeSpec.parse("16")).frames) for s in sources] == [3, 4]


# --- read_video: errors ------------------------------------------------------------------------


def test_error_missing(tmp_path: Path) -> None:
    assert "no such file or folder" in _error(tmp_path / "gone.mp4")


def test_error_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    assert "Invalid data" in _error(path)


def test_error_decoder_fails_mid_stream(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (30, 48, 64, 3), np.uint8)
    full = _write_video(tmp_path / "full.avi", frames, "mjpeg").read_bytes()
    path = tmp_path / "cut.avi"
    path.write_bytes(full[: len(full) // 2])
    message = _error(path)
    assert "decoding failed at frame" in message
    assert "Invalid data" in message
    assert int(message.split("at frame ")[1].split(":")[0]) > 0


def test_error_no_frames(tmp_path: Path) -> None:
    """An AVI cut right after its header: it opens, claims 30 frames and decodes none."""
    full = _write_video(tmp_path / "full.avi", _solid([(0, 0, 0)] * 30), "mpeg4").read_bytes()
    path = tmp_path / "header only.avi"
    path.write_bytes(full[: full.index(b"movi") + 4])
    assert "no frames decoded" in _error(path)


def test_error_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "audio.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), "s16", "mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    assert "no video stream" in _error(path)


def _error_as_nobody(path: Path) -> str:
    """The error reading path in a child process that runs as user nobody (when we are root)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: relative path from the file's folder, so no parent is searched
        message = "no error"
        try:
            os.chdir(path.parent)
            os.setgid(65534)
            os.setuid(65534)
            _read(Path(path.name))
        except VideoError as exc:
            message = str(exc)
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write_end, message.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    return message


def test_error_unreadable(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "locked.mp4", _solid([(0, 0, 0)] * 2))
    path.chmod(0)
    tmp_path.chmod(0o711)
    message = _error_as_nobody(path) if os.geteuid() == 0 else _error(path)
    assert message.endswith("locked.mp4: Permission denied")


@pytest.mark.parametrize("junk", [[], ["notes.txt", "clip.gif"]])
def test_error_folder_without_images(tmp_path: Path, junk: list[str]) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in junk:
        (folder / name).write_text("x")
    assert "no frame images" in _error(folder)


def test_error_mixed_sizes(tmp_path: Path) -> None:
    sizes = [(32, 24), (32, 24), (40, 30), (32, 24)]
    folder = _write_frames(tmp_path / "frames", [Image.new("RGB", s) for s in sizes])
    assert _error(folder).endswith("00002.png is 40x30 but 00000.png is 32x24")


@pytest.mark.parametrize("corrupt", ["truncated", "noise"])
def test_error_corrupt_image(tmp_path: Path, corrupt: str) -> None:
    folder = _write_frames(tmp_path / "frames", [Image.new("RGB", (64, 48), "red")] * 3, ".jpg")
    bad = folder / "00001.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 48, 3), np.uint8)
    Image.fromarray(noise).save(bad)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if corrupt == "truncated" else data[::-1])
    assert "cannot read 00001.jpg: " in _error(folder)


# --- read_video: frame folders and conversions -------------------------------------------------


def test_read_folder_order_stride_and_hidden(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in [1, 2, 10, 11, 3]:
        Image.new("L", (30, 20), 10 * i).save(folder / f"f{i}.png")
    (folder / "._f0.png").write_bytes(b"macOS resource fork, not an image")
    video = _read(folder, "20", frame_stride=2)
    assert video.frames[:, 0, 0, 0].tolist() == [10, 30, 110]
    assert (video.fps, video.decoded_frames, video.original_size) == (None, 5, (20, 30))
    assert _read(folder, "20", max_frames=2).decoded_frames == 2


def _palette_image() -> Image.Image:
    image = Image.new("P", (8, 4), 1)
    image.putpalette([0, 0, 0, 10, 200, 30])
    return image


@pytest.mark.parametrize(
    ("image", "rgb"),
    [
        (Image.new("L", (8, 4), 100), (100, 100, 100)),
        (Image.new("1", (8, 4), 1), (255, 255, 255)),
        (Image.new("RGBA", (8, 4), (10, 20, 30, 0)), (10, 20, 30)),
        (Image.new("LA", (8, 4), (77, 5)), (77, 77, 77)),
        (_palette_image(), (10, 200, 30)),
    ],
    ids=["L", "1", "RGBA", "LA", "P"],
)
def test_read_folder_converts_modes(
    tmp_path: Path, image: Image.Image, rgb: tuple[int, int, int]
) -> None:
    video = _read(_write_frames(tmp_path / "f", [image] * 2), "4")
    assert video.frames.shape == (2, 4, 8, 3)
    assert (video.frames == rgb).all()


def test_read_folder_16_bit_scales_by_shift(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint16) * 257, (4, 1))  # 0 .. 65535
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    video = _read(_write_frames(tmp_path / "f", [image]), "4")
    expected = np.repeat((ramp >> 8).astype(np.uint8)[..., None], 3, axis=2)
    np.testing.assert_array_equal(video.frames[0], expected)


def test_read_folder_cmyk_jpeg(tmp_path: Path) -> None:
    image = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # red
    video = _read(_write_frames(tmp_path / "f", [image], ".jpg"), "24")
    assert video.frames.shape == (1, 24, 32, 3)
    np.testing.assert_allclose(video.frames.mean(axis=(0, 1, 2)), (255, 0, 0), atol=8)


def test_read_folder_large_frames(tmp_path: Path) -> None:
    png = np.tile(np.linspace(0, 255, 6000).astype(np.uint8), (4000, 1))
    folder = tmp_path / "big"
    folder.mkdir()
    Image.fromarray(png).save(folder / "0.png", compress_level=1)
    Image.fromarray(png).save(folder / "1.png", compress_level=1)
    video = _read(folder, "256")
    assert video.frames.shape == (2, 256, 384, 3)
    assert video.original_size == (4000, 6000)
    np.testing.assert_allclose(
        video.frames[0, :, :, 0].mean(axis=0), np.linspace(0, 255, 384), atol=2
    )

    jpeg = _write_frames(
        tmp_path / "jpeg", [Image.new("RGB", (4000, 3000), (20, 120, 220))], ".jpg"
    )
    video = _read(jpeg, "256")  # decoded at 1/8 scale (500x375), then resized
    assert video.frames.shape == (1, 256, 341, 3)
    np.testing.assert_allclose(video.frames.mean(axis=(0, 1, 2)), (20, 120, 220), atol=3)


def test_read_folder_ignores_decompression_bomb_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write_frames(tmp_path / "f", [Image.new("RGB", (96, 64), "blue")])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(folder / "00000.png")
    assert _read(folder).frames.shape == (1, 32, 48, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_read_bad_arguments(tmp_path: Path) -> None:
    folder = _write_frames(tmp_path / "f", [Image.new("RGB", (8, 8))])
    with pytest.raises(ValueError, match="frame_stride"):
        _read(folder, frame_stride=0)
    with pytest.raises(ValueError, match="max_frames"):
        _read(folder, max_frames=0)
