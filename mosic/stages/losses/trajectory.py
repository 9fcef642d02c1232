"""The MoSiC loss: predict, from a track's first frame, its cluster in every later frame."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def trajectory_cluster_loss(
    student_logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of first-frame predictions against per-frame teacher assignments.

    student_logits: (B, N, K) student scores at each track's first frame, already divided by
        the temperature.
    targets: (B, F, N) int64 cluster indices (hard), or (B, F, N, K) probabilities (soft).
    weights: (B, F, N) float, the track's visibility at each frame (0 where hidden).
    Returns the weighted mean over visible (track, frame) pairs: invisible pairs do not count
    in the mean (the paper's code averages them in as zeros).
    """
    log_probs = F.log_softmax(student_logits.float(), dim=-1).unsqueeze(1)  # (B, 1, N, K)
    if targets.dtype == torch.long:
        index = targets.unsqueeze(-1)
        per_term = -log_probs.expand(*targets.shape, -1).gather(-1, index).squeeze(-1)
    else:
        per_term = -(targets * log_probs).sum(dim=-1)
    total = weights.sum()
    return (per_term * weights).sum() / total.clamp_min(1.0)
