"""Token dropping, the paper's masking: the student's ViT runs on a random subset of its patch
tokens, the same subset in every frame of a clip.

As in the paper's code (``FixedMaskPatchDropout`` in SMSD75/MoSiC), the kept tokens are taken
after the position embedding, so each keeps its place; the class and register tokens always
stay. The dropped tokens' features are zero in the returned map, and a point whose feature
would come from a dropped token gets no loss weight (``MoSiCObjective``).
"""

from __future__ import annotations

import torch
from timm.layers import PatchDropoutWithIndices
from torch import nn

from mosic.stages.model.sampling import sample_features


def draw_kept_tokens(
    clips: int, tokens: int, ratio: float, device: torch.device | str
) -> torch.Tensor:
    """The patch tokens each clip keeps: (clips, tokens - int(tokens * ratio)) int64 indices.

    As the paper's code: a random order per clip (argsort of Gaussian noise, from torch's
    generator of ``device``) whose first ``int(tokens * ratio)`` are dropped. Indices count
    the patch grid row-major, prefix tokens excluded.
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"--mask-ratio {ratio}: use a share in [0, 1)")
    order = torch.randn(clips, tokens, device=device).argsort(dim=1)
    return order[:, int(tokens * ratio) :]


def kept_token_map(kept: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Kept indices (B, L') -> (B, 1, h, w) float32 map of the (h, w) patch grid, 1 where kept."""
    h, w = grid
    flat = torch.zeros(kept.shape[0], h * w, device=kept.device)
    return flat.scatter_(1, kept, 1.0).view(-1, 1, h, w)


class _KeptTokens(nn.Module):
    """Stands in for a timm ViT's ``patch_drop``: keeps the prefix tokens and ``kept``."""

    def __init__(self, kept: torch.Tensor, prefix: int, with_indices: bool):
        super().__init__()
        self.kept, self.prefix, self.with_indices = kept, prefix, with_indices

    def forward(self, x: torch.Tensor):
        patches = x[:, self.prefix :]
        index = self.kept.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        x = torch.cat([x[:, : self.prefix], patches.gather(1, index)], dim=1)
        # Eva applies the indices to its rotary position embedding too.
        return (x, self.kept) if self.with_indices else x


def patch_tokens_kept(model: nn.Module, images: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Patch features of images whose ViT saw only the ``kept`` patch tokens.

    model: a timm ViT (VisionTransformer or Eva) with its ``patch_drop`` slot; images
    (B, 3, H, W); kept (B, L') indices into the (H / p) x (W / p) patch grid, row-major.
    Returns (B, D, H / p, W / p): each kept token's output at its place, zeros elsewhere.
    """
    original = model.patch_drop
    # Eva's slot (None when off) returns (tokens, indices); VisionTransformer's the tokens.
    with_indices = original is None or isinstance(original, PatchDropoutWithIndices)
    model.patch_drop = _KeptTokens(kept, model.num_prefix_tokens, with_indices)
    try:
        tokens = model.forward_features(images)[:, model.num_prefix_tokens :]
    finally:
        model.patch_drop = original
    b, _, h, w = images.shape
    ph, pw = model.patch_embed.patch_size
    index = kept.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
    full = tokens.new_zeros(b, (h // ph) * (w // pw), tokens.shape[-1]).scatter(1, index, tokens)
    return full.transpose(1, 2).reshape(b, -1, h // ph, w // pw)


def points_on_kept_tokens(
    kept_map: torch.Tensor, points: torch.Tensor, image_size: tuple[int, int], mode: str
) -> torch.Tensor:
    """Whether each point's feature comes from kept tokens only.

    kept_map: (B, 1, h, w) from ``kept_token_map``; points: (B, P, 2) (x, y) image pixels;
    mode: the feature sampling ("nearest": the patch containing the point; "bilinear": every
    patch it interpolates from). Returns (B, P) bool.
    """
    return sample_features(kept_map, points.float(), image_size, mode)[..., 0] > 1 - 1e-4
