"""One progress bar for a run: videos done and failed, frames/s, ETA."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from mosic.pipeline.extract import VideoOutcome
from mosic.store_schema import Failure


def print_failure(console: Console, failure: Failure) -> None:
    """One line per failed video: stage, file and reason."""
    line = Text.assemble(("  " + failure.stage, "red"), f" {failure.source}: {failure.reason}")
    console.print(line, soft_wrap=True)


class ExtractionProgress:
    """A rich progress bar fed with ``VideoOutcome``s (use as a context manager)."""

    def __init__(self, console: Console | None = None, label: str = "extract"):
        self.progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("videos, [red]{task.fields[failed]} failed[/red]"),
            TextColumn("{task.fields[fps]:.1f} frames/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task("extract", total=None, failed=0, fps=0.0)
        self.failed = 0
        self.frames = 0
        self.started = time.perf_counter()

    def __enter__(self) -> ExtractionProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, total: int) -> None:
        """Set the number of videos to process."""
        self.started = time.perf_counter()
        self.progress.update(self.task, total=total)

    def advance(self, outcome: VideoOutcome) -> None:
        """Count one finished video and print its failure line, if any."""
        self.count(outcome.frames, outcome.failure)

    def count(self, frames: int, failure: Failure | None) -> None:
        """Count one finished video of ``frames`` frames, or failed with ``failure``."""
        self.frames += frames
        if failure:
            self.failed += 1
            print_failure(self.progress.console, failure)
        fps = self.frames / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, advance=1, failed=self.failed, fps=fps)
