"""Projection head and prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """MLP d -> 1024 -> 1024 -> 512 -> 256 with GELU between layers (as the paper's code)."""

    def __init__(
        self, in_dim: int, hidden: tuple[int, ...] = (1024, 1024, 512), out_dim: int = 256
    ):
        super().__init__()
        dims = (in_dim, *hidden, out_dim)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (..., in_dim) -> (..., out_dim)."""
        return self.mlp(features)


class Prototypes(nn.Module):
    """K learnable prototypes of dimension d, kept L2-normalised (``normalize_`` every step)."""

    def __init__(self, count: int = 100, dim: int = 256):
        super().__init__()
        self.weight = nn.Parameter(F.normalize(torch.randn(count, dim), dim=1))

    @torch.no_grad()
    def normalize_(self) -> None:
        """Project the prototypes back onto the unit sphere."""
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine scores: embeddings (..., d) -> (..., K), always in float32.

        Under bf16 autocast a score near 1 would be rounded to steps of 2^-8 (an error up to
        0.002), which exp(score / 0.06) in Sinkhorn turns into up to 3 % (docs/method.md).
        """
        with torch.autocast(embeddings.device.type, enabled=False):
            return F.normalize(embeddings.float(), dim=-1) @ self.weight.float().t()
