"""Stage-one benchmarks: tracker speed, pipeline overhead over the bare tracker, bytes per frame.

Every ratio compares two measurements taken in this same run (the machine is noisy).
Prints a table and writes ``<out>/stage_one.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from mosic.pipeline.extract import ExtractConfig, InProcessRunner, open_store, run_extraction
from mosic.stages.queries import grid_points, query_frames, track_query_sets
from mosic.stages.synthetic import make_video, write_video_file
from mosic.stages.video_io import SizeSpec, list_sources, read_video


def _array_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_stage_one(work: Path, videos: int, frames: int, repeats: int) -> dict:
    """Time the bare tracker and the whole pipeline on the same generated videos."""
    src = work / "videos"
    for i in range(videos):
        write_video_file(make_video(i, num_frames=frames, height=192, width=256), src / f"v{i}.mp4")
    config = ExtractConfig()
    sources = list_sources(src)
    decoded = [read_video(s, SizeSpec.parse(config.size)) for s in sources]

    bare, pipeline = [], []
    for r in range(repeats):
        store_path = work / f"store{r}.zarr"
        store, tracker = open_store(str(store_path), config)
        started = time.perf_counter()
        for video in decoded:
            t, h, w, _ = video.frames.shape
            track_query_sets(
                tracker,
                video.frames,
                query_frames(t, config.query_every, config.horizon),
                grid_points(h, w, config.grid),
                config.horizon,
                config.window,
            )
        bare.append(time.perf_counter() - started)
        summary = run_extraction(sources, store, config, InProcessRunner(store, config, tracker))
        pipeline.append(summary.seconds)
        assert summary.done == videos, summary.failures

    total_frames = sum(len(v.frames) for v in decoded)
    part_dirs = list((store_path / "parts").iterdir())
    frame_bytes = sum(_array_bytes(d / "frames") for d in part_dirs)
    track_bytes = sum(_array_bytes(d / "tracks") for d in part_dirs)
    h, w = decoded[0].frames.shape[1:3]
    bare_s, pipe_s = min(bare), min(pipeline)
    return {
        "videos": videos,
        "frames": total_frames,
        "frame_size": [h, w],
        "tracker_frames_per_s": total_frames / bare_s,
        "pipeline_frames_per_s": total_frames / pipe_s,
        "pipeline_overhead": (pipe_s - bare_s) / bare_s,
        "frame_bytes_per_frame": frame_bytes / total_frames,
        "raw_bytes_per_frame": h * w * 3,
        "track_bytes_per_frame": track_bytes / total_frames,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mosic-bench-"))
    try:
        result = bench_stage_one(work, args.videos, args.frames, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        ("tracker (lk), frames/s", f"{result['tracker_frames_per_s']:.1f}", ""),
        ("pipeline, frames/s", f"{result['pipeline_frames_per_s']:.1f}", ""),
        (
            "pipeline overhead over bare tracker",
            f"{100 * result['pipeline_overhead']:.1f} %",
            "<= 15 %",
        ),
        (
            "stored frame bytes / frame",
            f"{result['frame_bytes_per_frame']:,.0f}",
            f"raw {result['raw_bytes_per_frame']:,}",
        ),
        ("track bytes / frame", f"{result['track_bytes_per_frame']:,.0f}", ""),
    ]
    print(
        f"stage one: {result['videos']} videos, {result['frames']} frames at "
        f"{result['frame_size'][1]}x{result['frame_size'][0]}"
    )
    for name, value, goal in rows:
        print(f"  {name:<40} {value:>12}  {goal}")
    (args.out / "stage_one.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
