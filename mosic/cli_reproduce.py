"""``mosic reproduce``: the paper's tables (or the mini reproduction) from config files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

console = Console(markup=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def reproduce_command(
    config: Annotated[
        list[Path] | None, typer.Option(help="A config file (one table row); repeatable.")
    ] = None,
    all_: Annotated[
        Path | None, typer.Option("--all", help="Every *.yaml under this folder.")
    ] = None,
    paths: Annotated[
        Path | None,
        typer.Option(help="YAML file of input locations (environment variables take precedence)."),
    ] = None,
    work: Annotated[
        Path, typer.Option(help="Stores, checkpoints and result JSONs (kept for resuming).")
    ] = Path("runs/reproduce"),
    output: Annotated[Path, typer.Option(help="Where tables.md and tables.csv go.")] = Path(
        "results"
    ),
) -> None:
    """Run config rows (extract, train, evaluate; each skipped when done) and write the tables."""
    from mosic.pipeline.checkpoint import CheckpointError
    from mosic.pipeline.reproduce import Locations, Reproduction, StaleRun
    from mosic.pipeline.reproduce_config import load_rows
    from mosic.pipeline.reproduce_tables import write_tables
    from mosic.pipeline.run_folder import RunError
    from mosic.pipeline.train import TrainingError

    configs = [*(config or []), *([all_] if all_ else [])]
    if not configs:
        err.print(Text.assemble(("error: ", "red"), "give --config FILE or --all DIR"))
        raise typer.Exit(2)
    try:
        rows = load_rows(configs)
    except (OSError, TypeError, ValueError, KeyError) as exc:
        err.print(Text.assemble(("error: ", "red"), f"bad config: {exc}"))
        raise typer.Exit(2) from None
    try:
        locations = Locations.load(paths)
    except ValueError as exc:
        err.print(Text.assemble(("error: ", "red"), f"--paths {exc}"))
        raise typer.Exit(2) from None
    reproduction = Reproduction(rows, locations, work, log=console.print)
    missing = reproduction.missing()
    if missing:
        err.print(Text.assemble(("error: ", "red"), f"{len(missing)} inputs missing:"))
        for line in missing:
            err.print(f"  - {line}")
        raise typer.Exit(2)
    try:
        reproduction.run()
    except (StaleRun, RunError, CheckpointError, TrainingError) as exc:
        err.print(Text.assemble(("error: ", "red"), str(exc)))
        raise typer.Exit(2) from None
    markdown, table_csv = write_tables(reproduction, output)
    console.print(markdown.read_text())
    console.print(f"-> {markdown}, {table_csv}")
