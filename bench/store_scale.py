"""The store at scale, and its frame codecs on real video (schema version 2 against 1).

Simulated scale: stores of 1k, 10k (and 100k, time allowing) tiny videos of 300 frames
(16x16 px, a 2x2 grid of tracks) written through the real write path (parts of 128 videos,
the coordinator indexing every 32), and for each: files and folders, bytes, write time per
video, open, locate, clip read, ``mosic store info`` time and a loader worker's memory. Levels
that would not fit the time budget are extrapolated from the measured slope (marked so).
Baseline in the same run: a version 1 store of the first level's videos (a group per video),
written with zarr as mosic 0.1 did, its files, bytes, write time and info (which walked every
file).

Real video (``../shared/data/videos``, decoded at 256 px): bytes per frame and PSNR per codec
and JPEG quality, encode time; then clip loading (12 frames 6 apart, 224 px, augmented) from a
JPEG store against a raw store of the same videos and clips: frames/s per core and bytes read
per used frame. Prints tables and writes ``<out>/store.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import psutil
import torch
from typer.testing import CliRunner

from mosic.cli import app
from mosic.stages.data import ClipConfig, ClipDataset
from mosic.stages.video_io import SizeSpec, VideoSource, read_video
from mosic.store_schema import FrameCodec, TrackStore, VideoData, VideoMeta, encode_video
from mosic.store_schema.v1 import write_v1_store

VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "videos"
REAL = ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"]
FRAMES, SIDE, GRID, EVERY, HORIZON = 300, 16, 2, 8, 67
PART, FLUSH = 128, 32


def tiny_video(seed: int, frames: int = FRAMES) -> VideoData:
    """A small video with smooth moving content and random tracks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    phase = rng.uniform(0, 6, 3)
    pixels = [np.stack([127 + 90 * np.sin(x / 3 + y / 5 + t / 7 + p) for p in phase], -1)
              for t in range(frames)]  # fmt: skip
    q = (frames - HORIZON) // EVERY + 1
    shape = (q, HORIZON, GRID * GRID)
    return VideoData(
        VideoMeta(f"in/{seed}.mp4", (SIDE, SIDE), 30.0, frames, 1),
        np.clip(pixels, 0, 255).astype(np.uint8),
        (np.arange(q) * EVERY).astype(np.int32),
        rng.uniform(0, SIDE - 1, (*shape, 2)).astype(np.float32),
        rng.random(shape) > 0.2,
    )


def extraction() -> dict:
    return {"grid": GRID, "query_every": EVERY, "horizon": HORIZON}


def count_files(path: Path) -> tuple[int, int]:
    """(files and folders, bytes) under ``path``."""
    entries, size = 0, 0
    for folder, dirs, files in os.walk(path):
        entries += len(dirs) + len(files)
        size += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return entries, size


def median_time(fn: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def info_seconds(path: Path) -> float:
    """``mosic store info --json`` in this process (no interpreter start-up)."""

    def info() -> None:
        result = CliRunner().invoke(app, ["store", "info", str(path), "--json"])
        assert result.exit_code == 0, result.output

    return median_time(info, 3)


def worker_memory(path: Path) -> float:
    """Unique (not shared with the parent) MiB of one DataLoader worker after 20 batches."""
    clip = ClipConfig(clip_frames=4, clip_step=8)
    dataset = ClipDataset([path], clip)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, num_workers=1)
    rss = 0.0
    for b, _ in enumerate(loader):
        if b == 19:
            worker = psutil.Process().children()[-1]
            rss = worker.memory_full_info().uss / 2**20
            break
    return rss


def scale_level(work: Path, videos: int, pool: list) -> dict:
    """Write a store of ``videos`` tiny videos and measure it."""
    path = work / f"v2-{videos}.zarr"
    store = TrackStore.create(path, extraction(), FrameCodec())
    started = time.perf_counter()
    pending = []
    for first in range(0, videos, PART):
        writer = store.part_writer()
        for v in range(first, min(first + PART, videos)):
            writer.append(replace(pool[v % len(pool)], key=f"video-{v:07d}"))
        pending.extend(writer.close())
        while len(pending) >= FLUSH:
            store.add_to_index(pending[:FLUSH])
            pending = pending[FLUSH:]
    store.add_to_index(pending)
    write = (time.perf_counter() - started) / videos
    files, size = count_files(path)
    rng = np.random.default_rng(0)
    keys = [f"video-{int(v):07d}" for v in rng.integers(0, videos, 5)]
    dataset = ClipDataset([path], ClipConfig(clip_frames=12, clip_step=6))
    items = rng.integers(0, len(dataset), 50)
    clip_started = time.perf_counter()
    for i in items:
        dataset.read_clip(int(i), 0)
    clip_read = (time.perf_counter() - clip_started) / len(items)
    result = {
        "videos": videos,
        "files": files,
        "files_per_video": files / videos,
        "bytes": size,
        "write_s_per_video": write,
        "open_s": median_time(lambda: TrackStore.open(path)),
        "locate_cold_s": median_time(lambda: TrackStore.open(path).record(keys[0])),
        "dataset_open_s": median_time(lambda: ClipDataset([path], ClipConfig()), 3),
        "clip_read_s": clip_read,
        "info_s": info_seconds(path),
        "loader_worker_mib": worker_memory(path),
    }
    shutil.rmtree(path)
    return result


def v1_baseline(work: Path, videos: int) -> dict:
    """The same tiny videos as a version 1 store (raw frames, a group per video)."""
    path = work / "v1.zarr"
    data = {f"video-{v:07d}": tiny_video(v % 8) for v in range(videos)}
    started = time.perf_counter()
    write_v1_store(path, extraction(), data)
    write = (time.perf_counter() - started) / videos
    files, size = count_files(path)
    walk = median_time(lambda: sum(p.stat().st_size for p in path.rglob("*") if p.is_file()), 3)
    shutil.rmtree(path)
    return {"videos": videos, "files": files, "files_per_video": files / videos, "bytes": size,
            "write_s_per_video": write, "info_walk_s": walk}  # fmt: skip


def extrapolate(levels: list[dict], videos: int) -> dict:
    """A level not run: each figure on the line through the two largest measured levels
    (never below the largest level's: no cost falls as a store grows)."""
    a, b = levels[-2], levels[-1]
    out = {"videos": videos, "extrapolated": True}
    for name, value in b.items():
        if name in ("videos", "extrapolated") or not isinstance(value, int | float):
            continue
        slope = (value - a[name]) / (b["videos"] - a["videos"])
        out[name] = max(value, value + slope * (videos - b["videos"]))
    out["files_per_video"] = out["files"] / videos
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def real_video(name: str, frames: int) -> np.ndarray:
    source = VideoSource(VIDEOS / name, name)
    return read_video(source, SizeSpec.parse("256"), max_frames=frames).frames


def codecs(clips: dict[str, np.ndarray], qualities: list[int]) -> list[dict]:
    """Bytes per frame, PSNR and encode time per video, codec and quality."""
    rows = []
    for name, frames in clips.items():
        for codec in [FrameCodec("raw"), *(FrameCodec("jpeg", q) for q in qualities)]:
            started = time.process_time()
            chunks = [codec.encode(f) for f in frames]
            encode = (time.process_time() - started) / len(frames)
            decoded = np.stack([codec.decode(c[:-4], *f.shape[:2], "bench")
                                for c, f in zip(chunks, frames, strict=True)])  # fmt: skip
            rows.append({
                "video": name, "size": list(frames.shape[1:3]), "codec": codec.name,
                "quality": codec.quality if codec.name == "jpeg" else None,
                "bytes_per_frame": float(np.mean([len(c) for c in chunks])),
                "psnr_db": psnr(decoded, frames), "encode_ms_per_frame": 1e3 * encode,
            })  # fmt: skip
    return rows


class ReadCounter:
    """Counts bytes read with ``os.pread`` while active."""

    def __init__(self) -> None:
        self.bytes = 0
        self.real = os.pread

    def __enter__(self) -> ReadCounter:
        def pread(fd: int, n: int, offset: int) -> bytes:
            data = self.real(fd, n, offset)
            self.bytes += len(data)
            return data

        os.pread = pread
        return self

    def __exit__(self, *exc: object) -> None:
        os.pread = self.real


def decode_ceiling(clips: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """What whole-frame JPEG decoding alone allows, per video: frames/s per core of decoding
    (the store's quality) and of decoding plus the 224-px resize of a loader item."""
    codec, result = FrameCodec("jpeg"), {}
    for name, frames in clips.items():
        bodies = [codec.encode(f)[:-4] for f in frames]  # the checked body (CRC32C removed)
        h, w = frames.shape[1:3]
        out = np.empty((h, w, 3), np.uint8)
        timings = []
        for resize in (False, True):
            cpu = time.process_time()
            for _ in range(3):
                for body in bodies:
                    codec.decode(body, h, w, name, out)
                    if resize:
                        cv2.resize(out[: 4 * h // 5, : 4 * w // 5], (224, 224))
            timings.append(3 * len(bodies) / (time.process_time() - cpu))
        result[name] = {"decode": timings[0], "decode_and_resize": timings[1]}
    return result


def loading(work: Path, clips: dict[str, np.ndarray], epochs: int) -> dict:
    """Clip loading from a JPEG store against a raw store of the same videos and clips."""
    result = {}
    for codec in (FrameCodec("raw"), FrameCodec("jpeg")):
        path = work / f"real-{codec.name}.zarr"
        store = TrackStore.create(path, {"grid": 16, "query_every": EVERY, "horizon": HORIZON},
                                  codec)  # fmt: skip
        writer = store.part_writer()
        rng = np.random.default_rng(0)
        for name, frames in clips.items():
            q = (len(frames) - HORIZON) // EVERY + 1
            shape = (q, HORIZON, 256)
            h, w = frames.shape[1:3]
            data = VideoData(VideoMeta(name, (h, w), 25.0, len(frames), 1), frames,
                             (np.arange(q) * EVERY).astype(np.int32),
                             rng.uniform(0, [w - 1, h - 1], (*shape, 2)).astype(np.float32),
                             rng.random(shape) > 0.2)  # fmt: skip
            writer.append(encode_video(name, data, codec))
        store.add_to_index(writer.close())
        dataset = ClipDataset([path], ClipConfig())
        used = 0
        per_video: dict[str, float] = {}
        with ReadCounter() as counter:
            for epoch in range(epochs):
                dataset.set_epoch(epoch)
                for i in range(len(dataset)):
                    cpu = time.process_time()
                    dataset[i]
                    key = str(dataset.keys[i])
                    per_video[key] = per_video.get(key, 0.0) + time.process_time() - cpu
                    used += dataset.config.clip_frames
        frames_per_video = epochs * dataset.config.clip_frames
        result[codec.name] = {
            "frames_per_s_per_core": used / sum(per_video.values()),
            "per_video_frames_per_s": {k: frames_per_video / v for k, v in per_video.items()},
            "bytes_read_per_used_frame": counter.bytes / used,
            "stored_bytes_per_frame": count_files(path)[1] / sum(len(f) for f in clips.values()),
        }
    result["jpeg_decode_only"] = decode_ceiling(clips)
    result["jpeg_over_raw_speed"] = (
        result["jpeg"]["frames_per_s_per_core"] / result["raw"]["frames_per_s_per_core"]
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--levels", default="1000,10000,100000")
    parser.add_argument("--budget-s", type=float, default=900, help="time for the scale part")
    parser.add_argument("--v1-videos", type=int, default=200, help="videos of the v1 baseline")
    parser.add_argument("--real-frames", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mosic-bench-store-"))
    try:
        result = run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (args.out / "store.json").write_text(json.dumps(result, indent=2))
    report(result)


def run(work: Path, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    pool = [encode_video("x", tiny_video(s), FrameCodec()) for s in range(8)]
    levels = [int(n) for n in args.levels.split(",")]
    baseline = v1_baseline(work, args.v1_videos)
    measured: list[dict] = []
    for n in levels:
        spent = time.perf_counter() - started
        if len(measured) >= 2:
            projected = extrapolate(measured, n)
            cost = projected["write_s_per_video"] * n * 1.5
            if spent + cost > args.budget_s:
                measured.append(projected)
                continue
        level_started = time.perf_counter()
        measured.append(scale_level(work, n, pool))
        measured[-1]["level_seconds"] = time.perf_counter() - level_started
    clips = {name: real_video(name, args.real_frames) for name in REAL}
    return {
        "scale": measured,
        "v1_baseline": baseline,
        "codecs": codecs(clips, [80, 85, 90, 95]),
        "loading": loading(work, clips, args.epochs),
        "conditions": f"{os.cpu_count()} cores; tiny videos {FRAMES} frames at {SIDE}x{SIDE}",
    }


def report(result: dict) -> None:
    base = result["v1_baseline"]
    print(f"store at scale (v2 parts of {PART} videos; * extrapolated from the slope)")
    head = ("videos", "files", "files/video", "MB", "write ms/video", "open ms", "locate ms",
            "clip ms", "info ms", "worker MiB")  # fmt: skip
    print("  " + " ".join(f"{h:>10}" for h in head))
    for level in result["scale"]:
        mark = "*" if level.get("extrapolated") else " "
        cells = [
            f"{level['videos']:>9}{mark}", f"{level['files']:>10.0f}",
            f"{level['files_per_video']:>10.3f}", f"{level['bytes'] / 1e6:>10.1f}",
            f"{1e3 * level['write_s_per_video']:>10.2f}", f"{1e3 * level['open_s']:>10.1f}",
            f"{1e3 * level['locate_cold_s']:>10.1f}", f"{1e3 * level['clip_read_s']:>10.2f}",
            f"{1e3 * level['info_s']:>10.1f}", f"{level['loader_worker_mib']:>10.1f}",
        ]  # fmt: skip
        print("  " + " ".join(cells))
    first = result["scale"][0]
    if len(result["scale"]) >= 2:  # a line needs two levels
        most = extrapolate(result["scale"], 650_000)
        print(
            f"  650,000 videos (Kinetics-700), extrapolated: {most['files']:,.0f} files, "
            f"{most['files_per_video']:.3f} per video (goal < 1,000,000)"
        )
    print(
        f"  v1 baseline, {base['videos']} videos: {base['files']} files "
        f"({base['files_per_video']:.1f}/video), {base['bytes'] / 1e6:.1f} MB, write "
        f"{1e3 * base['write_s_per_video']:.1f} ms/video, info (walk) "
        f"{1e3 * base['info_walk_s']:.0f} ms"
    )
    ratios = {
        "files": first["files_per_video"] / base["files_per_video"],
        "bytes": first["bytes"] / first["videos"] / (base["bytes"] / base["videos"]),
        "write": first["write_s_per_video"] / base["write_s_per_video"],
        "info (v1's walk scaled to as many videos)": first["info_s"]
        / (base["info_walk_s"] / base["videos"] * first["videos"]),
    }
    print(f"  v2 at {first['videos']} / v1 at {base['videos']} videos, per video: " + ", ".join(
        f"{name} {value:.3f}x" for name, value in ratios.items()))  # fmt: skip
    print("frame codecs on real video at 256 px")
    for row in result["codecs"]:
        quality = row["quality"] or "-"
        print(
            f"  {row['video']:<22} {row['codec']:<5} q {quality!s:>3} "
            f"{row['bytes_per_frame'] / 1e3:>7.1f} KB/frame {row['psnr_db']:>6.1f} dB "
            f"encode {row['encode_ms_per_frame']:.2f} ms"
        )
    load = result["loading"]
    for codec in ("raw", "jpeg"):
        row = load[codec]
        videos = ", ".join(f"{k} {v:.0f}" for k, v in row["per_video_frames_per_s"].items())
        print(
            f"  loading {codec:<4}: {row['frames_per_s_per_core']:>7.0f} frames/s per core "
            f"({videos}), {row['bytes_read_per_used_frame'] / 1e3:.1f} KB read per used frame"
        )
    print(f"  jpeg / raw loading speed: {load['jpeg_over_raw_speed']:.2f}x (goal >= 2000 frames/s)")
    for name, row in load["jpeg_decode_only"].items():
        print(
            f"  {name:<22} JPEG whole-frame decode alone {row['decode']:>5.0f} frames/s per core, "
            f"with the 224-px resize {row['decode_and_resize']:>5.0f} (the loader's ceiling)"
        )


if __name__ == "__main__":
    main()
