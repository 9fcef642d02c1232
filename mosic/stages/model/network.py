"""``MoSiCNetwork`` (backbone + head + prototypes) and the EMA teacher update."""

from __future__ import annotations

import copy

import torch
from torch import nn

from mosic.stages.model.backbone import patch_tokens
from mosic.stages.model.head import ProjectionHead, Prototypes
from mosic.stages.model.lora import merge_lora
from mosic.stages.model.sampling import sample_features
from mosic.stages.model.token_drop import patch_tokens_kept


class MoSiCNetwork(nn.Module):
    """Scores of track points against prototypes: images and points in, (B, P, K) out."""

    def __init__(
        self, backbone: nn.Module, prototypes: int = 100, dim: int = 256, sampling: str = "nearest"
    ):
        super().__init__()
        self.backbone = backbone
        self.head = ProjectionHead(backbone.num_features, out_dim=dim)
        self.prototypes = Prototypes(prototypes, dim)
        self.sampling = sampling

    def forward(
        self, images: torch.Tensor, points: torch.Tensor, kept: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cosine scores of points against the prototypes (float32, also under autocast).

        images: (B, 3, H, W) normalised; points: (B, P, 2) (x, y) pixels of the images;
        kept: None, or (B, L') indices of the only patch tokens the backbone sees
        (``mosic.stages.model.token_drop``; dropped tokens' features are zero).
        Returns (B, P, K).
        """
        if kept is None:
            features = patch_tokens(self.backbone, images)
        else:
            features = patch_tokens_kept(self.backbone, images, kept)
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
