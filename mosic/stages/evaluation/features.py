"""``DenseFeatures``: a frozen backbone as a function from images to patch-feature maps."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mosic.stages.model.backbone import patch_tokens
from mosic.stages.objective import normalize_frames


class DenseFeatures:
    """Patch features of uint8 images, batched, under ``torch.inference_mode``.

    ``__call__(images)``: images (B, H, W, 3) uint8 (numpy or torch), H and W multiples of the
    patch size -> (B, D, H / p, W / p) float32 on the CPU.
    """

    def __init__(self, backbone: nn.Module, device: str | torch.device = "cpu", batch: int = 32):
        self.backbone = backbone.eval().to(device)
        self.device = torch.device(device)
        self.batch = batch
        self.patch_size = int(backbone.patch_embed.patch_size[0])
        self.dim = int(backbone.num_features)

    @torch.inference_mode()
    def __call__(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        images = torch.as_tensor(images)
        out = []
        for start in range(0, len(images), self.batch):
            chunk = images[start : start + self.batch].to(self.device).permute(0, 3, 1, 2)
            out.append(patch_tokens(self.backbone, normalize_frames(chunk)).float().cpu())
        return torch.cat(out)
