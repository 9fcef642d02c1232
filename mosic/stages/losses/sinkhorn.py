"""Sinkhorn-Knopp: balanced soft assignments of points to prototypes (as in SwAV)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def _all_reduce(tensor: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=op)
    return tensor


class SinkhornKnopp:
    """Equipartitioned assignments of M points to K prototypes.

    The marginals are global: with torch.distributed initialised, every sum is all-reduced, so
    R ranks holding M_r points each get the assignments one process would compute on all
    points at once. A rank may hold no point (M_r = 0): it takes part in every all-reduce and
    gets (0, K) back.
    """

    def __init__(self, epsilon: float = 0.06, iterations: int = 3):
        self.epsilon = epsilon
        self.iterations = iterations

    @torch.no_grad()
    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        """scores (M, K) -> assignments (M, K) float32, each row summing to 1.

        Columns (prototypes) get equal total mass over all points of all ranks. Computed in
        float32 whatever the autocast around it.
        """
        with torch.autocast(scores.device.type, enabled=False):
            return self._assign(scores.float())

    def _assign(self, scores: torch.Tensor) -> torch.Tensor:
        local_top = scores.max() if scores.numel() else scores.new_tensor(float("-inf"))
        top = _all_reduce(local_top.clone(), dist.ReduceOp.MAX)
        q = torch.exp((scores - top) / self.epsilon).t()  # (K, M)
        k = q.shape[0]
        m = _all_reduce(torch.tensor(float(q.shape[1]), device=q.device))
        q /= _all_reduce(q.sum())
        for _ in range(self.iterations):
            q /= _all_reduce(q.sum(dim=1, keepdim=True)).clamp_min(1e-30)
            q /= k
            q /= q.sum(dim=0, keepdim=True).clamp_min(1e-30)
            q /= m
        return (q * m).t()
