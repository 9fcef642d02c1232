"""``mosic store`` (info, keys, validate, convert) and ``mosic visualize``: what a store holds."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mosic.pipeline.extract import VIDEOS_PER_PART
from mosic.pipeline.progress import ExtractionProgress, print_failure
from mosic.store_schema import FrameCodec, StoreError, TrackStore
from mosic.store_schema.layout import DEFAULT_JPEG_QUALITY
from mosic.store_schema.validate import validate_store

store_app = typer.Typer(help="Inspect and check a track store.")
visualize_app = typer.Typer(help="Draw what a store holds.")
# Paths and reasons are printed as they are: no markup, no highlighting, no wrapping.
console = Console(markup=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)

STORE_HELP = "A track store: a folder, or s3://BUCKET/NAME (docs/store.md#object-storage)."


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(Text.assemble(("error: ", "red"), message))
    return typer.Exit(code)


def _open(path: str, code: int = 2) -> TrackStore:
    try:
        return TrackStore.open(path)
    except StoreError as exc:
        raise _fail(str(exc), code) from None


@store_app.command("info")
def store_info(
    store: Annotated[str, typer.Argument(help=STORE_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts, frames, tracker and its parameters, bytes, failures (reads no video data)."""
    track_store = _open(store)
    totals = track_store.index.totals
    failures = track_store.failures()
    info = {
        "store": str(store),
        "schema_version": 2,
        **totals,
        "failures": len(failures),
        "frame_codec": track_store.frame_codec.attrs(),
        "extraction": track_store.extraction,
    }
    if as_json:
        info["failure_rows"] = [f.__dict__ for f in failures]
        console.print_json(json.dumps(info))
        return
    table = Table(title=f"mosic store {store}", show_header=False)
    for name in ("videos", "frames", "query_sets", "failures"):
        table.add_row(name, f"{info[name]:,}")
    table.add_row("bytes (recorded at write time)", f"{info['bytes'] / 2**20:,.1f} MiB")
    if info["frames"]:
        table.add_row("bytes per frame (frames + tracks)", f"{info['bytes'] / info['frames']:,.0f}")
    table.add_row("frame_codec", json.dumps(info["frame_codec"]))
    for name, value in info["extraction"].items():
        table.add_row(name, json.dumps(value))
    console.print(table)
    console.print("video keys: mosic store keys " + str(store))
    for failure in failures[:20]:
        print_failure(console, failure)


@store_app.command("keys")
def store_keys(
    store: Annotated[str, typer.Argument(help=STORE_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every indexed video's key, frames and query sets, one per line."""
    records = _open(store).records()
    if as_json:
        rows = [{"key": r.key, "frames": r.num_frames, "query_sets": r.num_query_sets}
                for r in records]  # fmt: skip
        console.print_json(json.dumps(rows))
        return
    for r in records:
        console.print(f"{r.key}\t{r.num_frames} frames\t{r.num_query_sets} query sets")


@store_app.command("validate")
def store_validate(
    store: Annotated[str, typer.Argument(help=STORE_HELP)],
    deep: Annotated[bool, typer.Option(help="Also decode every frame chunk.")] = False,
) -> None:
    """Check every video against the schema and its recorded sizes and checksums.

    Exit 0 if valid; 1 if not (each problem names the video and the piece) or if the store
    cannot be opened; 2 on a usage error.
    """
    report = validate_store(_open(store, code=1), deep=deep)
    for note in report.notes:
        console.print(f"note: {note}")
    for problem in report.problems:
        console.print(Text.assemble(("problem: ", "red"), problem))
    if not report.ok:
        console.print(f"{store}: INVALID ({len(report.problems)} problems)")
        raise typer.Exit(1)
    console.print(f"{store}: valid ({report.videos} videos)")


@store_app.command("convert")
def store_convert(
    old: Annotated[Path, typer.Argument(help="A store of schema version 1.")],
    new: Annotated[str, typer.Argument(help="The version 2 store to write (must not exist).")],
    frame_codec: Annotated[str, typer.Option(help="'jpeg' or 'raw' (lossless).")] = "jpeg",
    jpeg_quality: Annotated[
        int, typer.Option(help="JPEG quality of the frames.")
    ] = DEFAULT_JPEG_QUALITY,
    videos_per_part: Annotated[int, typer.Option(help="Videos per part.")] = VIDEOS_PER_PART,
) -> None:
    """Write a version 2 store from a version 1 store (frames re-encoded, tracks copied)."""
    from mosic.store_schema.convert import convert_v1
    from mosic.store_schema.v1 import V1Store

    try:
        codec = FrameCodec(frame_codec, jpeg_quality)
        source = V1Store.open(old)
        with ExtractionProgress(console, label="convert") as progress:
            progress.start(len(source.keys()))
            result = convert_v1(source, new, codec, videos_per_part, progress.count)
    except (ValueError, StoreError) as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"converted {result.videos} videos ({result.frames} frames) of {old} -> {new}; "
        f"{len(result.failures)} unreadable (in its failures table)"
    )
    for failure in result.failures[:20]:
        print_failure(console, failure)


@visualize_app.command("tracks")
def visualize_tracks(
    store: Annotated[str, typer.Argument(help=STORE_HELP)],
    video: Annotated[str, typer.Argument(help="The video's key (see mosic store keys).")],
    output: Annotated[Path, typer.Option("-o", "--output", help=".gif, .mp4 or .png")],
    query_set: Annotated[int, typer.Option(help="Which query set to draw.")] = 0,
    step: Annotated[
        int | None, typer.Option(help="Draw every n-th frame (default: about 12 frames).")
    ] = None,
    points: Annotated[int, typer.Option(help="About this many points (a sub-grid).")] = 256,
) -> None:
    """Tracks of one query set drawn over its frames; hidden points hollow.

    A .png is a contact sheet of about 12 frames; .gif and .mp4 animate them.
    """
    from mosic.stages.visualize import draw_tracks, pick_points, write_frames

    track_store = _open(store)
    try:
        frames, positions, visible = track_store.read_query_set(video, query_set)
    except StoreError as exc:
        raise _fail(str(exc)) from None
    step = step or max(1, math.ceil(len(frames) / 12))
    keep = pick_points(positions.shape[1], points)
    drawn = draw_tracks(frames, positions[:, keep], visible[:, keep])[::step]
    try:
        write_frames(drawn, output)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    console.print(f"wrote {output} ({len(drawn)} frames, {len(keep)} points)")
