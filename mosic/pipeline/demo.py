"""``mosic demo``: the whole pipeline on generated videos, on a CPU, with a report.

Videos with exact ground truth -> ``mosic extract-tracks`` -> the tracker scored against the
ground truth (TAP-Vid) -> ``mosic train`` (a small ViT) -> ``mosic evaluate`` of the trained
and the untrained backbone -> ``report.md`` with the pictures it links. Every figure in the
report comes from the run that writes it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from mosic.pipeline.evaluate import EvalRequest, run_evaluation
from mosic.pipeline.train import train
from mosic.pipeline.train_config import OptimConfig, TrainConfig
from mosic.stages.data.augment import AugmentConfig
from mosic.stages.data.clips import ClipConfig
from mosic.stages.evaluation.features import DenseFeatures
from mosic.stages.evaluation.kmeans import kmeans
from mosic.stages.evaluation.models import load_eval_backbone
from mosic.stages.model.backbone import create_backbone
from mosic.stages.synthetic import SyntheticVideo, make_video
from mosic.stages.synthetic_datasets import write_davis, write_voc
from mosic.stages.tapvid import tapvid_metrics
from mosic.store_schema import TrackStore


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo: small enough for 2 CPU cores in minutes."""

    videos: int = 8
    val_videos: int = 2
    frames: int = 96
    width: int = 256
    height: int = 192
    backbone: str = "vit-tiny-test"
    input_size: int = 96
    clip_frames: int = 8
    steps: int = 150
    batch: int = 8
    seed: int = 0
    linear_lr: float = 1.0  # where ground-truth features clear the class prior (mini data)


def run_demo(out: Path, cfg: DemoConfig, run_cli: Callable[[list[str]], None]) -> Path:
    """Run the demo into ``out``; ``run_cli`` runs one ``mosic`` command line. Returns the
    report's path."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    names = [f"scene{i:02d}" for i in range(cfg.videos)]
    videos = [
        make_video(cfg.seed + i, num_frames=cfg.frames, height=cfg.height, width=cfg.width)
        for i in range(cfg.videos)
    ]
    davis = write_davis(videos, out / "data" / "DAVIS", names)
    voc = write_voc(videos, out / "data", names, every=8, train_videos=cfg.videos - cfg.val_videos)

    store = out / "tracks.zarr"
    size = f"{cfg.width}x{cfg.height}"
    run_cli(["extract-tracks", str(davis / "JPEGImages" / "480p"), "--store", str(store),
             "--size", size, "--workers", "2", "--dashboard", ":0"])  # fmt: skip
    run_cli(["store", "info", str(store)])
    tracking = score_tracks(TrackStore.open(store), videos, names)
    run_cli(["visualize", "tracks", str(store), names[0], "--step", "8", "--points", "64",
             "-o", str(out / "tracks.png")])  # fmt: skip

    torch.manual_seed(cfg.seed)  # the student's initial weights, as train() draws them
    untrained = out / "untrained.pth"
    torch.save(create_backbone(cfg.backbone, img_size=cfg.input_size).state_dict(), untrained)
    train_cfg = TrainConfig(
        stores=(str(store),),
        output=str(out / "train"),
        backbone=cfg.backbone,
        unfreeze_blocks=2,
        batch_size=cfg.batch,
        max_steps=cfg.steps,
        checkpoint_every=cfg.steps,
        log_every=10,
        seed=cfg.seed,
        device="cpu",
        clip=ClipConfig(clip_frames=cfg.clip_frames, augment=AugmentConfig(cfg.input_size)),
        optim=OptimConfig(lr_head=1e-3, lr_backbone=1e-4, warmup_steps=10),
    )
    shutil.rmtree(train_cfg.output, ignore_errors=True)  # a rerun trains again, from scratch
    result = train(train_cfg)
    loss_curve(result.losses, out / "loss.png")

    models = {
        "untrained": (cfg.backbone, str(untrained)),
        "MoSiC": (str(result.final_checkpoint), None),
    }
    table = {}
    for label, (model, weights) in models.items():
        common = {"model": model, "weights": weights, "input_size": cfg.input_size}
        video = run_evaluation(
            EvalRequest(benchmark="video", dataset="davis", data_root=str(davis), **common)
        )
        linear = run_evaluation(
            EvalRequest(
                benchmark="linear",
                dataset="voc",
                data_root=str(voc),
                epochs=10,
                batch=8,
                lr=cfg.linear_lr,
                **common,
            )
        )
        linear_miou = linear["metrics"]["miou_present_classes"]  # 4 of VOC's 21 classes here
        table[label] = {"video": video["metrics"]["miou"], "linear": linear_miou}
    cluster_maps(videos[-1], models, cfg, out / "clusters.png")
    (out / "results.json").write_text(json.dumps({"tracking": tracking, "evaluation": table}))
    return write_report(out, cfg, tracking, table, result.losses, time.perf_counter() - started)


def score_tracks(store: TrackStore, videos: list[SyntheticVideo], names: list[str]) -> dict:
    """TAP-Vid metrics of the stored tracks against the generator's ground truth, averaged over
    query sets and videos."""
    scores: list[dict] = []
    for video, name in zip(videos, names, strict=True):
        data = store.read_video(name)
        _, horizon, n, _ = data.positions.shape
        for q, start in enumerate(data.query_frames):
            queries = np.concatenate([np.full((n, 1), start), data.positions[q, 0]], axis=1)
            gt_positions, gt_visible = video.ground_truth(queries.astype(np.float32))
            window = slice(start, start + horizon)
            scores.append(
                tapvid_metrics(
                    np.zeros(n),
                    gt_positions[window],
                    gt_visible[window],
                    data.positions[q],
                    data.visible[q],
                    video.frames.shape[1:3],
                )  # fmt: skip
            )
    keys = ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy", "median_error")
    return {k: float(np.nanmean([s[k] for s in scores])) for k in keys}


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


def cluster_maps(video: SyntheticVideo, models: dict, cfg: DemoConfig, path: Path) -> None:
    """Frames, ground truth, and k-means maps of each model's features, one row per frame."""
    frames = [cv2.resize(f, (cfg.input_size, cfg.input_size)) for f in video.frames[::24][:4]]
    masks = [cv2.resize(m, (cfg.input_size,) * 2, interpolation=cv2.INTER_NEAREST)
             for m in video.masks[::24][:4]]  # fmt: skip
    palette = np.random.default_rng(1).integers(40, 255, (16, 3)).astype(np.uint8)
    columns = [np.stack(frames), palette[np.stack(masks)]]
    k = int(video.masks.max()) + 1
    for model, weights in models.values():
        features = DenseFeatures(load_eval_backbone(model, weights))(
            np.stack(frames)
        )  # (F, D, h, w)
        maps = []
        for feature in features:
            d, h, w = feature.shape
            labels = kmeans(feature.reshape(d, -1).t(), k, seed=0).labels.view(h, w).numpy()
            maps.append(cv2.resize(palette[labels], (cfg.input_size,) * 2,
                                   interpolation=cv2.INTER_NEAREST))  # fmt: skip
        columns.append(np.stack(maps))
    rows = [np.concatenate([c[i] for c in columns], axis=1) for i in range(len(frames))]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def write_report(
    out: Path, cfg: DemoConfig, tracking: dict, table: dict, losses: list[float], seconds: float
) -> Path:
    """``report.md``: what ran, the tracker's scores, the loss, the evaluation table."""
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    lines = [
        "# mosic demo report",
        "",
        f"Generated in {seconds / 60:.1f} minutes on this machine by `mosic demo`: "
        f"{cfg.videos} generated videos of {cfg.frames} frames at {cfg.width}x{cfg.height} "
        "(textured layers that move, rotate and scale, and an occluder; exact ground truth).",
        "",
        "## Stage one: tracks",
        "![tracks](tracks.png)",
        "",
        "Filled dots: visible; hollow: hidden. The `lk` tracker against the ground truth "
        "(TAP-Vid metrics at 256 x 256, every query set of every video):",
        "",
        "| average Jaccard | position accuracy | occlusion accuracy | median error (px) |",
        "| --- | --- | --- | --- |",
        f"| {tracking['average_jaccard']:.3f} | {tracking['average_pts_within_thresh']:.3f} | "
        f"{tracking['occlusion_accuracy']:.3f} | {tracking['median_error']:.2f} |",
        "",
        "## Stage two: training",
        f"`{cfg.backbone}` (randomly initialised), {cfg.steps} steps of {cfg.batch} clips of "
        f"{cfg.clip_frames} frames at {cfg.input_size} px (learning rates 1e-3 head, 1e-4 "
        f"backbone); loss {first:.3f} (first 10 steps) -> {last:.3f} (last 10). A randomly "
        "initialised ViT this small learns little in minutes: MoSiC is meant to fine-tune a "
        "pretrained one (`--weights`), which this machine cannot download.",
        "",
        "![loss](loss.png)",
        "",
        "## Evaluation: the trained backbone against the untrained one",
        f"Video object segmentation (frame-wise k-means, Hungarian matching) on the "
        f"{cfg.videos} videos in the DAVIS layout, and linear segmentation on frames of the "
        f"last {cfg.val_videos} videos (trained on the others) in the VOC layout, whose classes "
        "are the shape kinds (background, ellipse, polygon, bar); mIoU (linear: the mean over "
        "these 4 classes; the field's figure averages all 21 VOC classes, absent ones as 0):",
        "",
        "| model | video clustering mIoU | linear mIoU |",
        "| --- | --- | --- |",
        *(f"| {m} | {v['video'] * 100:.2f} | {v['linear'] * 100:.2f} |" for m, v in table.items()),
        "",
        "Cluster maps (columns: frame, ground truth, untrained, MoSiC):",
        "",
        "![clusters](clusters.png)",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
