"""What the extraction grid costs: stored bytes per frame and extraction time, grid 16 against 32.

``mosic train`` draws 256 points per clip from the stored grid points inside each clip's crop
(docs/method.md), so CoTracker3's default grid is 32 x 32 (1024 points per query set; ``lk``'s
stays 16 x 16 for speed). This runs ``mosic extract-tracks`` (the ``lk`` tracker, default
settings otherwise, no Dask workers) at grids 1, 16 and 32 on generated videos and on a real video
(``../shared/data/videos/bikes.mp4`` from the repository root), and reports bytes per stored
frame: the whole store, and its tracks (the store minus the grid-1 store, which holds the same
frames and almost no tracks), with the extraction's wall time. Every ratio compares runs of
this same process. Prints a table and writes ``<out>/track_grid.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from typer.testing import CliRunner

from mosic.cli import app
from mosic.stages.synthetic import make_video, write_video_file
from mosic.store_schema import TrackStore

REAL_VIDEO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "videos" / "bikes.mp4"


def store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def extract(videos: Path, store: Path, grid: int) -> dict:
    """One ``mosic extract-tracks`` run: stored frames, bytes and seconds."""
    started = time.perf_counter()
    args = ["extract-tracks", str(videos), "--store", str(store), "--grid", str(grid)]
    result = CliRunner().invoke(app, [*args, "--workers", "0"])
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    frames = sum(record.num_frames for record in TrackStore.open(store).records())
    return {"grid": grid, "frames": frames, "bytes": store_bytes(store), "seconds": seconds}


def measure(name: str, videos: Path, work: Path) -> dict:
    runs = {
        grid: extract(videos, work / f"{videos.name}-{grid}.zarr", grid) for grid in (1, 16, 32)
    }
    frames = runs[1]["frames"]
    base = runs[1]["bytes"] / frames
    row = {"videos": name, "stored_frames": frames, "grid_1_bytes_per_frame": base}
    for grid in (16, 32):
        row[f"grid_{grid}_bytes_per_frame"] = runs[grid]["bytes"] / frames
        row[f"grid_{grid}_track_bytes_per_frame"] = runs[grid]["bytes"] / frames - base
        row[f"grid_{grid}_seconds"] = runs[grid]["seconds"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mosic-bench-"))
    rows = []
    try:
        generated = work / "generated"
        for i in range(args.videos):
            video = make_video(i, num_frames=args.frames, height=192, width=256)
            write_video_file(video, generated / f"v{i}.mp4")
        label = f"generated ({args.videos} x {args.frames} frames at 256x192, stored at 341x256)"
        rows.append(measure(label, generated, work))
        if REAL_VIDEO.exists():
            real = work / "real"
            real.mkdir()
            (real / REAL_VIDEO.name).symlink_to(REAL_VIDEO.resolve())
            rows.append(measure(f"real ({REAL_VIDEO.name}, 640x272 stored at 602x256)", real, work))
        else:
            print(f"  {REAL_VIDEO} not found: real video skipped")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("stage one, grid 16 against grid 32 (lk tracker, --workers 0): bytes per stored frame")
    for r in rows:
        print(f"  {r['videos']}: {r['stored_frames']} stored frames")
        for grid in (16, 32):
            print(
                f"    grid {grid:>2}: store {r[f'grid_{grid}_bytes_per_frame']:>9,.0f} B/frame, "
                f"tracks {r[f'grid_{grid}_track_bytes_per_frame']:>7,.0f} B/frame, "
                f"extraction {r[f'grid_{grid}_seconds']:6.1f} s"
            )
        tracks = r["grid_32_track_bytes_per_frame"] / r["grid_16_track_bytes_per_frame"]
        store = r["grid_32_bytes_per_frame"] / r["grid_16_bytes_per_frame"]
        seconds = r["grid_32_seconds"] / r["grid_16_seconds"]
        print(
            f"    grid 32 / grid 16: tracks {tracks:.2f}x, store {store:.2f}x, "
            f"extraction time {seconds:.2f}x"
        )
    (args.out / "track_grid.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
