"""Linear segmentation: a 1x1 convolution trained on frozen patch features.

Follows NeCo's ``experiments/linear_segmentation/linear_finetune.py`` (``LinearFinetune``, from
Leopart): training views are random resized crops to ``input_size`` (scale (0.8, 1), ratio
(3/4, 4/3)) flipped with probability 0.5; the head is ``Conv2d(D, C, 1)`` trained with
cross-entropy (IGNORE pixels skipped) at ``mask_size`` x ``mask_size`` (100: the patch logits are
bilinearly upsampled, the crop's mask nearest-downsampled), SGD lr 0.01 momentum 0.9 weight decay
1e-4, batches of 128 with the last partial batch dropped, lr x 0.1 every ``drop_at`` epochs.
Validation images and masks are resized to ``input_size`` (bilinear / nearest), masks then
nearest-resized to ``mask_size``, logits bilinearly upsampled to ``mask_size`` and argmaxed;
the score is the mIoU of the predicted classes as they are (no matching).

The reference upsamples the features to ``mask_size`` and then applies the head; this applies
the head and then upsamples the logits, which is the same function (bilinear weights sum to
one, so they commute with an affine 1x1 convolution) at C instead of D channels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn

from mosic.stages.evaluation.datasets.base import IGNORE, SegmentationDataset, SegmentationSample
from mosic.stages.evaluation.features import DenseFeatures
from mosic.stages.evaluation.hummingbird import (
    ViewDataset,
    as_tensors,
    crop_box,
    resized_crop,
    val_view,
    view_loader,
)
from mosic.stages.evaluation.kmeans import cluster_map
from mosic.stages.evaluation.metrics import miou, miou_fields
from mosic.stages.evaluation.progress import QUIET, Advance, Phases
from mosic.stages.evaluation.visuals import Visual, VisualSink


@dataclass(frozen=True)
class LinearConfig:
    """Linear-probe settings; the defaults are NeCo's (its Pascal configs: ``max_epochs: 25``,
    ``drop_at: 20``). ``device``: where the head trains (None: the features' device).
    ``workers``: DataLoader processes for reading and augmenting."""

    input_size: int = 448
    mask_size: int = 100
    epochs: int = 25
    drop_at: int = 20
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch: int = 128
    crop_scale: tuple[float, float] = (0.8, 1.0)
    flip_p: float = 0.5
    seed: int = 0
    device: str | None = None
    workers: int = 0


def evaluate_linear(
    train: SegmentationDataset,
    val: SegmentationDataset,
    features: DenseFeatures,
    config: LinearConfig,
    visuals: VisualSink | None = None,
    progress: Phases = QUIET,
) -> dict:
    """Train the head on ``train``, score it on ``val``.

    Returns ``metrics.miou_fields`` (``miou``, the field's figure over all classes;
    ``miou_present_classes``; ``per_class_iou``, NaN for classes absent from val), ``final_loss``
    (mean training loss of the last epoch), ``steps``, and the wall seconds ``train_s``
    (augment, extract, fit), ``predict_s`` and ``score_s``. ``visuals``: receives the first
    ``visuals.count`` validation images with the head's argmax (mask_size x mask_size).
    """
    if config.input_size % features.patch_size:
        raise ValueError(f"input_size {config.input_size} not a multiple of {features.patch_size}")
    if len(train) < config.batch:
        raise ValueError(f"{len(train)} training images < one batch of {config.batch}")
    device = torch.device(config.device) if config.device else features.device
    t0 = time.perf_counter()
    batches = config.epochs * (len(train) // config.batch)
    with progress.phase(f"train head ({config.epochs} epochs)", batches, "batches") as advance:
        head, loss, steps = train_head(train, features, config, device, advance)
    t1 = time.perf_counter()
    with progress.phase("predict", len(val), "images") as advance:
        preds, gts = predict(val, features, head, config, visuals, advance)
    t2 = time.perf_counter()
    per_class = miou(preds, gts, train.num_classes)[1]
    return {
        **miou_fields(per_class),
        "final_loss": loss,
        "steps": steps,
        "train_s": t1 - t0,
        "predict_s": t2 - t1,
        "score_s": time.perf_counter() - t2,
    }


def train_head(
    train: SegmentationDataset,
    features: DenseFeatures,
    config: LinearConfig,
    device: torch.device,
    advance: Advance = lambda n: None,
) -> tuple[nn.Conv2d, float, int]:
    """The trained ``Conv2d(D, C, 1)`` on ``device``, the last epoch's mean loss, the step
    count; ``advance(1)`` after every batch."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = nn.Conv2d(features.dim, train.num_classes, 1).to(device)
    optimizer = torch.optim.SGD(
        head.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.drop_at, gamma=0.1)
    view = partial(
        train_view, size=config.input_size, scale=config.crop_scale, flip_p=config.flip_p
    )
    size = (config.mask_size, config.mask_size)
    steps, loss_sum, batches = 0, 0.0, 0
    for epoch in range(config.epochs):
        order = np.random.default_rng((config.seed, epoch)).permutation(len(train))
        data = ViewDataset(train, view, config.seed, epoch, order)
        loss_sum, batches = 0.0, 0
        for images, masks in view_loader(data, config.batch, config.workers, drop_last=True):
            advance(1)
            target = resize_masks(masks, config.mask_size).to(device)
            if not (target != IGNORE).any():
                continue  # an all-ignored batch has no loss (the mean would be NaN)
            feats = features(images).to(device).clone()  # clone: out of inference mode
            logits = F.interpolate(head(feats), size=size, mode="bilinear")
            loss = F.cross_entropy(logits, target, ignore_index=IGNORE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            loss_sum += loss.item()
            batches += 1
        schedule.step()
    return head, loss_sum / max(batches, 1), steps


@torch.no_grad()
def predict(
    val: SegmentationDataset,
    features: DenseFeatures,
    head: nn.Conv2d,
    config: LinearConfig,
    visuals: VisualSink | None = None,
    advance: Advance = lambda n: None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true classes of every validation image at mask_size x mask_size:
    two (N, mask_size, mask_size) int16 arrays (the truth with IGNORE); the first
    ``visuals.count`` images and their predictions go to ``visuals``; ``advance(n)`` after
    every batch of n images."""
    preds, gts = [], []
    done = 0  # images predicted so far
    size = (config.mask_size, config.mask_size)
    data = ViewDataset(
        val, partial(val_view, size=config.input_size), config.seed, 0, range(len(val))
    )
    for images, masks in view_loader(data, config.batch, config.workers, drop_last=False):
        feats = features(images).to(next(head.parameters()).device)
        logits = F.interpolate(head(feats), size=size, mode="bilinear")
        preds.append(logits.argmax(1).to(torch.int16).cpu().numpy())
        gts.append(resize_masks(masks, config.mask_size).to(torch.int16).numpy())
        if visuals is not None:
            for j in range(min(len(images), visuals.count - done)):
                sample, pred = val[done + j], preds[-1][j].astype(np.int64)
                visuals(Visual(sample.name, sample.image, sample.mask, pred, cluster_map(feats[j])))
        done += len(images)
        advance(len(images))
    return np.concatenate(preds), np.concatenate(gts)


def resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """masks (B, H, W) int64 -> (B, size, size) int64, nearest."""
    return F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()


def train_view(
    sample: SegmentationSample,
    rng: np.random.Generator,
    size: int,
    scale: tuple[float, float],
    flip_p: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear protocol's training view: a random resized crop to size x size, then a
    horizontal flip with probability ``flip_p``. Returns image (size, size, 3) uint8 and mask
    (size, size) int64."""
    image, mask = as_tensors(sample)
    image, mask = resized_crop(image, mask, crop_box(*mask.shape, scale, rng), size)
    if rng.random() < flip_p:
        image, mask = TF.hflip(image), mask.flip(-1)
    return image.permute(1, 2, 0), mask
