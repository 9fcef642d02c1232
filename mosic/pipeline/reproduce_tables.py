"""The reproduction's tables: our numbers beside the reference numbers, as Markdown and CSV."""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from mosic.pipeline.reference_numbers import SOURCES
from mosic.pipeline.reproduce import Reproduction
from mosic.pipeline.reproduce_config import Evaluation, Row


@dataclass(frozen=True)
class Cell:
    """One table cell: our number over the seeds run, and the reference."""

    table: str
    row: str
    column: str
    ours: list[float]
    reference: float | None
    source: str | None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.ours) if self.ours else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.ours) if len(self.ours) > 1 else None

    @property
    def difference(self) -> float | None:
        if self.mean is None or self.reference is None:
            return None
        return self.mean - self.reference


@dataclass(frozen=True)
class Margin:
    """A row's margin over another row in one column: per-seed differences, mean and std."""

    table: str
    row: str
    over: str
    column: str
    differences: list[float]


def collect(reproduction: Reproduction) -> tuple[list[Cell], list[Margin]]:
    """Every cell of every row, and the margins the rows ask for (seeds both rows have)."""
    cells, margins = [], []
    by_id = {row.id: row for row in reproduction.rows}
    for row in reproduction.rows:
        for evaluation in row.evaluations:
            ours = reproduction.scores(row, evaluation)
            cells.append(
                Cell(
                    row.table,
                    row.row,
                    evaluation.column,
                    ours,
                    evaluation.reference,
                    evaluation.source,
                )  # fmt: skip
            )
            for other_id in row.margins_over:
                other = by_id.get(other_id)
                if other is None:
                    continue
                pairs = [
                    (reproduction.result_path(row, evaluation, s),
                     reproduction.result_path(other, _column(other, evaluation.column), s))
                    for s in row.seeds if s in other.seeds
                ]  # fmt: skip
                differences = [
                    evaluation.score(json.loads(a.read_text()))
                    - evaluation.score(json.loads(b.read_text()))
                    for a, b in pairs
                    if a.is_file() and b.is_file()
                ]
                margin = Margin(row.table, row.row, other.row, evaluation.column, differences)
                margins.append(margin)
    return cells, margins


def _column(row: Row, column: str) -> Evaluation:
    return next(e for e in row.evaluations if e.column == column)


def _number(value: float | None, std: float | None = None, signed: bool = False) -> str:
    if value is None:
        return "–"
    text = f"{value:+.1f}" if signed else f"{value:.1f}"
    return f"{text} ± {std:.1f}" if std is not None else text


def tables_markdown(cells: list[Cell], margins: list[Margin]) -> str:
    """The paper's tables: per table, one line per row, per column ours / reference / diff."""
    lines = ["# Reproduction", ""]
    used_sources: dict[str, int] = {}
    for table in dict.fromkeys(c.table for c in cells):
        mine = [c for c in cells if c.table == table]
        columns = list(dict.fromkeys(c.column for c in mine))
        has_reference = any(c.reference is not None for c in mine)
        header = ["Method"]
        for column in columns:
            header += [f"{column} ours", "reference", "diff"] if has_reference else [column]
        lines += [f"## {table}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        for row in dict.fromkeys(c.row for c in mine):
            line = [row]
            for column in columns:
                cell = next((c for c in mine if c.row == row and c.column == column), None)
                if cell is None:
                    line += ["", "", ""] if has_reference else [""]
                    continue
                line.append(_number(cell.mean, cell.std))
                if has_reference:
                    note = ""
                    if cell.source:
                        note = f" [{used_sources.setdefault(cell.source, len(used_sources) + 1)}]"
                    given = (
                        _number(cell.reference) if cell.reference is not None else "no reference"
                    )
                    line += [given + note, _number(cell.difference, signed=True)]
            lines.append("| " + " | ".join(line) + " |")
        seeds = max(len(c.ours) for c in mine)
        spread = f"mean ± std over {seeds} seeds where more than one" if seeds > 1 else "one seed"
        lines += ["", f"mIoU (%); ours: {spread}.", ""]
        mine_margins = [m for m in margins if m.table == table]
        if mine_margins:
            lines += ["| Margin | Column | mean ± std | per seed |", "|---|---|---|---|"]
            for m in mine_margins:
                mean = statistics.fmean(m.differences) if m.differences else None
                std = statistics.stdev(m.differences) if len(m.differences) > 1 else None
                per_seed = ", ".join(f"{d:+.1f}" for d in m.differences)
                lines.append(
                    f"| {m.row} over {m.over} | {m.column} | {_number(mean, std, True)} "
                    f"| {per_seed} |"
                )
            lines.append("")
    if used_sources:
        lines += ["## Sources of the reference numbers", ""]
        lines += [f"[{n}] {SOURCES[key]}" for key, n in used_sources.items()]
        lines.append("")
    return "\n".join(lines)


def write_tables(reproduction: Reproduction, output: Path) -> tuple[Path, Path]:
    """``output/tables.md`` and ``output/tables.csv`` (one line per cell, and per margin)."""
    cells, margins = collect(reproduction)
    output.mkdir(parents=True, exist_ok=True)
    markdown = output / "tables.md"
    markdown.write_text(tables_markdown(cells, margins))
    table_csv = output / "tables.csv"
    with table_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "table",
                "row",
                "column",
                "ours",
                "ours_std",
                "seeds",
                "reference",
                "difference",
                "source",
            ]  # fmt: skip
        )
        for c in cells:
            writer.writerow(
                [c.table, c.row, c.column, _csv(c.mean), _csv(c.std), len(c.ours),
                 _csv(c.reference), _csv(c.difference), SOURCES.get(c.source or "", "")]
            )  # fmt: skip
        for m in margins:
            mean = statistics.fmean(m.differences) if m.differences else None
            std = statistics.stdev(m.differences) if len(m.differences) > 1 else None
            writer.writerow(
                [m.table, f"{m.row} - {m.over}", m.column, _csv(mean), _csv(std),
                 len(m.differences), "", "", "margin"]
            )  # fmt: skip
    return markdown, table_csv


def _csv(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"
