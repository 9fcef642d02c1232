"""The MoSiC loss: predict, from a track's first frame, its cluster in every later frame."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def trajectory_cluster_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    total: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of first-frame predictions against per-frame teacher assignments.

    student_logits: (B, N, K) student scores at each track's first frame, already divided by
        the temperature.
    targets: (B, F, N) int64 cluster indices (hard), or (B, F, N, K) probabilities (soft).
    weights: (B, F, N) float, the track's visibility at each frame (0 where hidden).
    total: what the weighted sum is divided by; None: ``weights.sum()``, the mean over the
        visible (track, frame) pairs (the paper's code averages invisible ones in as zeros).
        Under DDP the objective passes the sum over all ranks divided by the world size, so
        that DDP's gradient average gives the mean over every rank's visible pairs.
    Returns the scalar loss; 0 when nothing is visible.
    """
    log_probs = F.log_softmax(student_logits.float(), dim=-1).unsqueeze(1)  # (B, 1, N, K)
    if targets.dtype == torch.long:
        index = targets.unsqueeze(-1)
        per_term = -log_probs.expand(*targets.shape, -1).gather(-1, index).squeeze(-1)
    else:
        per_term = -(targets * log_probs).sum(dim=-1)
    total = weights.sum() if total is None else total
    return (per_term * weights).sum() / total.clamp_min(1e-12)
