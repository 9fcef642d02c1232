"""``mosic train --eval-every N``: a quick evaluation of the student backbone during training.

Every N steps, rank 0 runs one ``mosic evaluate`` benchmark (``mosic.pipeline.evaluate``) on
the student backbone as it is, in memory, on the first ``--eval-max-items`` items of the
dataset. The headline mIoU joins that step's record as ``eval/<benchmark>_<dataset>_miou``
(overclustering: ``eval/overclustering_<dataset>_k<K>_miou`` for each K), with the wall time as
``eval/<benchmark>_<dataset>_s``. The evaluation neither changes the training's random state
nor leaves the backbone in eval mode. The dataset is checked when training starts; an
evaluation that fails later (say, more clusters than the few items have patches) prints a
one-line warning and training goes on.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.text import Text
from torch import nn

from mosic.pipeline.evaluate import EvalRequest, check_request, run_evaluation
from mosic.pipeline.train_config import TrainEvalConfig
from mosic.stages.evaluation.datasets import DatasetError
from mosic.stages.evaluation.linear import LinearConfig

err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


class TrainEvaluator:
    """Evaluates a backbone every ``cfg.every`` steps; checks the dataset when built."""

    def __init__(self, cfg: TrainEvalConfig, device: torch.device):
        """Raises a one-line ValueError for a missing data root or a malformed dataset."""
        self.cfg = cfg
        self.device = device
        if cfg.every < 0:
            raise ValueError(f"--eval-every {cfg.every}: use 0 (off) or a number of steps")
        if cfg.every:
            root = cfg.data_root
            if root is None:
                raise ValueError("--eval-every needs --eval-data-root (the dataset's folder)")
            if not Path(root).is_dir():
                raise ValueError(f"--eval-data-root {root}: no such folder")
            try:
                check_request(self.request("check"))
            except DatasetError as exc:
                raise ValueError(f"--eval-data-root: {exc}") from None

    def request(self, label: str) -> EvalRequest:
        """The evaluation request; ``label`` names the model in its result. The linear probe
        trains on batches of at most ``max_items`` images (its protocol's 128 otherwise)."""
        batch = None
        if self.cfg.benchmark == "linear" and self.cfg.max_items:
            batch = min(self.cfg.max_items, LinearConfig.batch)
        return EvalRequest(
            model=label,
            benchmark=self.cfg.benchmark,
            dataset=self.cfg.dataset,
            data_root=str(self.cfg.data_root),
            input_size=self.cfg.input_size,
            max_items=self.cfg.max_items,
            batch=batch,
            device=str(self.device),
        )

    def due(self, step: int) -> bool:
        """Whether ``step`` (counted from 1) is an evaluation step."""
        return self.cfg.every > 0 and step % self.cfg.every == 0

    def __call__(self, backbone: nn.Module, step: int) -> dict[str, float]:
        """Evaluate ``backbone`` (a timm ViT: images (B, 3, H, W) -> patch features) at
        ``step``; returns the record entries (none if the evaluation failed). Its train/eval
        mode is restored afterwards."""
        was_training = backbone.training
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                result = run_evaluation(self.request(f"step {step}"), backbone=backbone)
        except (ValueError, DatasetError) as exc:  # the evaluation's one-line errors
            message = f"evaluation at step {step} failed ({exc}); training goes on"
            err.print(Text.assemble(("warning: ", "yellow"), message))
            return {}
        finally:
            backbone.train(was_training)
        return eval_scalars(result)


def eval_scalars(result: dict) -> dict[str, float]:
    """The record entries of a ``run_evaluation`` result: headline mIoU(s) and wall time."""
    request, metrics = result["request"], result["metrics"]
    name = f"eval/{request['benchmark']}_{request['dataset']}"
    if "k" in metrics:
        scalars = {f"{name}_k{k}_miou": float(v["miou"]) for k, v in metrics["k"].items()}
    else:
        scalars = {f"{name}_miou": float(metrics["miou"])}
    scalars[f"{name}_s"] = float(result["total_s"])
    return scalars
