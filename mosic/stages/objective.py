"""One MoSiC training objective evaluation: teacher assignments along tracks, student loss."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mosic.stages.losses.sinkhorn import SinkhornKnopp
from mosic.stages.losses.trajectory import trajectory_cluster_loss

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ObjectiveConfig:
    """Settings of the loss (see docs/method.md)."""

    temperature: float = 0.1
    sinkhorn_epsilon: float = 0.06
    sinkhorn_iterations: int = 3
    soft_targets: bool = False
    symmetric: bool = False
    mask_ratio: float = 0.0
    static_points: bool = False  # ablation: every point stays where it started (no tracks)
    corrupt_tracks: str = "none"  # ablation: swap_xy | other_clip | shift_frame (see below)


# Ablations that break the tracks on purpose (``ObjectiveConfig.corrupt_tracks``), to measure
# what correct tracks are worth: ``swap_xy`` reads every position as (y, x); ``other_clip``
# pairs each clip with the tracks (and visibility) of the next clip in the batch;
# ``shift_frame`` gives each later frame the positions of the frame before it (frame 0 keeps
# its own: the tracks lag one clip frame behind the pixels).
CORRUPTIONS = ("none", "swap_xy", "other_clip", "shift_frame")


def corrupt_tracks(
    positions: torch.Tensor, visible: torch.Tensor, how: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tracks broken as the ablation ``how`` says (``CORRUPTIONS``).

    positions: (B, F, N, 2) (x, y) pixels of square frames; visible: (B, F, N) bool.
    Returns the same shapes.
    """
    if how == "none":
        return positions, visible
    if how == "swap_xy":
        return positions.flip(-1), visible
    if how == "other_clip":
        return positions.roll(1, dims=0), visible.roll(1, dims=0)
    if how == "shift_frame":
        lagged = torch.cat([positions[:, :1], positions[:, :-1]], dim=1)
        seen = torch.cat([visible[:, :1], visible[:, :-1]], dim=1)
        return lagged, seen
    raise ValueError(f"corrupt_tracks {how!r}: use one of {', '.join(CORRUPTIONS)}")


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float (..., 3, H, W) with ImageNet mean and std."""
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(3, 1, 1)
    return (frames.float() / 255 - mean) / std


def mask_patches(images: torch.Tensor, patch: int, ratio: float, generator=None) -> torch.Tensor:
    """Blank a random ``ratio`` of the patches of normalised images (B, 3, H, W) to zero."""
    b, _, h, w = images.shape
    keep = torch.rand(b, 1, h // patch, w // patch, device=images.device, generator=generator)
    keep = (keep >= ratio).to(images.dtype)
    return images * keep.repeat_interleave(patch, 2).repeat_interleave(patch, 3)


@dataclass
class StepStats:
    """What a step reports besides the loss."""

    visible_fraction: float
    cluster_usage: float  # entropy of the target histogram / log K (1 = all clusters equally used)
    marginal_error: float  # max relative deviation of Sinkhorn column mass from uniform


class MoSiCObjective:
    """Computes the loss of a batch of clips for a student and its teacher."""

    def __init__(self, config: ObjectiveConfig):
        self.config = config
        self.sinkhorn = SinkhornKnopp(config.sinkhorn_epsilon, config.sinkhorn_iterations)

    def __call__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        frames: torch.Tensor,
        positions: torch.Tensor,
        visible: torch.Tensor,
    ) -> tuple[torch.Tensor, StepStats]:
        """Loss of one batch.

        frames: (B, F, 3, S, S) uint8; positions: (B, F, N, 2) (x, y) input pixels;
        visible: (B, F, N) bool. ``student`` and ``teacher`` map (images, points) to scores
        (B, P, K). Returns the scalar loss and the step's statistics.
        """
        cfg = self.config
        b, f, n = visible.shape
        positions, visible = corrupt_tracks(positions, visible, cfg.corrupt_tracks)
        if cfg.static_points:
            positions = positions[:, :1].expand_as(positions)
            visible = visible[:, :1].expand_as(visible)
        images = normalize_frames(frames)
        weights = visible & visible[:, :1]  # a track counts only if seen at its first frame

        with torch.no_grad():
            t_scores = teacher(images.flatten(0, 1), positions.flatten(0, 1)).view(b, f, n, -1)
            assignments = self.sinkhorn(t_scores[weights])  # (M, K) over visible points only
            k = assignments.shape[1]
            targets, stats = self._targets(assignments, weights, k)

        # The student sees the first frame (or, with --symmetric-loss, every frame).
        inputs = images.flatten(0, 1) if cfg.symmetric else images[:, 0]
        points = positions.flatten(0, 1) if cfg.symmetric else positions[:, 0]
        if cfg.mask_ratio > 0:
            inputs = mask_patches(inputs, _patch_size(student), cfg.mask_ratio)
        logits = student(inputs, points) / cfg.temperature
        if cfg.symmetric:
            every = logits  # (B * F, N, K): each frame also predicts the first frame's cluster
            logits = every.view(b, f, n, -1)[:, 0]
        loss = trajectory_cluster_loss(logits, targets, weights.float())
        if cfg.symmetric:
            first_targets = targets[:, :1].expand_as(targets).flatten(0, 1).unsqueeze(1)
            reverse = trajectory_cluster_loss(
                every, first_targets, weights.flatten(0, 1).unsqueeze(1).float()
            )
            loss = (loss + reverse) / 2
        return loss, stats

    def _targets(
        self, assignments: torch.Tensor, weights: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, StepStats]:
        """Scatter visible points' assignments back to (B, F, N) targets; step statistics."""
        hard = assignments.argmax(dim=1)
        histogram = torch.bincount(hard, minlength=k).float()
        histogram = _reduce(histogram)
        p = histogram / histogram.sum().clamp_min(1)
        usage = float(-(p[p > 0] * p[p > 0].log()).sum() / math.log(k))
        mass = _reduce(assignments.sum(dim=0))
        marginal_error = float((mass / mass.mean().clamp_min(1e-12) - 1).abs().max())
        visible_fraction = float(_reduce(weights.float().mean().view(1))[0] / _world())
        if self.config.soft_targets:
            targets = torch.zeros(*weights.shape, k, device=weights.device)
            targets[weights] = assignments
        else:
            targets = torch.zeros(weights.shape, dtype=torch.long, device=weights.device)
            targets[weights] = hard
        return targets, StepStats(visible_fraction, usage, marginal_error)


def _patch_size(network: nn.Module) -> int:
    module = network.module if hasattr(network, "module") else network
    return module.backbone.patch_embed.patch_size[0]


def _world() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _reduce(tensor: torch.Tensor) -> torch.Tensor:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor
