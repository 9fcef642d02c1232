"""``mosic reproduce``: the missing-inputs check, resuming, and the tables."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import yaml
from typer.testing import CliRunner

from mosic.cli_reproduce import reproduce_command
from mosic.pipeline.reproduce import Locations, Reproduction
from mosic.pipeline.reproduce_config import Evaluation, Row, load_rows
from mosic.pipeline.reproduce_tables import collect, tables_markdown, write_tables

CONFIGS = Path(__file__).parents[1] / "configs"


def invoke(args: list[str], env: dict | None = None):
    import typer

    app = typer.Typer()
    app.command()(reproduce_command)
    return CliRunner().invoke(app, args, env=env)


def test_every_config_loads():
    rows = load_rows([CONFIGS])
    assert {r.id for r in rows} >= {"mosic-dinov2-s14", "dinov2-s14", "b-mosic", "c-no-tracks"}
    assert all(e.reference is None or e.source for r in rows for e in r.evaluations)


def test_missing_inputs_are_listed_together_before_any_work(tmp_path):
    env = {"DATA_ROOT": "", "WEIGHTS_DINOV2_S14": "", "COTRACKER3_CHECKPOINT": ""}
    config = CONFIGS / "paper" / "video" / "mosic-dinov2-s14.yaml"
    result = invoke(["--config", str(config), "--work", str(tmp_path / "work")], env=env)
    assert result.exit_code == 2
    text = result.output
    assert text.count("error:") == 1 and "inputs missing" in text
    for needed in ("DATA_ROOT", "WEIGHTS_DINOV2_S14", "DAVIS", "ytvos/train_all_frames",
                   "CoTracker3 checkpoint", "davischallenge.org"):  # fmt: skip
        assert needed in text
    assert not (tmp_path / "work").exists()


def test_locations_come_from_the_environment_over_the_file(tmp_path):
    file = tmp_path / "paths.yaml"
    file.write_text(yaml.safe_dump({"data_root": "/a", "weights": {"dinov2-s14": "/w.pt"}}))
    locations = Locations.load(file, env={"DATA_ROOT": "/b", "WEIGHTS_DINOV2_B14": "/v.pt"})
    assert locations.data_root == Path("/b")
    assert locations.weights == {"dinov2-s14": Path("/w.pt"), "dinov2-b14": Path("/v.pt")}


def tiny_rows(tmp_path: Path) -> list[Path]:
    """The mini configs, cut down to one seed, a few steps and a handful of small videos."""
    paths = []
    for name in ("a-untrained", "b-mosic"):
        data = yaml.safe_load((CONFIGS / "mini" / f"{name}.yaml").read_text())
        data["seeds"] = [0]
        data["generate"] |= {"train_videos": 4, "eval_videos": 4, "davis_videos": 2,
                             "voc_train_videos": 2, "frames": 16, "voc_every": 4}  # fmt: skip
        if "train" in data:
            data["train"]["settings"] |= {"max_steps": 3, "batch_size": 2, "checkpoint_every": 2}
        data["evaluate"][1]["options"] |= {"epochs": 1, "batch": 4}
        path = tmp_path / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data))
        paths.append(path)
    return paths


def test_a_rerun_skips_every_complete_step(tmp_path):
    rows = load_rows(tiny_rows(tmp_path))
    work = tmp_path / "work"
    first: list[str] = []
    Reproduction(rows, Locations(), work, log=first.append).run()
    assert any(line.startswith("train mosic") for line in first)
    results = sorted((work / "results").rglob("*.json"))
    assert len(results) == 4
    stamps = {p: p.stat().st_mtime_ns for p in results}

    results[0].unlink()  # as if interrupted before this evaluation
    again: list[str] = []
    Reproduction(rows, Locations(), work, log=again.append).run()
    assert again == [f"evaluate {results[0].parent.parent.name} seed 0: " + again[0].split(": ")[1]]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p != results[0])

    run = work / "runs" / "mosic" / "seed0"
    assert yaml.safe_load((run / "config.yaml").read_text())["max_steps"] == 3  # as train writes
    for done in ("final.json", "checkpoints/checkpoint-00000003.pt"):
        (run / done).unlink()  # training interrupted after the checkpoint of step 2
    resumed: list[str] = []
    Reproduction(rows, Locations(), work, log=resumed.append).run()
    assert resumed[0] == "extract generated-lk: complete, skipped"
    assert "from" in resumed[1] and "checkpoint-00000002.pt" in resumed[1]

    video, linear = rows[0].evaluations  # the video column's settings change: only it runs again
    clip = replace(video, options=video.options | {"video_mode": "clip"})
    rows[0] = replace(rows[0], evaluations=(clip, linear))
    changed: list[str] = []
    Reproduction(rows, Locations(), work, log=changed.append).run()
    assert [line.endswith("(settings changed)") for line in changed] == [True]

    config = tmp_path / "configs" / "b-mosic.yaml"  # a finished run's settings change
    data = yaml.safe_load(config.read_text())
    data["train"]["settings"]["max_steps"] += 1
    config.write_text(yaml.safe_dump(data))
    stale = invoke(["--config", str(config), "--work", str(work)])
    assert stale.exit_code == 2
    assert stale.output.count("error:") == 1 and "trained with other max_steps" in stale.output

    marker = work / "data" / "generated.json"
    old = json.loads(marker.read_text()) | {"version": 1}  # data of an older renderer
    marker.write_text(json.dumps(old))
    relabelled: list[str] = []
    Reproduction(rows, Locations(), work, log=relabelled.append).run()
    assert relabelled[0] == "generate: the data changed; results on the old data dropped"
    assert not any(line.startswith("train ") for line in relabelled)  # same videos, same runs
    assert sum(line.startswith("evaluate ") for line in relabelled) == 4

    marker.write_text(json.dumps(old | {"version": 2, "frames": old["frames"] + 1}))
    resized: list[str] = []
    Reproduction(rows, Locations(), work, log=resized.append).run()
    assert resized[0].endswith("results, stores, runs on the old data dropped")
    assert any(
        line.startswith("extract generated-lk: ") and "skipped" not in line for line in resized
    )
    assert any(line.startswith("train mosic") for line in resized)


def fake_result(path: Path, miou: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": {"miou": miou}}))


def test_tables_show_ours_the_reference_the_difference_and_the_source(tmp_path):
    column = Evaluation("VOC", "linear", "voc", "VOCdevkit", reference=79.7, source="secondary")
    row = Row("mosic", "Linear", "MoSiC", "dinov2-s14", "dinov2-s14", (column,), seeds=(0, 1))
    base = Row("base", "Linear", "DINOv2", "dinov2-s14", "dinov2-s14", (column,), seeds=(0, 1))
    row = Row(**{**vars(row), "margins_over": ("base",)})
    reproduction = Reproduction([row, base], Locations(), tmp_path)
    for seed, (ours, theirs) in enumerate([(0.80, 0.78), (0.82, 0.79)]):
        fake_result(reproduction.result_path(row, column, seed), ours)
        fake_result(reproduction.result_path(base, column, seed), theirs)
    markdown = tables_markdown(*collect(reproduction))
    assert "| MoSiC | 81.0 ± 1.4 | 79.7 [1] | +1.3 |" in markdown
    assert "| MoSiC over DINOv2 | VOC | +2.5 ± 0.7 | +2.0, +3.0 |" in markdown
    assert "[1] secondary summary of the MoSiC paper" in markdown
    _, table_csv = write_tables(reproduction, tmp_path / "out")
    first = next(csv.DictReader(table_csv.open()))
    assert (first["ours"], first["reference"], first["difference"]) == ("81.00", "79.70", "1.30")
    assert "secondary summary" in first["source"]
