"""An image-level starting backbone: the MoSiC objective on still frames (no time, no tracks).

MoSiC fine-tunes a backbone pretrained on images. On generated data that backbone is made
here: every parameter of a randomly initialised ViT is trained with the MoSiC network,
objective and step (``TrainStep``: EMA teacher, Sinkhorn-Knopp targets) on clips made of one
still frame seen through independent draws of the training augmentation
(``mosic.stages.data.still_views``), so points are paired across crops, flips and colour
jitter, never across time. Its backbone is saved once and is the start of every row.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mosic.pipeline.train_config import OptimConfig, TrainConfig
from mosic.pipeline.train_step import TrainStep, build_optimizer, build_student
from mosic.stages.data.augment import AugmentConfig
from mosic.stages.data.clips import ClipConfig
from mosic.stages.data.still_views import still_views
from mosic.stages.model.network import make_teacher


@dataclass(frozen=True)
class StillsConfig:
    """Settings of the image-level warm-up (each clip: ``views`` views of one still frame)."""

    steps: int = 600
    batch_size: int = 16
    views: int = 2
    grid: int = 8  # grid x grid points per still
    prototypes: int = 32
    head_hidden: tuple[int, ...] = (1024, 1024, 512)
    head_dim: int = 256
    teacher_momentum: float = 0.99
    lr: float = 1e-3  # every parameter (head and backbone)
    warmup_steps: int = 30
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(128, color_jitter=0.4))


def pretrain_on_stills(
    images: np.ndarray,
    backbone: str,
    weights: str | Path,
    config: StillsConfig,
    output: str | Path,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[float]:
    """Train every parameter of ``backbone`` (from ``weights``) on ``images`` (M, H, W, 3)
    uint8 and save its state dict to ``output`` (written whole, then renamed). Returns the
    loss of every step."""
    cfg = TrainConfig(
        stores=(),
        backbone=backbone,
        weights=str(weights),
        prototypes=config.prototypes,
        head_hidden=config.head_hidden,
        head_dim=config.head_dim,
        teacher_momentum=config.teacher_momentum,
        device="cpu",
        seed=seed,
        clip=ClipConfig(clip_frames=config.views, clip_step=1, augment=config.augment),
        optim=OptimConfig(lr_head=config.lr, lr_backbone=config.lr,
                          warmup_steps=config.warmup_steps),
    )  # fmt: skip
    torch.manual_seed(seed)
    student = build_student(cfg)
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    teacher = make_teacher(student)
    optimizer, scheduler = build_optimizer(student, cfg, config.steps)
    step = TrainStep(cfg, student, teacher, student, optimizer, scheduler, torch.device("cpu"))
    losses = []
    for i in range(config.steps):
        rng = np.random.default_rng((seed, i))
        picked = rng.choice(len(images), config.batch_size, replace=len(images) < config.batch_size)
        clips = [still_views(images[j], config.views, config.grid, config.augment, rng)
                 for j in picked]  # fmt: skip
        frames, positions, visible = (
            torch.from_numpy(np.stack(x)) for x in zip(*clips, strict=True)
        )
        loss, _ = step(frames, positions, visible)
        losses.append(loss)
        if (i + 1) % 100 == 0 or i + 1 == config.steps:
            log(f"pretrain on stills: step {i + 1}/{config.steps} loss {np.mean(losses[-50:]):.3f}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_suffix(".partial")
    torch.save(student.backbone.state_dict(), partial)
    os.replace(partial, output)
    return losses
