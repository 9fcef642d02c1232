"""Features at track points: a patch-feature map sampled at (x, y) pixel positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_features(
    feature_map: torch.Tensor, points: torch.Tensor, image_size: tuple[int, int], mode: str
) -> torch.Tensor:
    """Sample a feature map at points given in image pixels.

    feature_map: (B, D, h, w) patch features of images of ``image_size`` (H, W).
    points: (B, P, 2) (x, y) pixels, pixel centres at integers; x is the column.
    mode: "nearest" takes the patch that contains the point (what the paper's nearest
        upsampling does); "bilinear" interpolates between patch centres.
    Returns (B, P, D).
    """
    height, width = image_size
    # Pixel x covers [x - 0.5, x + 0.5); in grid_sample's normalised units (align_corners=False)
    # the image spans [-1, 1], so pixel centre x maps to (x + 0.5) / W * 2 - 1. Same for y.
    gx = (points[..., 0] + 0.5) / width * 2 - 1
    gy = (points[..., 1] + 0.5) / height * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(2).to(feature_map.dtype)  # (B, P, 1, 2)
    sampled = F.grid_sample(
        feature_map, grid, mode=mode, padding_mode="border", align_corners=False
    )  # (B, D, P, 1)
    return sampled[..., 0].transpose(1, 2)
