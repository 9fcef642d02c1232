"""Backbones by name: one obvious way to build each ViT the paper uses, through timm.

Position embeddings keep the grid the weights come with (DINOv2: 37 x 37, for 518 px; DINO and
EVA-CLIP: 14 x 14, for 224 px) and are resampled once per forward to the input's grid (timm's
``dynamic_img_size``), as the reference implementations interpolate DINOv2's 37 x 37 grid to
every input size. Training checkpoints and ``mosic export`` files carry that grid unchanged.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import timm
import torch
from torch import nn

from mosic.stages.model.weights import (
    WeightsError,
    closest_backbone,
    load_state_dict,
    mismatch_line,
    shapes,
)

__all__ = ["WeightsError", "load_state_dict"]


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: the timm model name and any construction arguments."""

    timm_name: str
    kwargs: dict = field(default_factory=dict)


BACKBONES: dict[str, BackboneSpec] = {
    "dino-s16": BackboneSpec("vit_small_patch16_224.dino"),
    "dino-b16": BackboneSpec("vit_base_patch16_224.dino"),
    "dinov2-s14": BackboneSpec("vit_small_patch14_dinov2.lvd142m"),
    "dinov2-b14": BackboneSpec("vit_base_patch14_dinov2.lvd142m"),
    "dinov2-l14": BackboneSpec("vit_large_patch14_dinov2.lvd142m"),
    "dinov2r-s14": BackboneSpec("vit_small_patch14_reg4_dinov2.lvd142m"),
    "dinov2r-b14": BackboneSpec("vit_base_patch14_reg4_dinov2.lvd142m"),
    "dinov2r-l14": BackboneSpec("vit_large_patch14_reg4_dinov2.lvd142m"),
    "eva02-clip-b16": BackboneSpec("eva02_base_patch16_clip_224"),
    # A randomly initialised 2-block ViT for tests and CPU demos.
    "vit-tiny-test": BackboneSpec(
        "vit_tiny_patch16_224", {"depth": 2, "embed_dim": 64, "num_heads": 2}
    ),
}


def timm_name(name: str) -> str:
    """The timm model name of a registered backbone, or ``name`` itself if it is a timm name."""
    return BACKBONES[name].timm_name if name in BACKBONES else name


def create_backbone(
    name: str,
    *,
    weights: str | Path | Mapping[str, torch.Tensor] | None = None,
    pretrained: bool = False,
    img_size: int | None = None,
    source: str | None = None,
) -> nn.Module:
    """Build a ViT backbone with no classifier (``num_classes=0``, ``dynamic_img_size=True``).

    ``name`` is a key of ``BACKBONES`` or any timm ViT name. ``weights``: a local state dict
    file (``.safetensors`` or a ``torch.save`` file, read with ``weights_only=True``) or a state
    dict already loaded (``source`` names it in messages), loaded with ``strict=True``; the model
    takes the weights' position grid. ``pretrained`` uses timm's own download instead (needs a
    network). ``img_size``: the position grid of a randomly initialised model (img_size / patch
    per side); None: the model's native one (518 px for DINOv2). Weights that do not fit raise
    WeightsError (a ValueError) naming the first differing keys and the registered backbone the
    weights look like.
    """
    spec = BACKBONES.get(name, BackboneSpec(name))
    if pretrained and weights is not None:
        raise ValueError("give --weights PATH or --pretrained, not both")
    try:
        model = _build(spec, pretrained=pretrained, img_size=img_size)
    except RuntimeError as exc:
        known = ", ".join(sorted(BACKBONES))
        raise ValueError(f"unknown backbone {name!r} ({exc}); registered: {known}") from None
    if weights is not None:
        if isinstance(weights, Mapping):
            state, source = dict(weights), source or "the given weights"
        else:
            state, source = load_state_dict(weights), source or str(weights)
        load_weights(model, state, name, source)
    return model


def _build(spec: BackboneSpec, pretrained: bool = False, img_size: int | None = None) -> nn.Module:
    size = {"img_size": img_size} if img_size else {}
    return timm.create_model(
        spec.timm_name,
        pretrained=pretrained,
        num_classes=0,
        dynamic_img_size=True,
        **size,
        **spec.kwargs,
    )


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], name: str, source: str) -> None:
    """Load ``state`` into ``model`` strictly, first giving the model the state's position grid;
    WeightsError (one line) when the keys or shapes differ."""
    side = weights_grid(state, model)
    if side is not None and position_grid(model) != (side, side):
        model.set_input_size(img_size=side * model.patch_embed.patch_size[0])
    expected = shapes(model.state_dict())
    try:
        fitted = fit_state_dict(state, model)
    except Exception:  # timm's converters fail in many ways on foreign weights
        fitted = state
    if mismatch_line(shapes(fitted), expected) is not None:
        # Named as the file has them (timm's converters may have reshaped foreign weights).
        guess = closest_backbone(shapes(state), _registered_shapes())
        looks = f"they look like {guess}" if guess else "they match no registered backbone"
        raise WeightsError(
            f"{source}: weights of another architecture than {name} "
            f"({mismatch_line(shapes(state), expected) or 'keys differ'}); {looks}"
        )
    # A model built on the meta device (to read its shapes only) takes the tensors as they are.
    meta = any(p.is_meta for p in model.parameters())
    model.load_state_dict(fitted, strict=True, assign=meta)


def fit_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapt a state dict to ``model`` as timm does for its own weights (original DINOv2 or
    OpenCLIP key names, patch-embedding layouts). Position embeddings of another grid would be
    resampled: ``load_weights`` gives the model the state's grid first, so they never are."""
    module = sys.modules[type(model).__module__]
    adapt = getattr(module, "checkpoint_filter_fn", None)
    return adapt(state, model) if adapt else state


def position_grid(model: nn.Module) -> tuple[int, int] | None:
    """(rows, columns) of the model's position embeddings (None: it has none)."""
    if getattr(model, "pos_embed", None) is None:
        return None
    return tuple(int(s) for s in model.patch_embed.grid_size)  # type: ignore[return-value]


def weights_grid(state: Mapping[str, torch.Tensor], model: nn.Module) -> int | None:
    """The side of the square position grid in ``state`` (None: no position embeddings or not
    a square grid). Tried with the model's prefix tokens counted in the embeddings, then one
    (a class token, as original DINOv2 files with registers), then none."""
    embed = state.get("pos_embed")
    if embed is None or embed.ndim != 3:
        return None
    own = 0 if getattr(model, "no_embed_class", False) else int(model.num_prefix_tokens)
    for prefix in dict.fromkeys((own, 1, 0)):
        tokens = embed.shape[1] - prefix
        side = math.isqrt(max(tokens, 0))
        if tokens > 0 and side * side == tokens:
            return side
    return None


def check_resumable_grid(
    model: nn.Module, state: Mapping[str, torch.Tensor], prefix: str, source: str | Path
) -> None:
    """WeightsError when the position grid of the ``prefix`` entries of ``state`` (a training
    checkpoint's student) differs from ``model``'s: a checkpoint of a mosic version that built
    every backbone for the training input size (DINOv2's 37 x 37 grid shrunk to 16 x 16)."""
    embed = state.get(f"{prefix}pos_embed")
    grid = position_grid(model)
    side = weights_grid({"pos_embed": embed}, model) if embed is not None else None
    if side is not None and grid is not None and grid != (side, side):
        raise WeightsError(
            f"{source}: its backbone has a {side}x{side} position grid, this run's "
            f"{grid[0]}x{grid[1]} (the checkpoint is from a mosic that shrank the weights' grid "
            "to the training input size); start a new run (mosic evaluate and mosic export "
            "still read the checkpoint, with its own grid)"
        )


def _registered_shapes() -> dict:
    """For each registered backbone, a function giving its state dict's shapes (built on the
    meta device: no memory, no initialisation)."""

    def make(spec: BackboneSpec) -> dict[str, tuple[int, ...]]:
        with torch.device("meta"):
            return shapes(_build(spec).state_dict())

    return {name: partial(make, spec) for name, spec in BACKBONES.items()}


def timm_kwargs(name: str, model: nn.Module) -> dict:
    """The ``timm.create_model`` arguments, besides the timm name, that rebuild ``model`` (a
    backbone named ``name``, registered or timm) with its position grid, so that its state dict
    loads with ``strict=True``."""
    spec = BACKBONES.get(name, BackboneSpec(name))
    kwargs: dict = {"num_classes": 0}
    grid = position_grid(model)
    if grid is not None:
        kwargs["img_size"] = grid[0] * int(model.patch_embed.patch_size[0])
    return kwargs | {"dynamic_img_size": True, **spec.kwargs}


def patch_tokens(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Patch features of a batch: images (B, 3, H, W) -> (B, D, H / p, W / p).

    Class and register tokens are dropped.
    """
    tokens = model.forward_features(images)[:, model.num_prefix_tokens :]
    b, _, h, w = images.shape
    ph, pw = model.patch_embed.patch_size
    return tokens.transpose(1, 2).reshape(b, -1, h // ph, w // pw)


def unfreeze_last_blocks(model: nn.Module, count: int) -> list[str]:
    """Freeze everything but the last ``count`` blocks (counted from the end); their names."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    blocks = len(model.blocks)
    if not 0 <= count <= blocks:
        raise ValueError(f"--unfreeze-blocks {count}: the backbone has {blocks} blocks")
    trainable = [f"blocks.{i}" for i in range(blocks - count, blocks)]
    for prefix in trainable:
        for parameter in model.get_submodule(prefix).parameters():
            parameter.requires_grad_(True)
    return trainable
