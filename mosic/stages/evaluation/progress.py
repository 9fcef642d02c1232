"""Progress of an evaluation's phases (features, memory bank, PCA, k-means, ...).

The benchmarks call ``with progress.phase(name, total, unit) as advance: ... advance(n)``.
``Phases`` reports nothing; ``ConsolePhases`` shows a bar with rate and ETA on a terminal and,
elsewhere (logs, pipes), one line per phase at its start, at every tenth of its total (at least
once a minute) with rate and ETA, and at its end with the rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

Advance = Callable[[int], None]


class Phases:
    """Receives the progress of an evaluation's phases; this base reports nothing."""

    @contextmanager
    def phase(self, name: str, total: int | None = None, unit: str = "items") -> Iterator[Advance]:
        """A phase of ``total`` units (None: one step of unknown length); yields ``advance(n)``."""
        yield lambda n=1: None


def _rate(done: int, seconds: float, unit: str) -> str:
    """``12.34 images/s``, or ``8.1 s/image`` below one a second."""
    rate = done / max(seconds, 1e-9)
    return (
        f"{rate:,.2f} {unit}/s"
        if rate >= 1
        else f"{1 / max(rate, 1e-9):,.1f} s/{unit[:-1] if unit.endswith('s') else unit}"
    )


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ConsolePhases(Phases):
    """Progress on ``console``: a rich bar on a terminal, lines elsewhere (see the module)."""

    def __init__(self, console: Console, prefix: str = "", every_s: float = 60.0):
        self.console = console
        self.prefix = prefix
        self.every_s = every_s

    @contextmanager
    def phase(self, name: str, total: int | None = None, unit: str = "items") -> Iterator[Advance]:
        if self.console.is_terminal and total:
            with self._bar(name, total, unit) as advance:
                yield advance
            return
        start = last = time.perf_counter()
        done = 0
        tenth = 0
        label = f"{self.prefix}{name}"
        self.console.print(f"{label}: {total:,} {unit}" if total else f"{label} ...")

        def advance(n: int = 1) -> None:
            nonlocal done, last, tenth
            done += n
            now = time.perf_counter()
            step = int(10 * done / total) if total else 0
            if total and done < total and (step > tenth or now - last >= self.every_s):
                eta = (total - done) * (now - start) / done
                self.console.print(
                    f"{label}: {done:,}/{total:,} {unit}, {_rate(done, now - start, unit)}, "
                    f"ETA {_duration(eta)}"
                )
                tenth, last = step, now

        yield advance
        seconds = time.perf_counter() - start
        rate = f" ({_rate(done, seconds, unit)})" if done else ""
        self.console.print(f"{label}: done in {_duration(seconds)}{rate}")

    @contextmanager
    def _bar(self, name: str, total: int, unit: str) -> Iterator[Advance]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task) -> Text:
                return Text(f"{task.speed:,.2f} {unit}/s" if task.speed else f"- {unit}/s")

        bar = Progress(
            TextColumn(f"{self.prefix}{name}"),
            BarColumn(),
            MofNCompleteColumn(),
            Rate(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        with bar:
            task = bar.add_task(name, total=total)
            yield lambda n=1: bar.advance(task, n)


QUIET = Phases()  # the default of every benchmark: no progress output
