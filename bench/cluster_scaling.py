"""Stage one on Dask: throughput with 1 and 2 CPU workers, and the scheduling overhead.

Both runs extract the same generated videos in this run, each into a fresh store, on a local
cluster started before the clock starts, one video per task. Throughput is reported over the
whole run and over its steady state: up to the completion that leaves fewer videos than
workers, i.e. without the tail where a worker has nothing left to do (a real collection of
thousands of videos is in the steady state almost all the time). Prints a table and writes
``<out>/cluster.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from mosic.pipeline.cluster import ClusterConfig, DaskRunner, dask_client
from mosic.pipeline.extract import ExtractConfig, open_store, run_extraction
from mosic.stages.synthetic import make_video, write_video_file
from mosic.stages.video_io import list_sources


def run_with_workers(sources, work: Path, workers: int, config: ExtractConfig) -> dict:
    """Extract ``sources`` on a fresh local cluster of ``workers`` processes."""
    path = work / f"w{workers}.zarr"
    store, _ = open_store(str(path), config)
    with dask_client(ClusterConfig(workers=workers, dashboard=":0")) as client:
        client.wait_for_workers(workers)
        done: list[tuple[float, int]] = []
        started = time.perf_counter()
        summary = run_extraction(
            sources, store, config, DaskRunner(client, str(path), config), batch_videos=1,
            on_video=lambda outcome: done.append((time.perf_counter(), outcome.frames)),
        )  # fmt: skip
        wall = time.perf_counter() - started
    assert summary.failed == 0, summary.failures
    capacity = workers * wall
    steady = done[: len(done) - (workers - 1)]
    return {
        "workers": workers,
        "seconds": wall,
        "frames_per_s": summary.frames / wall,
        "steady_frames_per_s": sum(f for _, f in steady) / (steady[-1][0] - started),
        "scheduling_overhead": 1 - summary.busy_seconds / capacity,
        "non_tracker_share": 1 - summary.track_seconds / capacity,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mosic-bench-"))
    config = ExtractConfig()
    try:
        for i in range(args.videos):
            video = make_video(i, num_frames=args.frames, height=192, width=256)
            write_video_file(video, work / "videos" / f"v{i}.mp4")
        sources = list_sources(work / "videos")
        one = run_with_workers(sources, work, 1, config)
        two = run_with_workers(sources, work, 2, config)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    speedup = two["frames_per_s"] / one["frames_per_s"]
    steady = two["steady_frames_per_s"] / one["steady_frames_per_s"]
    print(f"stage one on Dask: {args.videos} videos x {args.frames} frames")
    for r in (one, two):
        print(
            f"  {r['workers']} worker(s): {r['frames_per_s']:7.1f} frames/s, "
            f"scheduling overhead {100 * r['scheduling_overhead']:.1f} % (goal < 5 %), "
            f"time outside the tracker {100 * r['non_tracker_share']:.1f} %"
        )
    print(f"  speed-up 2 vs 1 workers: {speedup:.2f}x over the whole run, {steady:.2f}x in the "
          "steady state (goal >= 1.8x)")  # fmt: skip
    result = {"one": one, "two": two, "speedup": speedup, "steady_speedup": steady}
    (args.out / "cluster.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
