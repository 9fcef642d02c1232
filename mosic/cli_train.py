"""``mosic train`` and ``mosic export``: stage two on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from click.core import ParameterSource
from rich.console import Console
from rich.text import Text

from mosic.pipeline.checkpoint import CheckpointError, resolve_resume
from mosic.pipeline.train_config import OptimConfig, TrainConfig, TrainEvalConfig
from mosic.stages.data.augment import AugmentConfig
from mosic.stages.data.clips import ClipConfig
from mosic.stages.objective import ObjectiveConfig
from mosic.store_schema import StoreError

console = Console(markup=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    err.print(Text.assemble(("error: ", "red"), message))
    return typer.Exit(2)


def _floats(text: str | None) -> tuple[float, ...] | None:
    return tuple(float(v) for v in text.split(",")) if text else None


def train_command(
    ctx: typer.Context,
    store: Annotated[list[Path], typer.Option(help="Track store(s); repeat to mix several.")],
    output: Annotated[Path, typer.Option(help="Run folder: checkpoints, logs.")] = Path(
        "runs/train"
    ),
    store_weights: Annotated[
        str | None, typer.Option(help="Sampling weight per store, e.g. '1,1'.")
    ] = None,
    backbone: Annotated[str, typer.Option(help="Backbone name (or a timm name).")] = "dinov2-s14",
    weights: Annotated[Path | None, typer.Option(help="Local backbone weights.")] = None,
    pretrained: Annotated[bool, typer.Option(help="timm's own download (network).")] = False,
    unfreeze_blocks: Annotated[
        int, typer.Option(help="Trainable last blocks (not with --lora-rank).")
    ] = 2,
    lora_rank: Annotated[
        int,
        typer.Option(
            help="LoRA rank (needs peft): adapters on every block's qkv/proj/fc1/fc2 train "
            "instead of the last blocks, all base weights frozen; 0: off."
        ),
    ] = 0,
    lora_alpha: Annotated[
        float | None, typer.Option(help="LoRA alpha (scaling alpha / rank); default: the rank.")
    ] = None,
    prototypes: Annotated[int, typer.Option(help="Number of prototypes K.")] = 100,
    feature_sampling: Annotated[str, typer.Option(help="nearest or bilinear.")] = "nearest",
    teacher_momentum: Annotated[float, typer.Option(help="EMA momentum of the teacher.")] = 0.99,
    sinkhorn_epsilon: Annotated[float, typer.Option()] = 0.06,
    sinkhorn_iters: Annotated[int, typer.Option()] = 3,
    temperature: Annotated[float, typer.Option(help="Student softmax temperature.")] = 0.1,
    symmetric_loss: Annotated[bool, typer.Option()] = False,
    soft_targets: Annotated[bool, typer.Option()] = False,
    mask_ratio: Annotated[float, typer.Option(help="Student patch masking ratio.")] = 0.0,
    static_points: Annotated[
        bool, typer.Option(help="Ablation: ignore the tracks (points stay where they start).")
    ] = False,
    clip_frames: Annotated[int, typer.Option()] = 12,
    clip_step: Annotated[int, typer.Option()] = 6,
    input_size: Annotated[int, typer.Option()] = 224,
    crop_scale: Annotated[str, typer.Option(help="Random resized crop scale 'low,high'.")] = (
        "0.4,1.0"
    ),
    color_jitter: Annotated[float, typer.Option()] = 0.0,
    epochs: Annotated[int, typer.Option()] = 8,
    batch_size: Annotated[int, typer.Option(help="Global batch of clips.")] = 64,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    lr_head: Annotated[float, typer.Option()] = 1e-4,
    lr_backbone: Annotated[float, typer.Option()] = 1e-5,
    weight_decay: Annotated[float, typer.Option()] = 0.01,
    warmup_steps: Annotated[int, typer.Option()] = 0,
    grad_clip: Annotated[float, typer.Option(help="0: off.")] = 0.0,
    workers: Annotated[int, typer.Option(help="DataLoader workers per process.")] = 2,
    checkpoint_every: Annotated[int, typer.Option()] = 500,
    log_every: Annotated[int, typer.Option()] = 10,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32 or bf16.")] = "auto",
    attention: Annotated[str, typer.Option(help="sdpa or xformers.")] = "sdpa",
    resume: Annotated[str | None, typer.Option(help="auto or a checkpoint path.")] = None,
    eval_every: Annotated[
        int, typer.Option(help="Evaluate the student every N steps (rank 0); 0: off.")
    ] = 0,
    eval_benchmark: Annotated[
        str, typer.Option(help="video, hummingbird, linear or overclustering.")
    ] = "video",
    eval_dataset: Annotated[
        str, typer.Option(help="davis, ytvos, voc, ade20k, coco-things or coco-stuff.")
    ] = "davis",
    eval_data_root: Annotated[
        Path | None, typer.Option(help="The evaluation dataset's folder (checked at start).")
    ] = None,
    eval_max_items: Annotated[
        int, typer.Option(help="Evaluate on the first N videos / images of each split.")
    ] = 8,
    eval_input_size: Annotated[
        int | None, typer.Option(help="Evaluation input size; default: the benchmark's.")
    ] = None,
) -> None:
    """Train MoSiC from track stores (stage two; no tracker runs here)."""
    from mosic.pipeline.train import TrainingError, train

    try:
        explicit = ctx.get_parameter_source("unfreeze_blocks") != ParameterSource.DEFAULT
        if lora_rank and explicit:
            raise ValueError(
                "--unfreeze-blocks and --lora-rank exclude each other: LoRA adapts every block "
                "and freezes all base weights"
            )
        low, high = _floats(crop_scale)
        cfg = TrainConfig(
            stores=tuple(str(s) for s in store),
            output=str(output),
            store_weights=_floats(store_weights),
            backbone=backbone,
            weights=str(weights) if weights else None,
            pretrained=pretrained,
            unfreeze_blocks=unfreeze_blocks,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            prototypes=prototypes,
            feature_sampling=feature_sampling,
            teacher_momentum=teacher_momentum,
            epochs=epochs,
            batch_size=batch_size,
            max_steps=max_steps,
            loader_workers=workers,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            seed=seed,
            device=device,
            precision=precision,
            attention=attention,
            clip=ClipConfig(
                clip_frames=clip_frames,
                clip_step=clip_step,
                augment=AugmentConfig(
                    input_size=input_size, crop_scale=(low, high), color_jitter=color_jitter
                ),
            ),
            objective=ObjectiveConfig(
                temperature=temperature,
                sinkhorn_epsilon=sinkhorn_epsilon,
                sinkhorn_iterations=sinkhorn_iters,
                soft_targets=soft_targets,
                symmetric=symmetric_loss,
                mask_ratio=mask_ratio,
                static_points=static_points,
            ),
            optim=OptimConfig(lr_head, lr_backbone, weight_decay, warmup_steps, grad_clip),
            evaluation=TrainEvalConfig(
                every=eval_every,
                benchmark=eval_benchmark,
                dataset=eval_dataset,
                data_root=str(eval_data_root) if eval_data_root else None,
                max_items=eval_max_items,
                input_size=eval_input_size,
            ),
        )
        if cfg.store_weights and len(cfg.store_weights) != len(cfg.stores):
            raise ValueError("--store-weights needs one weight per --store")
        result = train(cfg, resume=resolve_resume(resume, output))
    except (ValueError, FileNotFoundError, StoreError, CheckpointError, TrainingError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"done: {result.steps} steps; final checkpoint {result.final_checkpoint}")


def export_command(
    checkpoint: Path,
    output: Annotated[Path, typer.Option("-o", "--output", help="model.safetensors")],
    to: Annotated[str, typer.Option(help="Export format (timm).")] = "timm",
) -> None:
    """Export the trained student backbone as a timm state dict (safetensors)."""
    from mosic.pipeline.export import ExportError, export_backbone, load_recipe

    if to != "timm":
        raise _fail(f"--to {to!r}: only 'timm' is supported")
    try:
        path, _ = export_backbone(checkpoint, output)
    except (CheckpointError, ExportError, ValueError) as exc:
        raise _fail(str(exc)) from None
    recipe = "\n".join(f"    {line}" for line in load_recipe(path).splitlines())
    console.print(f"wrote {path}; load it in timm with:\n{recipe}")
