"""The pieces of one training step: the student, its optimiser, and the step itself.

``train`` (the loop over a store) and ``bench/gpu_train_step.py`` (the step alone, on
generated tensors) both build and run the step through this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from mosic.pipeline.train_config import TrainConfig
from mosic.stages.model.backbone import create_backbone, unfreeze_last_blocks
from mosic.stages.model.lora import add_lora
from mosic.stages.model.network import MoSiCNetwork, ema_update
from mosic.stages.objective import MoSiCObjective, StepStats


class NonFiniteLoss(FloatingPointError):
    """The loss was NaN or infinite; nothing was updated."""


def build_student(cfg: TrainConfig) -> MoSiCNetwork:
    """The student network: its backbone's last ``unfreeze_blocks`` blocks trainable, or, with
    ``lora_rank`` > 0, only LoRA adapters on every block (all base weights frozen)."""
    backbone = create_backbone(cfg.backbone, weights=cfg.weights, pretrained=cfg.pretrained)
    if cfg.lora_rank:
        add_lora(backbone, cfg.lora_rank, cfg.lora_alpha)
    else:
        unfreeze_last_blocks(backbone, cfg.unfreeze_blocks)
    student = MoSiCNetwork(backbone, cfg.prototypes, sampling=cfg.feature_sampling)
    if cfg.attention == "xformers":
        from mosic.stages.model.attention import use_xformers

        use_xformers(student.backbone)
    elif cfg.attention != "sdpa":
        raise ValueError(f"--attention {cfg.attention!r}: use sdpa or xformers")
    return student


def param_groups(student: MoSiCNetwork, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: backbone / head+prototypes learning rates; no decay on biases and norms."""
    groups: dict[tuple[str, bool], list] = {}
    for name, parameter in student.named_parameters():
        if not parameter.requires_grad:
            continue
        part = "backbone" if name.startswith("backbone.") else "head"
        decay = parameter.ndim > 1 and not name.startswith("prototypes.")
        groups.setdefault((part, decay), []).append(parameter)
    lr = {"backbone": cfg.optim.lr_backbone, "head": cfg.optim.lr_head}
    return [
        {
            "params": params,
            "lr": lr[part],
            "weight_decay": cfg.optim.weight_decay if decay else 0.0,
            "name": f"{part}{'' if decay else '-no-decay'}",
        }
        for (part, decay), params in sorted(groups.items())
    ]


def cosine_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warmup, then cosine from 1 to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def build_optimizer(
    student: MoSiCNetwork, cfg: TrainConfig, total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters (``param_groups``) and its cosine schedule."""
    optimizer = torch.optim.AdamW(param_groups(student, cfg))
    schedule = cosine_schedule(total_steps, cfg.optim.warmup_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def autocast_for(precision: str, device: torch.device):
    """The autocast context of ``--precision`` (auto: bf16 on CUDA, fp32 elsewhere)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"--precision {precision!r}: use auto, fp32 or bf16")


class TrainStep:
    """One optimisation step: loss, backward, optional clipping, AdamW, schedule, EMA teacher.

    ``model`` is the student itself or its DistributedDataParallel wrapper. A batch in which
    no rank has a track visible in its first frame changes no weight (the schedule still
    advances, every rank alike).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        student: MoSiCNetwork,
        teacher: MoSiCNetwork,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        device: torch.device,
    ):
        self.cfg = cfg
        self.student, self.teacher, self.model = student, teacher, model
        self.optimizer, self.scheduler = optimizer, scheduler
        self.objective = MoSiCObjective(cfg.objective)
        self.autocast = autocast_for(cfg.precision, device)

    def __call__(
        self, frames: torch.Tensor, positions: torch.Tensor, visible: torch.Tensor
    ) -> tuple[float, StepStats]:
        """Train on one batch (on the model's device); returns the loss and its statistics.

        frames: (B, F, 3, S, S) uint8; positions: (B, F, N, 2) (x, y) input pixels;
        visible: (B, F, N) bool. Returns the loss over all ranks. Raises NonFiniteLoss, before
        any update and on every rank, when that loss is NaN or infinite.
        """
        self.student.prototypes.normalize_()
        self.teacher.prototypes.normalize_()
        with self.autocast:
            loss, stats = self.objective(self.model, self.teacher, frames, positions, visible)
        if not math.isfinite(stats.loss):
            raise NonFiniteLoss(f"loss is {stats.loss}")
        self.optimizer.zero_grad(set_to_none=True)
        if stats.terms:  # else no gradient at all, and AdamW skips weights without one
            loss.backward()
            if self.cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if stats.terms:
            ema_update(self.teacher, self.student, self.cfg.teacher_momentum)
        return stats.loss, stats
