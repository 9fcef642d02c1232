"""``MoSiCNetwork`` (backbone + head + prototypes) and the EMA teacher update."""

from __future__ import annotations

import copy

import torch
from torch import nn

from mosic.stages.model.backbone import patch_tokens
from mosic.stages.model.head import ProjectionHead, Prototypes
from mosic.stages.model.lora import merge_lora
from mosic.stages.model.sampling import sample_features


class MoSiCNetwork(nn.Module):
    """Scores of track points against prototypes: images and points in, (B, P, K) out."""

    def __init__(
        self,
        backbone: nn.Module,
        prototypes: int = 100,
        dim: int = 256,
        sampling: str = "nearest",
        hidden: tuple[int, ...] = (1024, 1024, 512),
    ):
        super().__init__()
        self.backbone = backbone
        self.head = ProjectionHead(backbone.num_features, hidden, out_dim=dim)
        self.prototypes = Prototypes(prototypes, dim)
        self.sampling = sampling

    def forward(self, images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Cosine scores of points against the prototypes.

        images: (B, 3, H, W) normalised; points: (B, P, 2) (x, y) pixels of the images.
        Returns (B, P, K).
        """
        features = patch_tokens(self.backbone, images)
        sampled = sample_features(features, points, images.shape[-2:], self.sampling)
        return self.prototypes(self.head(sampled))


def make_teacher(student: MoSiCNetwork) -> MoSiCNetwork:
    """A frozen copy of the student, to be updated only by ``ema_update``."""
    teacher = copy.deepcopy(student)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)


def student_backbone_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The student backbone of a loaded training checkpoint, named as the plain timm model
    names it: the ``backbone.`` entries of ``checkpoint["student"]``, with the LoRA adapters of
    a ``--lora-rank`` run merged into the base weights."""
    prefix = "backbone."
    weights = {
        k[len(prefix) :]: v for k, v in checkpoint["student"].items() if k.startswith(prefix)
    }
    config = checkpoint["config"]
    if config.get("lora_rank"):
        weights = merge_lora(weights, config["lora_rank"], config.get("lora_alpha"))
    return weights
