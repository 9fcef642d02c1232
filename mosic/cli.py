"""The ``mosic`` command line."""

from __future__ import annotations

import json
import math
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mosic.cli_evaluate import evaluate_command, ytvos_split_command
from mosic.cli_reproduce import reproduce_command
from mosic.cli_train import export_command, train_command
from mosic.pipeline.cluster import ClusterConfig, DaskRunner, batch_size, dask_client
from mosic.pipeline.extract import (
    ExtractConfig,
    ExtractSummary,
    InProcessRunner,
    open_store,
    run_extraction,
)
from mosic.pipeline.lock import StoreLockedError, WriterLock
from mosic.pipeline.progress import ExtractionProgress, print_failure
from mosic.stages.video_io import SizeSpec, list_sources
from mosic.store_schema import StoreError, TrackStore
from mosic.store_schema.validate import validate_store

app = typer.Typer(help="MoSiC: dense self-supervised learning from point tracks.")
store_app = typer.Typer(help="Inspect and check a track store.")
visualize_app = typer.Typer(help="Draw what a store holds.")
app.add_typer(store_app, name="store")
app.add_typer(visualize_app, name="visualize")
app.command("train")(train_command)
app.command("export")(export_command)
app.command("evaluate")(evaluate_command)
app.command("ytvos-split")(ytvos_split_command)
app.command("reproduce")(reproduce_command)
# Paths and reasons are printed as they are: no markup, no highlighting, no wrapping.
console = Console(markup=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(Text.assemble(("error: ", "red"), message))
    return typer.Exit(code)


@app.command("extract-tracks")
def extract_tracks(
    src: Annotated[Path, typer.Argument(help="Folder of videos / frame folders, or a list file.")],
    store: Annotated[Path, typer.Option(help="The Zarr store to write (created if missing).")],
    tracker: Annotated[str, typer.Option(help="Tracker backend.")] = "lk",
    grid: Annotated[int, typer.Option(help="Query grid: grid x grid points.")] = 16,
    query_every: Annotated[int, typer.Option(help="Seed a query set every K frames.")] = 8,
    horizon: Annotated[int, typer.Option(help="Frames each query set is tracked.")] = 67,
    frame_stride: Annotated[int, typer.Option(help="Keep every n-th source frame.")] = 1,
    max_frames: Annotated[int | None, typer.Option(help="Keep at most this many frames.")] = None,
    size: Annotated[
        str, typer.Option(help="Storage size: '256' (shorter side) or 'WIDTHxHEIGHT'.")
    ] = "256",
    window: Annotated[
        int, typer.Option(help="Frames per tracker call: query sets that fit share one call.")
    ] = 67,
    device: Annotated[str, typer.Option(help="cpu or cuda (GPU trackers).")] = "cpu",
    tracker_checkpoint: Annotated[
        Path | None,
        typer.Option(help="CoTracker3 weights: scaled_offline.pth or scaled_online.pth."),
    ] = None,
    tracker_repo: Annotated[
        Path | None,
        typer.Option(help="A co-tracker clone to load CoTracker3 from (else the installed one)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Redo videos already complete.")] = False,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any video failed.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes (default: one per GPU, or per core); 0: no cluster."),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Use the Dask scheduler at this address.")
    ] = None,
    dashboard: Annotated[str, typer.Option(help="Dashboard address of a local cluster.")] = ":8787",
    batch_videos: Annotated[
        int | None, typer.Option(help="Videos per task (default: about 4 tasks per worker).")
    ] = None,
) -> None:
    """Decode, track and store every video (re-runs skip what is complete)."""
    try:
        config = ExtractConfig(
            tracker=tracker,
            grid=grid,
            query_every=query_every,
            horizon=horizon,
            frame_stride=frame_stride,
            max_frames=max_frames,
            size=str(SizeSpec.parse(size)),
            window=window,
            device=device,
            tracker_checkpoint=str(tracker_checkpoint.resolve()) if tracker_checkpoint else None,
            tracker_repo=str(tracker_repo.resolve()) if tracker_repo else None,
        )
        sources = list_sources(src)
        with WriterLock(store):
            track_store, backend = open_store(str(store), config)
            console.print(f"{len(sources)} videos in {src} -> {store} (tracker {backend.name})")
            cluster = ClusterConfig(workers, scheduler, device, dashboard)
            summary = _extract(
                sources, track_store, config, backend, cluster, overwrite, batch_videos
            )
    except (ValueError, FileNotFoundError, StoreError, StoreLockedError) as exc:
        raise _fail(str(exc)) from None
    fps = summary.frames / max(summary.seconds, 1e-9)
    console.print(
        f"done {summary.done}, skipped {summary.skipped} (already complete), "
        f"failed {summary.failed} of {summary.total} videos; {summary.frames} frames "
        f"in {summary.seconds:.1f} s ({fps:.1f} frames/s, tracker {summary.track_seconds:.1f} s)"
    )
    for failure in summary.failures[:20]:
        print_failure(console, failure)
    if summary.failed > 20:
        console.print(f"  ... and {summary.failed - 20} more (mosic store info {store})")
    every_video_failed = summary.failed and summary.done + summary.skipped == 0
    if (strict and summary.failed) or every_video_failed:
        raise typer.Exit(1)


@app.command("synth-videos")
def synth_videos(
    out: Annotated[Path, typer.Argument(help="Folder to write the videos into.")],
    count: Annotated[int, typer.Option(help="How many videos.")] = 4,
    frames: Annotated[int, typer.Option(help="Frames per video.")] = 96,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT of the frames.")] = "256x192",
    kind: Annotated[str, typer.Option(help="mp4 files or JPEG frame folders.")] = "mp4",
    seed: Annotated[int, typer.Option(help="Seed of the first video.")] = 0,
) -> None:
    """Generate test videos: textured layers that move, rotate and scale, and an occluder."""
    from mosic.stages.synthetic import make_video, write_frame_folder, write_video_file

    spec = SizeSpec.parse(size)
    if spec.fixed is None or kind not in {"mp4", "frames"}:
        raise _fail("--size takes WIDTHxHEIGHT and --kind takes mp4 or frames")
    width, height = spec.fixed
    for i in range(count):
        video = make_video(seed + i, num_frames=frames, height=height, width=width)
        name = f"synth_{seed + i:03d}"
        if kind == "mp4":
            write_video_file(video, out / f"{name}.mp4")
        else:
            write_frame_folder(video, out / name)
    console.print(f"wrote {count} videos ({frames} frames, {width}x{height}) to {out}")


def _extract(
    sources: list,
    track_store: TrackStore,
    config: ExtractConfig,
    tracker,
    cluster: ClusterConfig,
    overwrite: bool,
    batch_videos: int | None,
) -> ExtractSummary:
    """Run the extraction in this process (``--workers 0``) or on a Dask cluster."""
    with ExtractionProgress(console) as progress, ExitStack() as stack:
        if cluster.workers == 0 and not cluster.scheduler:
            runner = InProcessRunner(track_store, config, tracker)
            workers = 1
        else:
            client = stack.enter_context(dask_client(cluster))
            console.print(f"dask dashboard: {client.dashboard_link}")
            runner = DaskRunner(client, str(track_store.path), config)
            workers = runner.workers
        return run_extraction(
            sources,
            track_store,
            config,
            runner,
            batch_videos=batch_videos or batch_size(len(sources), workers),
            overwrite=overwrite,
            on_start=progress.start,
            on_video=progress.advance,
        )


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="Where the demo writes everything.")] = Path(
        "runs/demo"
    ),
    steps: Annotated[int, typer.Option(help="Training steps.")] = 150,
) -> None:
    """Generated videos -> tracks -> training -> evaluation -> runs/demo/report.md (CPU)."""
    from mosic.pipeline.demo import DemoConfig, run_demo

    def run_cli(args: list[str]) -> None:
        console.print("$ mosic " + " ".join(args))
        code = app(args, standalone_mode=False)
        if code:
            raise _fail(f"mosic {args[0]} exited with {code}")

    report = run_demo(out, DemoConfig(steps=steps), run_cli)
    console.print(f"report: {report}")


def _open(path: Path) -> TrackStore:
    try:
        return TrackStore.open(path)
    except StoreError as exc:
        raise _fail(str(exc)) from None


def _bytes_on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@store_app.command("info")
def store_info(
    store: Path,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts, frames, tracker and its parameters, bytes on disk, failures."""
    track_store = _open(store)
    records = track_store.records()
    failures = track_store.failures()
    info = {
        "store": str(store),
        "videos": len(records),
        "frames": sum(r.num_frames for r in records),
        "query_sets": sum(r.num_query_sets for r in records),
        "bytes": _bytes_on_disk(store),
        "failures": len(failures),
        "extraction": track_store.extraction,
    }
    if as_json:
        info["failure_rows"] = [f.__dict__ for f in failures]
        console.print_json(json.dumps(info))
        return
    table = Table(title=f"mosic store {store}", show_header=False)
    for name in ("videos", "frames", "query_sets", "failures"):
        table.add_row(name, f"{info[name]:,}")
    table.add_row("bytes on disk", f"{info['bytes'] / 2**20:,.1f} MiB")
    if info["frames"]:
        table.add_row("bytes per frame", f"{info['bytes'] / info['frames']:,.0f}")
    for name, value in info["extraction"].items():
        table.add_row(name, json.dumps(value))
    console.print(table)
    for failure in failures[:20]:
        print_failure(console, failure)


@store_app.command("validate")
def store_validate(
    store: Path,
    deep: Annotated[bool, typer.Option(help="Also decode every frame chunk.")] = False,
) -> None:
    """Check every video's arrays against the schema; exit 1 with the reasons if any is wrong."""
    report = validate_store(_open(store), deep=deep)
    for note in report.notes:
        console.print(f"note: {note}")
    for problem in report.problems:
        console.print(Text.assemble(("problem: ", "red"), problem))
    if not report.ok:
        console.print(f"{store}: INVALID ({len(report.problems)} problems)")
        raise typer.Exit(1)
    console.print(f"{store}: valid ({report.videos} videos)")


@visualize_app.command("tracks")
def visualize_tracks(
    store: Path,
    video: Annotated[str, typer.Argument(help="The video's key (see mosic store info --json).")],
    output: Annotated[Path, typer.Option("-o", "--output", help=".gif, .mp4 or .png")],
    query_set: Annotated[int, typer.Option(help="Which query set to draw.")] = 0,
    step: Annotated[int, typer.Option(help="Draw every n-th frame.")] = 1,
    points: Annotated[int, typer.Option(help="About this many points (a sub-grid).")] = 256,
) -> None:
    """Tracks of one query set drawn over its frames; hidden points hollow."""
    from mosic.stages.visualize import draw_tracks, write_frames

    track_store = _open(store)
    try:
        group = track_store.video(video)
        start = int(group["query_frames"][query_set])
    except (StoreError, IndexError) as exc:
        raise _fail(f"{store}: {exc}") from None
    horizon = group["positions"].shape[1]
    frames = group["frames"][start : start + horizon]
    positions = group["positions"][query_set].astype(np.float32)
    visible = group["visible"][query_set]
    grid = math.isqrt(positions.shape[1])
    stride = max(1, math.ceil(grid / math.isqrt(max(points, 1))))
    keep = np.arange(grid * grid).reshape(grid, grid)[::stride, ::stride].ravel()
    drawn = draw_tracks(frames, positions[:, keep], visible[:, keep])[::step]
    try:
        write_frames(drawn, output)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    console.print(f"wrote {output} ({len(drawn)} frames, {len(keep)} points)")
