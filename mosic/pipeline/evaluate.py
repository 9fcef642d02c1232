"""``mosic evaluate``: one benchmark on one dataset for one model, results as JSON."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from mosic.stages.evaluation.datasets import open_dataset, subset
from mosic.stages.evaluation.features import DenseFeatures
from mosic.stages.evaluation.hummingbird import HummingbirdConfig, evaluate_hummingbird
from mosic.stages.evaluation.kmeans import BACKENDS
from mosic.stages.evaluation.linear import LinearConfig, evaluate_linear
from mosic.stages.evaluation.models import load_eval_backbone
from mosic.stages.evaluation.overclustering import evaluate_overclustering
from mosic.stages.evaluation.progress import QUIET, Phases
from mosic.stages.evaluation.video_segmentation import evaluate_video
from mosic.stages.evaluation.visuals import VisualWriter
from mosic.stages.model.backbone import position_grid
from mosic.stages.objective import IMAGENET_MEAN, IMAGENET_STD

BENCHMARKS = ("hummingbird", "linear", "overclustering", "video")
VIDEO_DATASETS = ("davis", "ytvos")
# (training split, evaluation split) of each dataset, as the reference protocols use them
# (YouTube-VOS: TimeT's train1 / val1, built from the official train split by ytvos-split).
SPLITS = {
    "voc": ("trainaug", "val"),
    "ade20k": ("train", "val"),
    "coco-things": ("train", "val"),
    "coco-stuff": ("train", "val"),
    "davis": ("val", "val"),
    "ytvos": ("train1", "val1"),
}
# What a result's numbers mean; raised whenever a change makes results incomparable with older
# ones. 2: native position grids, the field's mIoU over all classes (ADE20K 151), PIL-nearest
# masks, faiss k-means, YouTube-VOS categories on val1.
PROTOCOL_VERSION = 2
# Input sizes of the reference protocols (rounded down to the backbone's patch size).
INPUT_SIZES = {"hummingbird": 512, "linear": 448, "overclustering": 448, "video": 224}


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate, on what, and how."""

    model: str
    benchmark: str
    dataset: str
    data_root: str
    weights: str | None = None
    input_size: int | None = None  # None: the protocol's own
    train_split: str | None = None
    val_split: str | None = None
    fraction: float = 1.0  # of the training split (Hummingbird's 1/8, 1/64, 1/128)
    seed: int = 0
    max_items: int | None = None
    epochs: int | None = None  # linear: None = the protocol's 25
    batch: int | None = None
    lr: float | None = None  # linear: None = the protocol's 0.01
    subset_file: str | None = None  # names of the training split to keep (Hummingbird's lists)
    subset_fallback: str | None = None  # the published list this request's seeded draw replaces
    memory_size: int | None = None  # hummingbird: None = the protocol's
    clusters: tuple[int, ...] | None = None  # overclustering K values
    video_mode: str = "frame"
    kmeans_backend: str = "faiss"  # overclustering, video: faiss (the references') or torch
    device: str = "cpu"
    save_visuals: int = 0  # prediction pictures of the first N evaluation images (or frames)
    visuals_dir: str | None = None  # where they go; required when save_visuals > 0


def _check(request: EvalRequest) -> None:
    if request.benchmark not in BENCHMARKS:
        raise ValueError(f"--benchmark {request.benchmark!r}: use one of {', '.join(BENCHMARKS)}")
    if request.dataset not in SPLITS:
        raise ValueError(f"--dataset {request.dataset!r}: use one of {', '.join(SPLITS)}")
    is_video = request.dataset in VIDEO_DATASETS
    if is_video != (request.benchmark == "video"):
        kind = "a video" if is_video else "an image"
        raise ValueError(f"--benchmark {request.benchmark} does not run on {kind} dataset")
    if request.save_visuals < 0 or (request.save_visuals and not request.visuals_dir):
        raise ValueError("--save-visuals needs N >= 0 and, for N > 0, a folder (visuals_dir)")
    if request.kmeans_backend not in BACKENDS:
        raise ValueError(
            f"--kmeans-backend {request.kmeans_backend!r}: use one of {', '.join(BACKENDS)}"
        )
    if request.benchmark == "video" and request.clusters and len(request.clusters) != 1:
        raise ValueError("--clusters for video: one K for every unit (TimeT's default 10)")
    if request.subset_file and request.benchmark not in ("hummingbird", "linear"):
        raise ValueError("--subset-file selects training images: hummingbird and linear only")
    if request.subset_file and request.fraction < 1:
        raise ValueError("--subset-file and --fraction both choose the training images: give one")


def check_request(request: EvalRequest) -> None:
    """Fail fast, before any model is loaded: the benchmark and dataset names, and the layout
    of every split the request reads (a one-line ValueError or DatasetError)."""
    _check(request)
    train_split, val_split = SPLITS[request.dataset]
    splits = {request.val_split or val_split}
    if request.benchmark in ("hummingbird", "linear"):
        splits.add(request.train_split or train_split)
    for split in sorted(splits):
        open_dataset(request.dataset, request.data_root, split, max_items=request.max_items)
    if request.subset_file:
        _train_split(request)


def _train_split(request: EvalRequest):
    """The training split the request reads: the names of ``subset_file``, a seeded draw of
    ``fraction``, or all of it."""
    train_split = request.train_split or SPLITS[request.dataset][0]
    options = {"max_items": request.max_items}
    if request.subset_file:
        options["subset_file"] = request.subset_file
    train = open_dataset(request.dataset, request.data_root, train_split, **options)
    return subset(train, request.fraction, request.seed) if request.fraction < 1 else train


def subset_source(request: EvalRequest) -> str:
    """Where the training images of a request come from, as its result records it."""
    if request.subset_file:
        return f"list file {request.subset_file}"
    if request.fraction < 1:
        draw = f"mosic's seeded draw (fraction {request.fraction:g}, seed {request.seed})"
        if request.subset_fallback:
            draw += f", fallback: the published list {request.subset_fallback} was not found"
        return draw
    return "the whole training split" + (
        f" (first {request.max_items})" if request.max_items else ""
    )


def run_evaluation(
    request: EvalRequest, backbone: nn.Module | None = None, progress: Phases = QUIET
) -> dict:
    """Run one benchmark; returns the JSON-ready result: the request, the ``protocol`` record of
    everything that decides whether two results are comparable (version, class count averaged,
    training subset, k-means backend and settings, input and evaluation sizes, the model's
    position grid, normalisation), the metrics, the wall time of each phase, and ``visuals``
    (the prediction pictures written). ``progress`` receives each phase's progress.

    ``backbone``: evaluate this in-memory timm backbone (put in eval mode; ``request.model``
    then only names it in the result) instead of loading ``request.model``.
    """
    _check(request)
    started = time.perf_counter()
    if backbone is None:
        backbone = load_eval_backbone(request.model, request.weights)
    features = DenseFeatures(backbone, device=request.device)
    p = features.patch_size
    size = request.input_size or INPUT_SIZES[request.benchmark]
    size = max(p, size // p * p)
    val_split = request.val_split or SPLITS[request.dataset][1]
    val = open_dataset(request.dataset, request.data_root, val_split, max_items=request.max_items)
    visuals = None
    if request.save_visuals:
        visuals = VisualWriter(str(request.visuals_dir), request.save_visuals)
    load_s = time.perf_counter() - started
    backend = request.kmeans_backend
    common = {"visuals": visuals, "progress": progress}
    if request.benchmark == "video":
        fixed = request.clusters[0] if request.clusters else None  # None: the unit's id count
        metrics = evaluate_video(
            val, features, mode=request.video_mode, num_clusters=fixed, input_size=size,
            kmeans_backend=backend, **common,
        )  # fmt: skip
        eval_size = metrics["eval_size"]
    elif request.benchmark == "overclustering":
        metrics = evaluate_overclustering(
            val, features, ks=request.clusters, input_size=size, kmeans_backend=backend, **common
        )
        eval_size = 100
    else:
        train = _train_split(request)
        if request.benchmark == "hummingbird":
            given = {"memory_size": request.memory_size} if request.memory_size else {}
            config = HummingbirdConfig(input_size=size, seed=request.seed, **given)
            metrics = evaluate_hummingbird(train, val, features, config, **common)
            eval_size = size
        else:
            fields = {"epochs": request.epochs, "batch": request.batch, "lr": request.lr}
            given = {k: v for k, v in fields.items() if v is not None}
            config = LinearConfig(input_size=size, seed=request.seed, **given)
            metrics = evaluate_linear(train, val, features, config, **common)
            eval_size = config.mask_size
    return {
        "request": asdict(request),
        "protocol": _protocol(request, metrics, size, eval_size, backbone),
        "input_size": size,
        "metrics": metrics,
        "visuals": [str(path) for path in visuals.paths] if visuals else [],
        "load_s": load_s,
        "total_s": time.perf_counter() - started,
    }


def _protocol(
    request: EvalRequest, metrics: dict, size: int, eval_size: int, backbone: nn.Module
) -> dict:
    """What decides whether two results are comparable (see ``run_evaluation``)."""
    if request.benchmark == "video":
        averaged = metrics["averaged_over"]
    elif "k" in metrics:
        averaged = next(iter(metrics["k"].values()))["classes_averaged"]
    else:
        averaged = metrics["classes_averaged"]
    uses_train = request.benchmark in ("hummingbird", "linear")
    return {
        "version": PROTOCOL_VERSION,
        "classes_averaged": averaged,
        "train_subset": subset_source(request) if uses_train else None,
        "kmeans": metrics.get("kmeans"),
        "input_size": size,
        "eval_size": eval_size,
        "position_grid": position_grid(backbone),
        "normalisation": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
    }


def summary_line(result: dict) -> str:
    """One line: model, benchmark, dataset and the headline number(s)."""
    request, metrics = result["request"], result["metrics"]
    if "k" in metrics:
        scores = ", ".join(f"K={k}: {v['miou'] * 100:.1f}" for k, v in metrics["k"].items())
    else:
        scores = f"mIoU {metrics['miou'] * 100:.1f}"
    return (
        f"{request['benchmark']} on {request['dataset']} ({request['model']}): {scores} "
        f"in {result['total_s']:.0f} s"
    )


def write_result(result: dict, path: Path) -> None:
    """Write the result as JSON (NaN for classes absent from the evaluation split)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
