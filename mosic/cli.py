"""The ``mosic`` command line."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from mosic.cli_evaluate import evaluate_command, ytvos_split_command
from mosic.cli_reproduce import reproduce_command
from mosic.cli_store import store_app, visualize_app
from mosic.cli_train import export_command, train_command
from mosic.pipeline.cluster import (
    ClusterConfig,
    DaskRunner,
    batch_size,
    dashboard_url,
    dask_client,
    exposure_warnings,
)
from mosic.pipeline.cluster_security import ClusterError
from mosic.pipeline.extract import (
    VIDEOS_PER_PART,
    ExtractConfig,
    ExtractSummary,
    InProcessRunner,
    open_store,
    run_extraction,
)
from mosic.pipeline.lock import StoreLockedError
from mosic.pipeline.object_lock import writer_lock
from mosic.pipeline.progress import ExtractionProgress, print_failure
from mosic.stages.video_io import SizeSpec, list_sources
from mosic.store_schema import StoreError, StoreLocation, TrackStore
from mosic.store_schema.layout import DEFAULT_JPEG_QUALITY

app = typer.Typer(help="MoSiC: dense self-supervised learning from point tracks.")
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
    store: Annotated[
        str, typer.Option(help="The Zarr store to write (created if missing); or s3://BUCKET/NAME.")
    ],
    tracker: Annotated[str, typer.Option(help="Tracker backend.")] = "lk",
    grid: Annotated[
        int | None,
        typer.Option(
            help="Query grid: grid x grid points. Default: the tracker's (lk 16, CoTracker3 32)."
        ),
    ] = None,
    query_every: Annotated[int, typer.Option(help="Seed a query set every K frames.")] = 8,
    horizon: Annotated[int, typer.Option(help="Frames each query set is tracked.")] = 67,
    frame_stride: Annotated[int, typer.Option(help="Keep every n-th source frame.")] = 1,
    max_frames: Annotated[int | None, typer.Option(help="Keep at most this many frames.")] = None,
    size: Annotated[
        str, typer.Option(help="Storage size: '256' (shorter side) or 'WIDTHxHEIGHT'.")
    ] = "256",
    window: Annotated[
        int | None,
        typer.Option(
            help="Frames per tracker call: query sets that fit share one call "
            "(default: the tracker's, lk 123, cotracker3 75 with the default horizon)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda (GPU trackers).")] = "cpu",
    tracker_checkpoint: Annotated[
        Path | None,
        typer.Option(help="CoTracker3 weights: scaled_offline.pth or scaled_online.pth."),
    ] = None,
    tracker_repo: Annotated[
        Path | None,
        typer.Option(help="A co-tracker clone to load CoTracker3 from (else the installed one)."),
    ] = None,
    tracker_dtype: Annotated[
        str, typer.Option(help="CoTracker3 on CUDA: float32, or bfloat16 / float16 autocast.")
    ] = "float32",
    frame_codec: Annotated[
        str, typer.Option(help="Frames as 'jpeg' (default) or 'raw' (lossless, ~9x larger).")
    ] = "jpeg",
    jpeg_quality: Annotated[
        int, typer.Option(help="JPEG quality of the frames (1-100).")
    ] = DEFAULT_JPEG_QUALITY,
    overwrite: Annotated[bool, typer.Option(help="Redo videos already complete.")] = False,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any video failed.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes (default: one per GPU, or per core); 0: no cluster."),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Use the Dask scheduler at this address (tls://HOST:PORT).")
    ] = None,
    tls_ca_file: Annotated[
        Path | None, typer.Option(help="--scheduler over TLS: the cluster's CA certificate.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="--scheduler over TLS: this client's certificate.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="--scheduler over TLS: this client's private key.")
    ] = None,
    dashboard: Annotated[
        str, typer.Option(help="Dashboard of a local cluster: [HOST]:PORT, loopback if no HOST.")
    ] = ":8787",
    no_dashboard: Annotated[
        bool, typer.Option("--no-dashboard", help="Start a local cluster without a dashboard.")
    ] = False,
    batch_videos: Annotated[
        int | None,
        typer.Option(help="Videos per task and part (default: ~4 tasks per worker, <= 128)."),
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
            tracker_dtype=tracker_dtype,
            frame_codec=frame_codec,
            jpeg_quality=jpeg_quality,
        )
        tls = [str(p.resolve()) if p else None for p in (tls_ca_file, tls_cert, tls_key)]
        cluster = ClusterConfig(
            workers, scheduler, device, None if no_dashboard else dashboard, *tls
        )
        for warning in exposure_warnings(cluster):
            err.print(Text.assemble(("warning: ", "yellow"), warning))
        sources = list_sources(src)
        with writer_lock(StoreLocation.parse(store)) as lock:
            for note in lock.notes():
                console.print(f"note: {note}")
            track_store, backend = open_store(store, config)
            console.print(f"{len(sources)} videos in {src} -> {store} (tracker {backend.name})")
            summary = _extract(
                sources, track_store, config, backend, cluster, overwrite, batch_videos
            )
    except (ValueError, FileNotFoundError, StoreError, StoreLockedError, ClusterError) as exc:
        raise _fail(str(exc)) from None
    fps = summary.frames / max(summary.seconds, 1e-9)
    console.print(
        f"done {summary.done}, skipped {summary.skipped} (already complete), "
        f"failed {summary.failed} of {summary.total} videos; {summary.frames} frames "
        f"in {summary.seconds:.1f} s ({fps:.1f} frames/s, tracker {summary.track_seconds:.1f} s, "
        f"{summary.frame_passes:.2f} tracker frame-passes per stored frame)"
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
    conditions: Annotated[
        str,
        typer.Option(
            help="Comma-separated: objects, exits, rotation, lighting, noise, blur, "
            "low-texture, scene-cut; 'all' is every one but scene-cut."
        ),
    ] = "",
) -> None:
    """Generate test videos: textured layers that move, rotate and scale, and an occluder."""
    from mosic.stages.synthetic import make_video, write_frame_folder, write_video_file
    from mosic.stages.synthetic_conditions import conditions_named

    spec = SizeSpec.parse(size)
    if spec.fixed is None or kind not in {"mp4", "frames"}:
        raise _fail("--size takes WIDTHxHEIGHT and --kind takes mp4 or frames")
    try:
        chosen = conditions_named(conditions)
    except ValueError as err:
        raise _fail(f"--conditions: {err}") from None
    width, height = spec.fixed
    for i in range(count):
        video = make_video(
            seed + i, num_frames=frames, height=height, width=width, conditions=chosen
        )
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
            console.print(f"dask scheduler: {client.scheduler.address}")
            if url := dashboard_url(client):
                console.print(f"dask dashboard: {url}")
            runner = DaskRunner(client, str(track_store.path), config)
            workers = runner.workers
        return run_extraction(
            sources,
            track_store,
            config,
            runner,
            batch_videos=batch_videos or batch_size(len(sources), workers, VIDEOS_PER_PART),
            overwrite=overwrite,
            on_start=progress.start,
            on_video=progress.advance,
        )


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="Where the demo writes everything.")] = Path(
        "runs/demo"
    ),
    steps: Annotated[
        int | None, typer.Option(help="Training steps (default: the benchmark's).")
    ] = None,
) -> None:
    """The trajectory benchmark for one seed: generated videos -> tracks -> start model ->
    training (MoSiC, no tracks, corrupted tracks) -> evaluation -> runs/demo/report.md (CPU)."""
    from mosic.pipeline.demo import DemoConfig, run_demo

    def run_cli(args: list[str]) -> None:
        console.print("$ mosic " + " ".join(args))
        code = app(args, standalone_mode=False)
        if code:
            raise _fail(f"mosic {args[0]} exited with {code}")

    from mosic.pipeline.reproduce import StaleRun

    try:
        report = run_demo(out, DemoConfig(steps=steps), run_cli)
    except StaleRun as exc:  # a run left by a demo with other settings
        raise _fail(f"{exc} (or use another --out)") from None
    console.print(f"report: {report}")
