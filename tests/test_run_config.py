"""One file describes a run: ``--config``, ``config.yaml``, ``--print-config``, resuming with
the run's settings only; every slip is one line. Real ``mosic`` processes on real files."""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import MISSING
from pathlib import Path

import pytest
import torch
import yaml

from mosic.cli_train import META_OPTIONS, train_command
from mosic.pipeline.run_config import (
    SETTINGS,
    build_config,
    coerce,
    config_yaml,
    load_settings,
    settings_of,
)
from mosic.pipeline.run_folder import RunError, find_start, prepare_folder
from mosic.pipeline.train_config import TrainConfig
from tests.processes import finish, mosic

CONFIGS = Path(__file__).parents[1] / "configs"
# A vit-tiny-test run of a few seconds, as a run file holds it.
TINY = {
    "backbone": "vit-tiny-test",
    "unfreeze_blocks": 1,
    "prototypes": 8,
    "batch_size": 4,
    "workers": 0,
    "log_every": 1,
    "device": "cpu",
    "clip_frames": 3,
    "clip_step": 6,
    "input_size": 64,
}


def run(*args) -> tuple[int, str]:
    """Run ``mosic ARGS`` to its end; (exit code, output)."""
    return finish(mosic(*args), timeout=600)


def one_error(code: int, text: str) -> str:
    """The one line of a failed command (exit code 2), without ``error: ``."""
    assert code == 2 and len(text.strip().splitlines()) == 1, text
    assert text.startswith("error: "), text
    return text.strip().removeprefix("error: ")


def test_every_option_of_mosic_train_is_a_setting_with_the_same_default():
    """The flags and the run file's keys come from TrainConfig's fields: an option that is no
    setting, or whose default is not the field's, would make --help and the file disagree."""
    for name, parameter in inspect.signature(train_command).parameters.items():
        if name == "ctx" or name in META_OPTIONS:
            continue
        assert name in SETTINGS, f"--{name.replace('_', '-')} is not a TrainConfig setting"
        default = SETTINGS[name].default
        if default is MISSING:
            assert parameter.default is None, name
        else:
            assert coerce(name, parameter.default) == default, name


def test_settings_are_checked_with_one_line_naming_the_file(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("lr_head: 1e-3\ncrop-scale: 0.5,1\nstore: a.zarr\nmax_steps: null\n")
    settings = load_settings(run)  # YAML reads 1e-3 (no dot) as a string; dashes are fine
    assert settings == {"lr_head": 0.001, "crop_scale": [0.5, 1.0], "store": ["a.zarr"]} | {
        "max_steps": None
    }
    cfg = build_config(settings)
    assert cfg.optim.lr_head == 0.001 and cfg.clip.augment.crop_scale == (0.5, 1.0)
    assert build_config(load_settings(_written(tmp_path, config_yaml(cfg)))) == cfg
    slips = {
        "lr_haed: 0.1": "unknown setting 'lr_haed' (did you mean 'lr_head'?)",
        "crop_scale: [0.5]": "crop_scale: expected 2 values, got 1",
        "batch_size: 2.5": "batch_size: expected an integer, got 2.5",
        "flip: maybe": "flip: expected true or false, got 'maybe'",
        "[1, 2]": "expected 'name: value' lines",
        "a: 1\nb: [": "not valid YAML at line 2: expected the node content, but found "
        "'<stream end>'",
        "lr_head: 0.1\nlr_head: 0.2": "not valid YAML at line 2: 'lr_head' is given twice",
    }
    for text, reason in slips.items():
        with pytest.raises(ValueError) as caught:
            load_settings(_written(tmp_path, text))
        assert str(caught.value) == f"{tmp_path / 'slip.yaml'}: {reason}"


def _written(folder: Path, text: str) -> Path:
    path = folder / "slip.yaml"
    path.write_text(text)
    return path


def test_every_reproduction_row_names_its_settings_as_mosic_train_does():
    from mosic.pipeline.reproduce_config import load_rows, train_config

    rows = [row for row in load_rows([CONFIGS]) if row.training]
    assert len(rows) >= 4
    for row in rows:
        resolved = settings_of(train_config(row.training.settings))
        for name, value in row.training.settings.items():
            assert resolved[name] == coerce(name, value), (row.id, name)


def test_slips_are_one_line(train_store, tmp_path):
    """--batch-size 0, a misspelt key of --config, a reproduction's --paths file that is not
    there or holds a misspelt key: one line each, exit code 2, nothing written."""
    misspelt = tmp_path / "run.yaml"
    misspelt.write_text("store: [x.zarr]\nlr_haed: 0.001\n")
    paths = tmp_path / "paths.yaml"
    paths.write_text("data_rot: /data\n")
    row = CONFIGS / "mini" / "a-start.yaml"
    work = tmp_path / "work"
    reproduce = ["reproduce", "--config", row, "--work", work]
    runs = {
        "batch": mosic("train", "--store", train_store, "--output", tmp_path / "a",
                       "--batch-size", 0),
        "config": mosic("train", "--config", misspelt, "--output", tmp_path / "b"),
        "nofile": mosic(*reproduce, "--paths", tmp_path / "no.yaml"),
        "paths": mosic(*reproduce, "--paths", paths),
    }  # fmt: skip
    lines = {name: one_error(*finish(process, 600)) for name, process in runs.items()}
    assert lines["batch"] == "batch_size must be at least 1, not 0"
    assert lines["config"] == f"{misspelt}: unknown setting 'lr_haed' (did you mean 'lr_head'?)"
    assert lines["nofile"] == f"--paths {tmp_path / 'no.yaml'}: no such file"
    assert lines["paths"].startswith(
        f"--paths {paths}: unknown key 'data_rot' (did you mean 'data_root'?); the keys: data_root"
    )
    assert not any((tmp_path / name).exists() for name in ("a", "b", "work"))


def test_one_file_describes_a_run_and_a_resume_keeps_to_it(train_store, tmp_path):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump({"store": [str(train_store)], **TINY, "max_steps": 3}))
    out = tmp_path / "run"
    flags = ["--config", run_file, "--output", out, "--max-steps", 6, "--checkpoint-every", 3]
    shown = mosic("train", *flags, "--print-config")
    code, text = run("train", *flags)
    assert code == 0, text
    warnings = [line for line in text.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: the backbone (vit-tiny-test) starts from random weights: no --weights and no "
        "--pretrained"
    ]
    config = (out / "config.yaml").read_text()
    assert "# the backbone started from random weights" in config
    code, printed = finish(shown, 600)
    assert code == 0 and yaml.safe_load(printed) == yaml.safe_load(config)
    assert yaml.safe_load(config)["max_steps"] == 6  # the option over the file
    metrics = (out / "metrics.jsonl").read_text()

    changed = mosic(*["train", *flags, "--resume", "auto", "--lr-head", 0.01, "--seed", 1],
                    *["--input-size", 96])  # fmt: skip
    again = mosic("train", *flags)
    line = one_error(*finish(changed, 600))
    assert line.startswith(
        f"{out}: settings differ from the run's (run -> now): seed 0 -> 1, input_size 64 -> 96, "
        "lr_head 0.0001 -> 0.01; resume with the run's settings, name those to change "
        "(--allow-change seed), or train into another --output"
    )
    line = one_error(*finish(again, 600))
    assert line == (
        f"{out} holds a run already (metrics.jsonl, 2 checkpoints): continue it "
        "with --resume auto, or train into another --output"
    )
    code, text = run("train", "--output", out, "--resume", "auto")  # settings: config.yaml
    assert code == 0 and text.strip().splitlines() == [
        f"{out}: the run is finished (step 6 of 6); to train longer, raise --max-steps or "
        "--epochs and add --allow-change max_steps (or epochs)"
    ]
    assert (out / "metrics.jsonl").read_text() == metrics

    newest = out / "checkpoints" / "checkpoint-00000006.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a torn copy
    code, text = run(
        *["train", "--output", out, "--resume", "auto", "--max-steps", 9],
        *["--allow-change", "max-steps"],
    )
    assert code == 0, text
    lines = text.splitlines()
    assert (
        f"warning: {newest}: not a readable checkpoint (truncated or damaged); resuming from "
        "the previous one, checkpoint-00000003.pt"
    ) in lines
    previous = out / "checkpoints" / "checkpoint-00000003.pt"
    assert f"resuming from step 3 of 9 (changed: max_steps 6 -> 9): {previous}" in lines
    assert f"{out / 'metrics.jsonl'}: dropped 3 records past step 3" in lines
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 10))
    for record in records[3:]:  # the schedule of the new total, from the checkpoint's step
        factor = 0.5 * (1 + math.cos(math.pi * record["step"] / 9))
        assert record["lr_head"] == pytest.approx(1e-4 * factor, rel=1e-9)
    config = (out / "config.yaml").read_text()
    assert "# changed at step 3: max_steps 6 -> 9\n" in config and "\nmax_steps: 9\n" in config


def test_a_config_built_in_code_round_trips_through_its_settings():
    cfg = TrainConfig(stores=("a.zarr", "b.zarr"), store_weights=(1.0, 3.0), max_steps=5)
    assert build_config(settings_of(cfg)) == cfg


def fake_checkpoint(cfg: TrainConfig, step: int) -> Path:
    """A checkpoint file as far as choosing where to start reads it: settings and step."""
    path = Path(cfg.output) / "checkpoints" / f"checkpoint-{step:08d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": cfg.to_dict(), "step": step, "student": {}}, path)
    return path


def test_where_a_run_starts_mixes_no_runs(tmp_path):
    first = TrainConfig(stores=("a.zarr",), output=str(tmp_path / "first"), max_steps=6)
    old, new = fake_checkpoint(first, 3), fake_checkpoint(first, 6)
    with pytest.raises(RunError, match=r"has checkpoints past step 3 \(checkpoint-00000006.pt\)"):
        find_start(first, old)  # a later --resume auto would take step 6 again
    assert find_start(first, new).step == 6
    other = TrainConfig(stores=("a.zarr",), output=str(tmp_path / "other"), max_steps=6)
    fake_checkpoint(other, 2)
    with pytest.raises(RunError, match=r"other holds another run \(1 checkpoint\)"):
        find_start(other, new)
    with pytest.raises(RunError, match=r"--allow-change max_step: no such setting \(did you"):
        find_start(first, "auto", ("max_step",))

    longer = TrainConfig(stores=("a.zarr",), output=first.output, max_steps=9)
    start = find_start(longer, "auto", ("max_steps",))
    assert start.step == 6 and start.changes == [{"step": 6, "changed": {"max_steps": [6, 9]}}]
    prepare_folder(longer, start)  # then killed before its next checkpoint: the folder's
    again = find_start(longer, "auto")  # config.yaml records the allowed change
    assert again.changes == start.changes
    with pytest.raises(RunError, match=r"\(run -> now\): max_steps 6 -> 12; "):
        find_start(TrainConfig(stores=("a.zarr",), output=first.output, max_steps=12), "auto")

    for path in (old, new):
        path.write_bytes(b"")
    with pytest.raises(RunError, match=r"no checkpoint of \S+first loads; the newest: \S+06.pt"):
        find_start(first, "auto")
