"""Clip loading: stage two's store path against the original's path (full-size JPEG frames).

Both paths produce the same clips (same video, query set, frames, crop, flip, output size):

* store: ``ClipDataset[i]`` (read the clip's frames and tracks from the store, augment).
* JPEG: the clip's full-size frames (854x480, like YouTube-VOS) decoded from a frame folder,
  resized to the store's frame size, then the same ``augment_clip``; tracks come from memory,
  so the JPEG path is charged nothing for them. Decoding uses PIL (torchvision's default image
  loader, what the original's data loader uses) and, as a stronger baseline, ``cv2.imread``.

Everything runs single-process with one cv2 thread; rates per core divide by the process's CPU
time. Prints a table and writes ``<out>/clip_loading.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from mosic.stages.data import ClipConfig, ClipDataset, augment_clip
from mosic.stages.queries import grid_points, query_frames
from mosic.stages.synthetic import make_video, write_frame_folder
from mosic.stages.video_io import SizeSpec
from mosic.store_schema import TrackStore, VideoData, VideoMeta

SOURCE_SIZE = (480, 854)  # (height, width) of the JPEG frames
GRID, QUERY_EVERY, HORIZON = 16, 8, 67


def build(work: Path, videos: int, frames: int) -> tuple[Path, list[Path], list[np.ndarray]]:
    """Generated videos as full-size JPEG folders and as a store at the default 256 size.

    Returns the store, the frame folders and each video's positions (Q, horizon, N, 2) float32
    at storage size (ground truth of the synthetic motion).
    """
    height, width = SOURCE_SIZE
    out_h, out_w = SizeSpec.parse("256").output_size(height, width)
    extraction = {"grid": GRID, "query_every": QUERY_EVERY, "horizon": HORIZON}
    store = TrackStore.create(work / "tracks.zarr", extraction)
    folders, tracks, videos_data = [], [], {}
    for v in range(videos):
        video = make_video(v, num_frames=frames, height=height, width=width)
        folders.append(write_frame_folder(video, work / "jpeg" / f"v{v}"))
        small = np.stack(
            [cv2.resize(f, (out_w, out_h), interpolation=cv2.INTER_AREA) for f in video.frames]
        )
        starts = query_frames(frames, QUERY_EVERY, HORIZON)
        points = grid_points(height, width, GRID)
        positions, visible = [], []
        for start in starts:
            queries = np.concatenate([np.full((len(points), 1), start, np.float32), points], 1)
            p, vis = video.ground_truth(queries)
            positions.append(p[start : start + HORIZON])
            visible.append(vis[start : start + HORIZON])
        scale = np.array([out_w / width, out_h / height], np.float32)
        positions = (np.stack(positions) + 0.5) * scale - 0.5
        meta = VideoMeta(str(folders[-1]), SOURCE_SIZE, None, frames, 1)
        data = VideoData(meta, small, starts, positions, np.stack(visible))
        videos_data[f"v{v}"] = data
        tracks.append(positions)
    store.write_part(videos_data)
    return store.path, folders, tracks


def jpeg_clip(
    dataset: ClipDataset,
    folders: list[Path],
    tracks: list[np.ndarray],
    i: int,
    decode: Callable[[Path], np.ndarray],
) -> np.ndarray:
    """The clip ``dataset[i]`` would give, from full-size JPEGs: frames (F, S, S, 3) uint8."""
    config = dataset.config
    rng = np.random.default_rng((dataset.seed, dataset.epoch, i))
    query_set = int(rng.integers(dataset.usable[i]))
    start = query_set * QUERY_EVERY
    files = sorted(folders[i].iterdir())[start : start + config.span : config.clip_step]
    out_h, out_w = SizeSpec.parse("256").output_size(*SOURCE_SIZE)
    frames = np.stack(
        [cv2.resize(decode(f), (out_w, out_h), interpolation=cv2.INTER_AREA) for f in files]
    )
    positions = tracks[i][query_set, : config.span : config.clip_step]
    visible = np.ones(positions.shape[:2], bool)
    return augment_clip(frames, positions, visible, config.augment, rng)[0]


def decode_pil(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB with PIL."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def decode_cv2(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB with OpenCV."""
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def timed(load: Callable[[int], object], items: int, epochs: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to load every item ``epochs`` times; best of two passes."""
    best = (float("inf"), float("inf"))
    for _ in range(2):
        wall, cpu = time.perf_counter(), time.process_time()
        for e in range(epochs):
            for i in range(items):
                load(e * items + i)
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def bench(work: Path, videos: int, frames: int, epochs: int) -> dict:
    """Time both paths on the same clips and check that they give the same frames."""
    store, folders, tracks = build(work, videos, frames)
    dataset = ClipDataset([store], ClipConfig())

    def store_clip(j: int) -> object:
        dataset.set_epoch(j // videos)
        return dataset[j % videos]

    def jpeg_with(decode: Callable[[Path], np.ndarray]) -> Callable[[int], object]:
        def load(j: int) -> object:
            dataset.set_epoch(j // videos)
            return jpeg_clip(dataset, folders, tracks, j % videos, decode)

        return load

    dataset.set_epoch(0)
    from_store = dataset[0]["frames"].permute(0, 2, 3, 1).numpy().astype(np.int16)
    from_jpeg = jpeg_clip(dataset, folders, tracks, 0, decode_pil).astype(np.int16)
    clips = videos * epochs
    frames_per_clip = dataset.config.clip_frames
    result = {
        "videos": videos,
        "clips": clips,
        "clip": f"{frames_per_clip}x{dataset.config.clip_step}",
        "output_size": dataset.config.augment.input_size,
        "source_size": list(SOURCE_SIZE),
        "store_frame_size": list(SizeSpec.parse("256").output_size(*SOURCE_SIZE)),
        "mean_abs_difference_store_vs_jpeg": float(np.abs(from_store - from_jpeg).mean()),
    }
    for name, load in [
        ("store", store_clip),
        ("jpeg_pil", jpeg_with(decode_pil)),
        ("jpeg_cv2", jpeg_with(decode_cv2)),
    ]:
        wall, cpu = timed(load, videos, epochs)
        result[f"{name}_clips_per_s"] = clips / wall
        result[f"{name}_frames_per_s_per_core"] = clips * frames_per_clip / cpu
    result["ratio_vs_pil"] = result["store_clips_per_s"] / result["jpeg_pil_clips_per_s"]
    result["ratio_vs_cv2"] = result["store_clips_per_s"] / result["jpeg_cv2_clips_per_s"]
    result["cpu_ratio_vs_pil"] = (
        result["store_frames_per_s_per_core"] / result["jpeg_pil_frames_per_s_per_core"]
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=83)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mosic-bench-"))
    try:
        result = bench(work, args.videos, args.frames, args.epochs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        ("store: clips/s", f"{result['store_clips_per_s']:.1f}", ""),
        ("JPEG + PIL (original's path): clips/s", f"{result['jpeg_pil_clips_per_s']:.1f}", ""),
        ("JPEG + cv2.imread: clips/s", f"{result['jpeg_cv2_clips_per_s']:.1f}", ""),
        ("store / JPEG + PIL", f"{result['ratio_vs_pil']:.1f}x", ">= 10x"),
        ("store / JPEG + cv2", f"{result['ratio_vs_cv2']:.1f}x", ""),
        ("store / JPEG + PIL, CPU time", f"{result['cpu_ratio_vs_pil']:.1f}x", ""),
        (
            "store: frames/s per core",
            f"{result['store_frames_per_s_per_core']:.0f}",
            ">= 1000",
        ),
        ("mean |store - JPEG| (uint8)", f"{result['mean_abs_difference_store_vs_jpeg']:.2f}", ""),
    ]
    print(
        f"clip loading: {result['clips']} clips of {result['clip']} at "
        f"{result['output_size']} px, from {result['source_size'][1]}x{result['source_size'][0]} "
        f"sources ({result['store_frame_size'][1]}x{result['store_frame_size'][0]} in the store)"
    )
    for name, value, goal in rows:
        print(f"  {name:<40} {value:>12}  {goal}")
    (args.out / "clip_loading.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
