"""The ``mosic`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from mosic.pipeline.extract import ExtractConfig, open_store, run_extraction
from mosic.pipeline.progress import ExtractionProgress
from mosic.stages.video_io import SizeSpec, list_sources
from mosic.store_schema import StoreError, TrackStore
from mosic.store_schema.validate import validate_store

app = typer.Typer(help="MoSiC: dense self-supervised learning from point tracks.")
store_app = typer.Typer(help="Inspect and check a track store.")
visualize_app = typer.Typer(help="Draw what a store holds.")
app.add_typer(store_app, name="store")
app.add_typer(visualize_app, name="visualize")
console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
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
    window: Annotated[int, typer.Option(help="Frames per tracker call (memory bound).")] = 192,
    device: Annotated[str, typer.Option(help="cpu or cuda (GPU trackers).")] = "cpu",
    overwrite: Annotated[bool, typer.Option(help="Redo videos already complete.")] = False,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any video failed.")] = False,
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
        )
        sources = list_sources(src)
        track_store, backend = open_store(str(store), config)
    except (ValueError, FileNotFoundError, StoreError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"{len(sources)} videos in {src} -> {store} (tracker {backend.name})")
    with ExtractionProgress(console) as progress:
        summary = run_extraction(
            sources,
            track_store,
            config,
            backend,
            overwrite=overwrite,
            on_start=progress.start,
            on_video=progress.advance,
        )
    fps = summary.frames / max(summary.seconds, 1e-9)
    console.print(
        f"done {summary.done}, skipped {summary.skipped} (already complete), "
        f"failed {summary.failed} of {summary.total} videos; {summary.frames} frames "
        f"in {summary.seconds:.1f} s ({fps:.1f} frames/s, tracker {summary.track_seconds:.1f} s)"
    )
    for failure in summary.failures[:20]:
        console.print(f"  [red]{failure.stage}[/red] {failure.source}: {failure.reason}")
    if summary.failed > 20:
        console.print(f"  ... and {summary.failed - 20} more (mosic store info {store})")
    processed = summary.total - summary.skipped
    if (strict and summary.failed) or (processed and summary.failed == processed):
        raise typer.Exit(1)


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
        console.print(f"  [red]{failure.stage}[/red] {failure.source}: {failure.reason}")


@store_app.command("validate")
def store_validate(
    store: Path,
    deep: Annotated[bool, typer.Option(help="Also decode every frame chunk.")] = False,
) -> None:
    """Check every video's arrays against the schema; exit 1 with the reasons if any is wrong."""
    report = validate_store(_open(store), deep=deep)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    for problem in report.problems:
        console.print(f"[red]problem:[/red] {problem}", highlight=False)
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
    points: Annotated[int, typer.Option(help="Draw at most this many points.")] = 256,
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
    frames = group["frames"][start : start + horizon : step]
    positions = group["positions"][query_set, ::step].astype(np.float32)
    visible = group["visible"][query_set, ::step]
    keep = np.linspace(0, positions.shape[1] - 1, min(points, positions.shape[1])).astype(int)
    drawn = draw_tracks(frames, positions[:, keep], visible[:, keep])
    try:
        write_frames(drawn, output)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    console.print(f"wrote {output} ({len(drawn)} frames, {len(keep)} points)")
