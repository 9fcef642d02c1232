"""One MoSiC training objective evaluation: teacher assignments along tracks, student loss."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mosic.stages.losses.sinkhorn import SinkhornKnopp
from mosic.stages.losses.trajectory import trajectory_cluster_loss
from mosic.stages.model.token_drop import (
    draw_kept_tokens,
    kept_token_map,
    points_on_kept_tokens,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ObjectiveConfig:
    """Settings of the loss (see docs/method.md).

    symmetric: every frame also predicts the first frame's cluster (the student then runs on
        every frame); the loss is the sum of the two directions, as in the paper's code.
    mask_ratio: share of the student's patch tokens dropped (the same ones in every frame of a
        clip); points whose feature would come from a dropped token get no loss weight.
    """

    temperature: float = 0.1
    sinkhorn_epsilon: float = 0.06
    sinkhorn_iterations: int = 3
    soft_targets: bool = False
    symmetric: bool = False
    mask_ratio: float = 0.0
    static_points: bool = False  # ablation: every point stays where it started (no tracks)

    def __post_init__(self) -> None:
        if not 0 <= self.mask_ratio < 1:
            raise ValueError(f"--mask-ratio {self.mask_ratio}: use a share in [0, 1)")


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float (..., 3, H, W) with ImageNet mean and std."""
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(3, 1, 1)
    return (frames.float() / 255 - mean) / std


@dataclass
class StepStats:
    """What a step reports besides the loss tensor; every figure is over all ranks."""

    loss: float  # the loss over every rank's visible (track, frame) pairs
    terms: int  # (track, frame) pairs in the loss; 0: the batch has nothing to learn from
    points_per_clip: float  # tracks visible in their clip's first frame, mean over clips
    visible_fraction: float  # of those tracks' (track, frame) pairs, the share visible
    cluster_usage: float  # entropy of the target histogram / log K (1 = all clusters equally used)
    marginal_error: float  # max relative deviation of Sinkhorn column mass from uniform


class MoSiCObjective:
    """Computes the loss of a batch of clips for a student and its teacher.

    Under torch.distributed the loss of each rank is its weighted sum divided by the mean
    weight total of the ranks, so that DDP's gradient average is the gradient of the mean over
    every rank's visible pairs; a rank without a visible track contributes zero gradients and
    joins every collective, so the ranks stay in step.
    """

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
        visible: (B, F, N) bool. ``student`` maps (images, points, kept token indices or
        None) and ``teacher`` (images, points) to float32 scores (B, P, K). Returns the scalar
        loss (to backpropagate; see the class notes) and the step's statistics.
        """
        cfg = self.config
        b, f, n = visible.shape
        if cfg.static_points:
            positions = positions[:, :1].expand_as(positions)
            visible = visible[:, :1].expand_as(visible)
        images = normalize_frames(frames)
        weights = visible & visible[:, :1]  # a track counts only if seen at its first frame

        with torch.no_grad():
            t_scores = teacher(images.flatten(0, 1), positions.flatten(0, 1)).view(b, f, n, -1)
            assignments = self.sinkhorn(t_scores[weights])  # (M, K) over visible points only
            targets = self._targets(assignments, weights)

        # The student sees the first frame (or, with --symmetric-loss, every frame).
        inputs = images.flatten(0, 1) if cfg.symmetric else images[:, 0]
        points = positions.flatten(0, 1) if cfg.symmetric else positions[:, 0]
        kept, on_kept = None, None
        if cfg.mask_ratio > 0:
            kept, on_kept = self._drop_tokens(student, inputs, points, b)
        logits = student(inputs, points, kept) / cfg.temperature
        every = logits  # with --symmetric-loss (B * F, N, K): each frame predicts the first's
        logits = logits.view(b, -1, n, logits.shape[-1])[:, 0]  # (B, N, K) from first frames
        forward = reverse = weights  # of the first frame's predictions, of every frame's
        if on_kept is not None:  # a prediction counts if its own token was kept
            token = on_kept.view(b, -1, n)  # (B, F or 1, N)
            forward, reverse = weights & token[:, :1], weights & token
        reverse = reverse.flatten(0, 1).unsqueeze(1)  # (B * F, 1, N), as ``every``
        world = _world()
        clips = torch.tensor(b, device=weights.device)
        counts = [forward.sum(), weights.sum(), weights[:, 0].sum(), clips]
        if cfg.symmetric:
            counts.append(reverse.sum())
        counts = _reduce(torch.stack(counts).double())  # exact counts, one collective
        means = (counts / world).float()  # each rank's share of the global weight totals
        loss = trajectory_cluster_loss(logits, targets, forward.float(), means[0])
        if cfg.symmetric:
            first_targets = targets[:, :1].expand_as(targets).flatten(0, 1).unsqueeze(1)
            loss = loss + trajectory_cluster_loss(every, first_targets, reverse.float(), means[4])
        stats = self._stats(assignments, loss, counts, f)
        return loss, stats

    def _drop_tokens(
        self, student: nn.Module, inputs: torch.Tensor, points: torch.Tensor, clips: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept token indices of the student's inputs (the same for every frame of a clip) and,
        (inputs, N) bool, whether each point's feature comes from kept tokens."""
        network = student.module if hasattr(student, "module") else student
        ph, pw = network.backbone.patch_embed.patch_size
        size = tuple(inputs.shape[-2:])
        grid = (size[0] // ph, size[1] // pw)
        kept = draw_kept_tokens(clips, grid[0] * grid[1], self.config.mask_ratio, inputs.device)
        kept = kept.repeat_interleave(len(inputs) // clips, dim=0)  # every frame of a clip
        on_kept = points_on_kept_tokens(kept_token_map(kept, grid), points, size, network.sampling)
        return kept, on_kept

    def _targets(self, assignments: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Visible points' assignments (M, K) scattered back to (B, F, N) hard targets (or
        (B, F, N, K) soft ones); hidden points get 0, which their zero weight ignores."""
        if self.config.soft_targets:
            targets = torch.zeros(*weights.shape, assignments.shape[1], device=weights.device)
            targets[weights] = assignments
        else:
            targets = torch.zeros(weights.shape, dtype=torch.long, device=weights.device)
            targets[weights] = assignments.argmax(dim=1)
        return targets

    def _stats(
        self, assignments: torch.Tensor, loss: torch.Tensor, counts: torch.Tensor, frames: int
    ) -> StepStats:
        """The step's statistics over all ranks (counts: the all-reduced forward terms,
        visible terms, first-frame points and clips)."""
        k = assignments.shape[1]
        histogram = torch.bincount(assignments.argmax(dim=1), minlength=k).float()
        reduced = _reduce(torch.cat([histogram, assignments.sum(dim=0), loss.detach().view(1)]))
        histogram, mass = reduced[:k], reduced[k : 2 * k]
        p = histogram / histogram.sum().clamp_min(1)
        usage = float(-(p[p > 0] * p[p > 0].log()).sum() / math.log(k))
        marginal_error = float((mass / mass.mean().clamp_min(1e-12) - 1).abs().max())
        terms, visible, first, clips = counts[:4].tolist()
        return StepStats(
            loss=float(reduced[-1]) / _world(),
            terms=int(terms),
            points_per_clip=first / clips,
            visible_fraction=visible / max(first * frames, 1.0),
            cluster_usage=usage,
            marginal_error=marginal_error,
        )


def _world() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _reduce(tensor: torch.Tensor) -> torch.Tensor:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor
