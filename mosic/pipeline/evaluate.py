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
from mosic.stages.evaluation.linear import LinearConfig, evaluate_linear
from mosic.stages.evaluation.models import load_eval_backbone
from mosic.stages.evaluation.overclustering import evaluate_overclustering
from mosic.stages.evaluation.video_segmentation import evaluate_video
from mosic.stages.evaluation.visuals import VisualWriter

BENCHMARKS = ("hummingbird", "linear", "overclustering", "video")
VIDEO_DATASETS = ("davis", "ytvos")
# (training split, evaluation split) of each dataset, as the reference protocols use them.
SPLITS = {
    "voc": ("trainaug", "val"),
    "ade20k": ("train", "val"),
    "coco-things": ("train", "val"),
    "coco-stuff": ("train", "val"),
    "davis": ("val", "val"),
    "ytvos": ("valid", "valid"),
}
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
    memory_size: int | None = None  # hummingbird: None = the protocol's
    clusters: tuple[int, ...] | None = None  # overclustering K values
    video_mode: str = "frame"
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


def run_evaluation(request: EvalRequest, backbone: nn.Module | None = None) -> dict:
    """Run one benchmark; returns the JSON-ready result with the wall time of each phase and
    ``visuals``, the prediction pictures written (``request.save_visuals``).

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
    train_split, val_split = SPLITS[request.dataset]
    train_split = request.train_split or train_split
    val_split = request.val_split or val_split
    options = {"max_items": request.max_items}

    def load(split: str):
        return open_dataset(request.dataset, request.data_root, split, **options)

    visuals = None
    if request.save_visuals:
        visuals = VisualWriter(str(request.visuals_dir), request.save_visuals)
    load_s = time.perf_counter() - started
    if request.benchmark == "video":
        metrics = evaluate_video(
            load(val_split), features, mode=request.video_mode, input_size=size, visuals=visuals
        )
    elif request.benchmark == "overclustering":
        metrics = evaluate_overclustering(
            load(val_split), features, ks=request.clusters, input_size=size, visuals=visuals
        )
    else:
        train = load(train_split)
        if request.fraction < 1:
            train = subset(train, request.fraction, request.seed)
        val = load(val_split)
        if request.benchmark == "hummingbird":
            given = {"memory_size": request.memory_size} if request.memory_size else {}
            config = HummingbirdConfig(input_size=size, seed=request.seed, **given)
            metrics = evaluate_hummingbird(train, val, features, config, visuals)
        else:
            fields = {"epochs": request.epochs, "batch": request.batch, "lr": request.lr}
            given = {k: v for k, v in fields.items() if v is not None}
            config = LinearConfig(input_size=size, seed=request.seed, **given)
            metrics = evaluate_linear(train, val, features, config, visuals)
    return {
        "request": asdict(request),
        "input_size": size,
        "metrics": metrics,
        "visuals": [str(path) for path in visuals.paths] if visuals else [],
        "load_s": load_s,
        "total_s": time.perf_counter() - started,
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
