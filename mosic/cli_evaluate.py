"""``mosic evaluate``: the dense benchmarks on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

console = Console(markup=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def evaluate_command(
    model: Annotated[
        str, typer.Option(help="A mosic checkpoint (.pt), an export (.safetensors) or a name.")
    ],
    benchmark: Annotated[str, typer.Option(help="hummingbird, linear, overclustering or video.")],
    dataset: Annotated[
        str, typer.Option(help="voc, ade20k, coco-things, coco-stuff, davis, ytvos.")
    ],
    data_root: Annotated[Path, typer.Option(help="The dataset's folder.")],
    weights: Annotated[Path | None, typer.Option(help="Local weights for a named model.")] = None,
    output: Annotated[Path | None, typer.Option(help="Result JSON (default under runs/).")] = None,
    input_size: Annotated[int | None, typer.Option(help="Default: the protocol's.")] = None,
    fraction: Annotated[float, typer.Option(help="Fraction of the training split.")] = 1.0,
    seed: Annotated[int, typer.Option()] = 0,
    max_items: Annotated[int | None, typer.Option(help="First N images/videos per split.")] = None,
    epochs: Annotated[int | None, typer.Option(help="linear: training epochs.")] = None,
    batch: Annotated[int | None, typer.Option(help="linear: batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="linear: SGD learning rate (0.01).")] = None,
    subset_file: Annotated[
        Path | None,
        typer.Option(
            help="hummingbird, linear: keep the training images this file names (one a line), "
            "e.g. open-hummingbird-eval's file_sets/voc/1_div_128/trainaug_128_42.txt."
        ),
    ] = None,
    memory_size: Annotated[int | None, typer.Option(help="hummingbird: memory bank rows.")] = None,
    clusters: Annotated[
        str | None,
        typer.Option(
            help="overclustering: K values, e.g. '21,100,300,500'; video: one K for every "
            "unit (default: the unit's number of ground-truth ids)."
        ),
    ] = None,
    video_mode: Annotated[str, typer.Option(help="video: frame, clip or dataset.")] = "frame",
    kmeans_backend: Annotated[
        str,
        typer.Option(help="overclustering, video: faiss (the references') or torch (mosic's)."),
    ] = "faiss",
    val_split: Annotated[
        str | None,
        typer.Option(help="The evaluation split (default: the protocol's; ytvos: val1)."),
    ] = None,
    device: Annotated[str, typer.Option()] = "cpu",
    save_visuals: Annotated[
        int, typer.Option(help="Prediction pictures (PNG) of the first N images (video: frames).")
    ] = 0,
    visuals_dir: Annotated[
        Path | None, typer.Option(help="Their folder (default: <output stem>_visuals/).")
    ] = None,
) -> None:
    """Evaluate a model on one dense benchmark; results as JSON plus a one-line summary."""
    from mosic.pipeline.checkpoint import CheckpointError
    from mosic.pipeline.evaluate import (
        EvalRequest,
        check_request,
        run_evaluation,
        summary_line,
        write_result,
    )
    from mosic.stages.evaluation.datasets import DatasetError
    from mosic.stages.evaluation.progress import ConsolePhases

    name = Path(model).stem if Path(model).suffix else model
    output = output or Path("runs/eval") / f"{name}-{benchmark}-{dataset}.json"
    visuals_dir = visuals_dir or output.with_name(f"{output.stem}_visuals")
    request = EvalRequest(
        model=model,
        benchmark=benchmark,
        dataset=dataset,
        data_root=str(data_root),
        weights=str(weights) if weights else None,
        input_size=input_size,
        fraction=fraction,
        seed=seed,
        max_items=max_items,
        epochs=epochs,
        batch=batch,
        lr=lr,
        subset_file=str(subset_file) if subset_file else None,
        memory_size=memory_size,
        clusters=tuple(int(k) for k in clusters.split(",")) if clusters else None,
        video_mode=video_mode,
        kmeans_backend=kmeans_backend,
        val_split=val_split,
        device=device,
        save_visuals=save_visuals,
        visuals_dir=str(visuals_dir) if save_visuals else None,
    )
    try:
        check_request(request)  # the data's layout, before the model is loaded
        result = run_evaluation(request, progress=ConsolePhases(err))
    except (ValueError, FileNotFoundError, DatasetError, CheckpointError) as exc:
        err.print(Text.assemble(("error: ", "red"), str(exc)))
        raise typer.Exit(2) from None
    write_result(result, output)
    console.print(f"{summary_line(result)} -> {output}")


def ytvos_split_command(
    train: Annotated[Path, typer.Argument(help="The official YouTube-VOS train split folder.")],
    out: Annotated[Path, typer.Option(help="Where train1/ and val1/ go (the dataset root).")],
    train_fraction: Annotated[float, typer.Option(help="Share of the videos in train1.")] = 0.8,
    seed: Annotated[int, typer.Option(help="Seed of the shuffle.")] = 1,
) -> None:
    """Build TimeT's YouTube-VOS evaluation split: val1/ (and train1/) from the official train
    split, as folder links, for ``mosic evaluate --dataset ytvos`` (its default split)."""
    from mosic.stages.evaluation.datasets import DatasetError
    from mosic.stages.evaluation.datasets.ytvos import split_train

    try:
        train_ids, val_ids = split_train(train, out, train_fraction, seed)
    except (ValueError, OSError, DatasetError) as exc:
        err.print(Text.assemble(("error: ", "red"), str(exc)))
        raise typer.Exit(2) from None
    console.print(
        f"{out / 'train1'}: {len(train_ids)} videos, {out / 'val1'}: {len(val_ids)} videos "
        f"(of {train}, seed {seed})"
    )
