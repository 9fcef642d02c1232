"""``mosic train`` and ``mosic export``: stage two on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from mosic.pipeline.checkpoint import CheckpointError
from mosic.pipeline.run_config import (
    build_config,
    coerce_all,
    config_yaml,
    load_settings,
)
from mosic.pipeline.run_folder import CONFIG, RunError
from mosic.pipeline.train_config import TrainConfig
from mosic.store_schema import StoreError

console = Console(markup=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    err.print(Text.assemble(("error: ", "red"), message))
    return typer.Exit(2)


# Options of `mosic train` that are not settings of the run.
META_OPTIONS = ("config", "print_config", "resume", "allow_change")


def train_command(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(help="Run file (YAML): settings named as these options; options override."),
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option("--print-config", help="Print the resolved settings as a run file and exit."),
    ] = False,
    resume: Annotated[str | None, typer.Option(help="auto or a checkpoint path.")] = None,
    allow_change: Annotated[
        list[str] | None,
        typer.Option(help="A setting a resume may change, e.g. max_steps (repeatable)."),
    ] = None,
    store: Annotated[
        list[str] | None,
        typer.Option(help="Track store(s), folders or s3://BUCKET/NAME; repeat to mix several."),
    ] = None,
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
    mask_ratio: Annotated[
        float,
        typer.Option(
            help="Share of the student's patch tokens dropped (the same in every frame of a "
            "clip); points on dropped tokens get no loss."
        ),
    ] = 0.0,
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
    crop_geometry: Annotated[
        str,
        typer.Option(
            help="paper: frames squashed to a square, then cropped (the paper's); aspect: "
            "cropped from the stored frame, aspect ratio kept."
        ),
    ] = "paper",
    points_per_clip: Annotated[
        int,
        typer.Option(
            help="Tracks per clip, spread over the crop (padded with invisible points when a "
            "clip has fewer); 0: every stored track of the query set."
        ),
    ] = 256,
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
    keep_checkpoints: Annotated[
        int, typer.Option(help="Checkpoints kept: the newest (older ones are deleted).")
    ] = 2,
    log_every: Annotated[int, typer.Option()] = 10,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32 or bf16.")] = "auto",
    attention: Annotated[str, typer.Option(help="sdpa or xformers.")] = "sdpa",
    eval_every: Annotated[
        int, typer.Option(help="Evaluate the student every N steps (rank 0); 0: off.")
    ] = 0,
    max_corrupt_fraction: Annotated[
        float, typer.Option(help="Stop when more than this fraction of clips read is corrupt.")
    ] = 0.01,
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
    """Train MoSiC from track stores (stage two; no tracker runs here).

    Every option but --config, --print-config, --resume and --allow-change is a setting of the
    run; a --config file (YAML) holds any of them by name (lr_head: 1e-4), options override it.
    """
    # The settings' parameters are read through ctx.params (mosic.pipeline.run_config).
    from mosic.pipeline.train import TrainingError, train

    try:
        cfg = _resolve(ctx, config, resume)
        if print_config:
            console.print(config_yaml(cfg), end="")
            return
        if not cfg.stores:
            raise ValueError("no --store given (an option, or store: in the --config file)")
        allowed = tuple(
            name.strip().replace("-", "_")
            for given in allow_change or ()
            for name in given.split(",")
        )
        result = train(cfg, resume=resume, allow_changes=allowed)
    except (
        ValueError,
        FileNotFoundError,
        StoreError,
        CheckpointError,
        RunError,
        TrainingError,
    ) as exc:
        raise _fail(str(exc)) from None
    if result.losses:  # (a finished run said so)
        console.print(f"done: step {result.steps}; final checkpoint {result.final_checkpoint}")


def _resolve(ctx: typer.Context, config: Path | None, resume: str | None) -> TrainConfig:
    """The run's settings: defaults, then (resuming) the run folder's config.yaml, then the
    --config file, then the options given on the command line."""
    given = {
        name: value
        for name, value in ctx.params.items()
        # by name: typer may bring its own copy of click's ParameterSource
        if name not in META_OPTIONS
        and ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP")
    }
    given = {**(load_settings(config) if config else {}), **coerce_all(given)}
    saved = {}
    output = Path(given.get("output", ctx.params["output"]))
    if resume and (output / CONFIG).is_file():
        saved = load_settings(output / CONFIG)
    settings = {**saved, **given}
    if settings.get("lora_rank") and "unfreeze_blocks" in given:
        raise ValueError(
            "--unfreeze-blocks and --lora-rank exclude each other: LoRA adapts every block "
            "and freezes all base weights"
        )
    cfg = build_config(settings)
    if cfg.store_weights and len(cfg.store_weights) != len(cfg.stores):
        raise ValueError("--store-weights needs one weight per --store")
    return cfg


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
