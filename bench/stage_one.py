"""Stage-one benchmarks: tracker speed, pipeline overhead over the bare tracker, bytes per frame,
and the whole extraction with the tracker's default window against one query set per window
(``--window`` = ``--horizon``, the default before multi-set windows).

Every ratio compares two measurements taken in this same run (the machine is noisy); the
repeats alternate between the settings compared. Prints a table and writes
``<out>/stage_one.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from mosic.pipeline.extract import ExtractConfig, InProcessRunner, open_store, run_extraction
from mosic.stages.queries import grid_points, query_frames, track_query_sets
from mosic.stages.synthetic import make_video, write_video_file
from mosic.stages.video_io import SizeSpec, list_sources, read_video


def _array_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_stage_one(work: Path, videos: int, frames: int, repeats: int, grid: int | None) -> dict:
    """Time the bare tracker and the whole pipeline on the same generated videos, with the
    tracker's default window and with one query set per window."""
    src = work / "videos"
    for i in range(videos):
        write_video_file(make_video(i, num_frames=frames, height=192, width=256), src / f"v{i}.mp4")
    config = ExtractConfig() if grid is None else ExtractConfig(grid=grid)
    one_set = replace(config, window=config.horizon)
    sources = list_sources(src)
    decoded = [read_video(s, SizeSpec.parse(config.size)) for s in sources]

    warm_store, warm_tracker = open_store(str(work / "warm-up.zarr"), config)
    warm_runner = InProcessRunner(warm_store, config, warm_tracker)
    run_extraction(sources[:1], warm_store, config, warm_runner)  # starts the I/O child

    bare, pipeline, pipeline_one_set, passes = [], [], [], {}
    cpu: dict[str, list[float]] = {"default": [], "one_set": []}
    compared = [("default", config, pipeline), ("one_set", one_set, pipeline_one_set)]
    for r in range(repeats):
        for name, settings, times in compared[:: 1 if r % 2 == 0 else -1]:
            store_path = work / f"store-{name}-{r}.zarr"
            store, tracker = open_store(str(store_path), settings)
            cpu_started = time.process_time()
            summary = run_extraction(
                sources, store, settings, InProcessRunner(store, settings, tracker)
            )
            cpu[name].append(time.process_time() - cpu_started)
            assert summary.done == videos, summary.failures
            times.append(summary.seconds)
            passes[name] = (summary.frame_passes, settings.window_for(tracker))
        window = config.window_for(tracker)
        started = time.perf_counter()
        for video in decoded:
            t, h, w, _ = video.frames.shape
            track_query_sets(
                tracker,
                video.frames,
                query_frames(t, config.query_every, config.horizon),
                grid_points(h, w, config.grid_for(tracker)),
                config.horizon,
                window,
            )
        bare.append(time.perf_counter() - started)
    store_path = work / "store-default-0.zarr"

    total_frames = sum(len(v.frames) for v in decoded)
    part_dirs = list((store_path / "parts").iterdir())
    frame_bytes = sum(_array_bytes(d / "frames") for d in part_dirs)
    track_bytes = sum(_array_bytes(d / "tracks") for d in part_dirs)
    h, w = decoded[0].frames.shape[1:3]
    bare_s, pipe_s, one_set_s = min(bare), min(pipeline), min(pipeline_one_set)
    return {
        "videos": videos,
        "frames": total_frames,
        "frame_size": [h, w],
        "grid": config.grid_for(tracker),
        "window": passes["default"][1],
        "frame_passes": passes["default"][0],
        "one_set_window": passes["one_set"][1],
        "one_set_frame_passes": passes["one_set"][0],
        "tracker_frames_per_s": total_frames / bare_s,
        "pipeline_frames_per_s": total_frames / pipe_s,
        "one_set_pipeline_frames_per_s": total_frames / one_set_s,
        "speedup_over_one_set": one_set_s / pipe_s,
        "pipeline_seconds": pipeline,
        "one_set_pipeline_seconds": pipeline_one_set,
        # CPU seconds of the tracking process (decode and write run in the I/O child, the same
        # work for both): steadier than wall time on a loaded machine.
        "pipeline_cpu_seconds": cpu["default"],
        "one_set_pipeline_cpu_seconds": cpu["one_set"],
        "cpu_speedup_over_one_set": min(cpu["one_set"]) / min(cpu["default"]),
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
    parser.add_argument("--grid", type=int, default=None, help="default: extraction's default")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mosic-bench-"))
    try:
        result = bench_stage_one(work, args.videos, args.frames, args.repeats, args.grid)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        ("tracker (lk), frames/s", f"{result['tracker_frames_per_s']:.1f}", ""),
        (
            f"pipeline, window {result['window']}, frames/s",
            f"{result['pipeline_frames_per_s']:.1f}",
            f"{result['frame_passes']:.2f} frame-passes (goal <= 2)",
        ),
        (
            f"pipeline, window {result['one_set_window']} (one set), frames/s",
            f"{result['one_set_pipeline_frames_per_s']:.1f}",
            f"{result['one_set_frame_passes']:.2f} frame-passes",
        ),
        (
            "default window over one set per window",
            f"{result['speedup_over_one_set']:.2f}x",
            ">= 1.00x",
        ),
        (
            "  the same in the tracking process's CPU time",
            f"{result['cpu_speedup_over_one_set']:.2f}x",
            "",
        ),
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
        f"{result['frame_size'][1]}x{result['frame_size'][0]}, grid {result['grid']}"
    )
    for name, value, goal in rows:
        print(f"  {name:<40} {value:>12}  {goal}")
    (args.out / "stage_one.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
