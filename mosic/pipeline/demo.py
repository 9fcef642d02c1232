"""``mosic demo``: the trajectory benchmark (docs/reproduce.md), one seed, on a CPU, with a report.

The rows of ``configs/mini`` named in ``DemoConfig.rows`` (the start model, MoSiC, MoSiC
without tracks and MoSiC on corrupted tracks) run through ``mosic reproduce``'s code for one
seed: generated videos of object categories whose appearance drifts -> ``mosic extract-tracks``
(run as a command, so the rows find the store complete) -> the tracker scored against the
generator's ground truth (TAP-Vid) -> the starting backbone pretrained on still frames ->
``mosic train`` -> the evaluations. ``report.md`` shows the table, the tracker's scores, the
loss, and cluster maps of held-out frames for every row. Every figure in the report comes from
the run that writes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from mosic.pipeline.reproduce import Locations, Reproduction
from mosic.pipeline.reproduce_config import Row, load_rows
from mosic.pipeline.reproduce_tables import write_tables
from mosic.pipeline.trajbench import training_scene
from mosic.stages.drift_layers import CATEGORIES
from mosic.stages.evaluation.datasets import open_dataset
from mosic.stages.evaluation.features import DenseFeatures
from mosic.stages.evaluation.models import load_eval_backbone
from mosic.stages.evaluation.video_segmentation import evaluate_video
from mosic.stages.evaluation.visuals import Visual, colorize, resize_labels
from mosic.stages.tapvid import tapvid_metrics
from mosic.store_schema import TrackStore, video_key

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "mini"


@dataclass(frozen=True)
class DemoConfig:
    """Which benchmark rows run, for which seed; ``steps`` overrides their training length."""

    configs: Path = CONFIGS
    rows: tuple[str, ...] = ("a-start", "b-mosic", "c-no-tracks", "d-swap-xy")
    seed: int = 0
    steps: int | None = None
    frames_shown: int = 4
    panel_height: int = 192  # pixels of each cluster-map panel (width: the frames' aspect)


def demo_rows(cfg: DemoConfig) -> list[Row]:
    """The benchmark's rows ``cfg.rows`` for the seed ``cfg.seed`` (and ``cfg.steps``)."""
    if not cfg.configs.is_dir():
        raise FileNotFoundError(f"{cfg.configs}: the benchmark's configs (run from a clone)")
    rows = [row for row in load_rows([cfg.configs]) if row.id in cfg.rows]
    missing = set(cfg.rows) - {row.id for row in rows}
    if missing:
        raise FileNotFoundError(f"{cfg.configs}: no config {', '.join(sorted(missing))}")
    out = []
    for row in rows:
        training = row.training
        if training is not None and cfg.steps is not None:
            settings = training.settings | {"max_steps": cfg.steps, "checkpoint_every": cfg.steps}
            training = replace(training, settings=settings)
        out.append(replace(row, seeds=(cfg.seed,), training=training))
    return out


def run_demo(out: Path, cfg: DemoConfig, run_cli: Callable[[list[str]], None]) -> Path:
    """Run the demo into ``out``; ``run_cli`` runs one ``mosic`` command line. Returns the
    report's path."""
    started = time.perf_counter()
    rows = demo_rows(cfg)
    reproduction = Reproduction(rows, Locations(), out / "work")
    spec = rows[0].generate
    reproduction.generate(spec)
    data = out / "work" / "data"

    trained = next(row for row in rows if row.training)
    extract = trained.training.extract
    store = out / "work" / "stores" / f"{trained.training.store}.zarr"
    options = [f"--{k.replace('_', '-')}={v}" for k, v in extract.items() if k != "tracker"]
    run_cli(["extract-tracks", str(data / trained.training.videos), "--store", str(store),
             "--tracker", extract.get("tracker", "lk"), *options, "--workers", "2",
             "--dashboard", ":0"])  # fmt: skip
    run_cli(["store", "info", str(store)])
    tracking = score_tracks(TrackStore.open(store), spec)
    run_cli(["visualize", "tracks", str(store), "train000", "--step", "4", "--points", "64",
             "-o", str(out / "tracks.png")])  # fmt: skip

    reproduction.run()
    markdown, _ = write_tables(reproduction, out)
    models = {row.row: reproduction.model(row, cfg.seed) for row in rows}
    losses = _losses(reproduction.run_dir(trained, cfg.seed) / "metrics.jsonl")
    loss_curve(losses, out / "loss.png")
    evaluation = next(e for e in trained.evaluations if e.benchmark == "video")
    cluster_maps(data / evaluation.data, models, evaluation.options, cfg, out / "clusters.png")
    (out / "results.json").write_text(json.dumps({"tracking": tracking}))
    table = markdown.read_text().split("\n", 2)[2]  # without the "# Reproduction" title
    seconds = time.perf_counter() - started
    return write_report(out, cfg, rows, tracking, table, losses, seconds)


def score_tracks(store: TrackStore, spec) -> dict:
    """TAP-Vid metrics of the stored tracks of the training videos against the generator's
    ground truth, averaged over query sets and videos."""
    scores: list[dict] = []
    for i in range(spec.train_videos):
        scene = training_scene(spec, i)
        data = store.read_video(video_key(f"train{i:03d}"))
        _, horizon, n, _ = data.positions.shape
        for q, start in enumerate(data.query_frames):
            queries = np.concatenate([np.full((n, 1), start), data.positions[q, 0]], axis=1)
            gt_positions, gt_visible = scene.ground_truth(queries.astype(np.float32))
            window = slice(start, start + horizon)
            scores.append(
                tapvid_metrics(
                    np.zeros(n),
                    gt_positions[window],
                    gt_visible[window],
                    data.positions[q],
                    data.visible[q],
                    (scene.height, scene.width),
                )  # fmt: skip
            )
    keys = ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy", "median_error")
    return {k: float(np.nanmean([s[k] for s in scores])) for k in keys}


def _losses(path: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in path.read_text().splitlines() if line]


def loss_curve(losses: list[float], path: Path, width: int = 640, height: int = 240) -> None:
    """A plain line plot of the training loss (and its 10-step running mean)."""
    canvas = np.full((height, width, 3), 255, np.uint8)
    values = np.asarray(losses)
    smooth = np.convolve(values, np.ones(10) / 10, mode="valid") if len(values) >= 10 else values
    low, high = float(values.min()), float(values.max())
    margin = 30

    def points(series: np.ndarray, offset: int) -> np.ndarray:
        x = margin + (np.arange(len(series)) + offset) / max(len(values) - 1, 1) * (
            width - 2 * margin
        )
        y = height - margin - (series - low) / max(high - low, 1e-9) * (height - 2 * margin)
        return np.stack([x, y], 1).astype(np.int32)

    cv2.polylines(canvas, [points(values, 0)], False, (170, 190, 230), 1, cv2.LINE_AA)
    cv2.polylines(canvas, [points(smooth, len(values) - len(smooth))], False, (30, 60, 160), 2,
                  cv2.LINE_AA)  # fmt: skip
    for text, y in ((f"{high:.3f}", margin), (f"{low:.3f}", height - margin)):
        cv2.putText(canvas, text, (2, y), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    cv2.putText(canvas, f"step {len(values)}", (width - 80, height - 8), cv2.FONT_HERSHEY_SIMPLEX,
                0.35, (0, 0, 0), 1)  # fmt: skip
    Image.fromarray(canvas).save(path)


class _Keep:
    """A visual sink that keeps the first ``count`` pictures' data."""

    def __init__(self, count: int):
        self.count = count
        self.kept: list[Visual] = []

    def __call__(self, visual: Visual) -> None:
        if len(self.kept) < self.count:
            self.kept.append(visual)


def cluster_maps(
    davis: Path, models: dict[str, tuple[str, str | None]], options: dict, cfg: DemoConfig,
    path: Path,
) -> None:  # fmt: skip
    """Held-out frames, their category masks, and for each model the categories its
    dataset-level k-means clusters are matched to (as the video column scores them), one row
    per frame, each panel ``cfg.panel_height`` pixels high."""
    dataset = open_dataset("davis", str(davis), "val")
    size = int(options.get("input_size", 224))
    kept: dict[str, list[Visual]] = {}
    for label, (model, weights) in models.items():
        sink = _Keep(cfg.frames_shown)
        features = DenseFeatures(load_eval_backbone(model, weights))
        evaluate_video(dataset, features, mode="dataset", input_size=size, visuals=sink)
        kept[label] = sink.kept
    shown = next(iter(kept.values()))
    frame_h, frame_w = shown[0].image.shape[:2]
    height = cfg.panel_height
    width = round(height * frame_w / frame_h)

    def labels(ids: np.ndarray) -> np.ndarray:
        return colorize(resize_labels(ids, height, width))

    columns = {
        "frame": [cv2.resize(v.image, (width, height), interpolation=cv2.INTER_LINEAR)
                  for v in shown],
        "ground truth": [labels(v.truth) for v in shown],
    }  # fmt: skip
    columns |= {name: [labels(v.prediction) for v in visuals] for name, visuals in kept.items()}
    title = 28
    picture = Image.new("RGB", (width * len(columns), title + height * len(shown)), "white")
    draw = ImageDraw.Draw(picture)
    for c, (name, panels) in enumerate(columns.items()):
        draw.text((c * width + 4, 2), name[: width // 6], fill="black")
        for r, panel in enumerate(panels):
            picture.paste(Image.fromarray(panel), (c * width, title + r * height))
    picture.save(path)


def write_report(
    out: Path,
    cfg: DemoConfig,
    rows: list[Row],
    tracking: dict,
    table: str,
    losses: list[float],
    seconds: float,
) -> Path:
    """``report.md``: what ran, the tracker's scores, the loss, the table, the cluster maps."""
    spec = rows[0].generate
    trained = next(row for row in rows if row.training)
    settings = trained.training.settings
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    names = ", ".join(row.row for row in rows)
    lines = [
        "# mosic demo report",
        "",
        f"Generated in {seconds / 60:.1f} minutes on this machine by `mosic demo`: the "
        f"trajectory benchmark of docs/reproduce.md for seed {cfg.seed} (rows: {names}). "
        f"{spec.train_videos} training videos of {spec.frames} frames at "
        f"{spec.width}x{spec.height}: objects of {len(CATEGORIES) - 1} shared categories "
        "(their texture pattern) whose colour, brightness, orientation and shape change over "
        "time while they move, occlude each other and leave the frame, under a moving camera; "
        "held-out videos show new instances. Exact ground truth for tracks and masks.",
        "",
        "## Stage one: tracks",
        "![tracks](tracks.png)",
        "",
        "Filled dots: visible; hollow: hidden. The `lk` tracker against the ground truth "
        "(TAP-Vid metrics at 256 x 256, every query set of every training video):",
        "",
        "| average Jaccard | position accuracy | occlusion accuracy | median error (px) |",
        "| --- | --- | --- | --- |",
        f"| {tracking['average_jaccard']:.3f} | {tracking['average_pts_within_thresh']:.3f} | "
        f"{tracking['occlusion_accuracy']:.3f} | {tracking['median_error']:.2f} |",
        "",
        "## Stage two: training",
        f"`{trained.backbone}`, first pretrained on still frames of {spec.pretrain_videos} "
        "other videos with an image-only objective (the start model), then trained with MoSiC "
        f"for {settings['max_steps']} steps of {settings['batch_size']} clips; MoSiC's loss "
        f"{first:.3f} (first 10 steps) -> {last:.3f} (last 10).",
        "",
        "![loss](loss.png)",
        "",
        "## Evaluation on held-out videos",
        "Video object segmentation: k-means over the features of every held-out frame (one "
        "cluster per category), clusters matched to categories, mIoU. Linear: a linear head on "
        "frozen features. Track consistency: cosine similarity of a point's features at a "
        "clip's first frame and at later frames along its ground-truth track, and its margin "
        "over pairs of different points.",
        "",
        table.strip(),
        "",
        "Cluster maps of held-out frames: the category each pixel's cluster is matched to, as "
        "the video column scores them (columns: frame, ground truth, then each row's model):",
        "",
        "![clusters](clusters.png)",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
