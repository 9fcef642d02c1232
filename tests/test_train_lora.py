"""``mosic train --lora-rank`` (peft adapters) and ``--eval-every`` on a tiny ViT, on CPU."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from mosic.cli import app
from mosic.pipeline.checkpoint import list_checkpoints
from mosic.pipeline.export import export_backbone
from mosic.pipeline.run_folder import RunError
from mosic.pipeline.train import train
from mosic.pipeline.train_config import TrainConfig, TrainEvalConfig
from mosic.pipeline.train_eval import TrainEvaluator
from mosic.pipeline.train_step import build_student
from mosic.stages.evaluation.models import load_eval_backbone
from mosic.stages.model.backbone import create_backbone, patch_tokens
from mosic.stages.synthetic import make_video
from mosic.stages.synthetic_datasets import write_davis, write_voc
from tests.test_train import config, make_store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("train-lora"))


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory) -> Path:
    """The initial backbone weights, so the frozen ones can be compared after training."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file(create_backbone("vit-tiny-test", img_size=64).state_dict(), str(path))
    return path


def lora_config(store: Path, output: Path, weights: Path, **changes) -> TrainConfig:
    """The tiny run of ``tests.test_train`` with rank-4 adapters and a fast backbone rate."""
    cfg = config(store, output, lora_rank=4, weights=str(weights), **changes)
    return replace(cfg, optim=replace(cfg.optim, lr_backbone=1e-3, lr_head=1e-3))


def test_only_adapters_head_and_prototypes_train(store, base_weights, tmp_path):
    cfg = lora_config(store, tmp_path, base_weights, max_steps=4, checkpoint_every=1)
    result = train(replace(cfg, keep_checkpoints=4))
    trainable = {n for n, p in result.student.named_parameters() if p.requires_grad}
    assert trainable and all(
        ".lora_" in n or n.startswith(("head.", "prototypes.")) for n in trainable
    )
    checkpoints = list_checkpoints(tmp_path)
    assert [p.name for p in checkpoints] == [f"checkpoint-0000000{i}.pt" for i in range(1, 5)]
    first, last = (torch.load(p, weights_only=True) for p in (checkpoints[0], checkpoints[-1]))
    base = load_file(base_weights)
    for key, value in last["student"].items():
        changed = not torch.equal(value, first["student"][key])
        trained = ".lora_" in key or key.startswith(("head.", "prototypes."))
        assert changed == trained, key
        if not trained:  # the frozen backbone weights are the loaded ones
            torch.testing.assert_close(value, base[key[9:].replace(".base_layer", "")])
    # The EMA teacher is a copy of the adapted student and follows its adapters.
    adapters = [k for k in last["teacher"] if ".lora_B." in k]
    assert adapters and all(last["teacher"][k].abs().sum() > 0 for k in adapters)
    assert all(not torch.equal(last["teacher"][k], first["teacher"][k]) for k in adapters)


def test_lora_export_and_evaluation_load_the_students_features(store, base_weights, tmp_path):
    result = train(lora_config(store, tmp_path, base_weights, max_steps=3))
    path, name = export_backbone(result.final_checkpoint, tmp_path / "model.safetensors")
    model = timm.create_model(name, num_classes=0, img_size=64, depth=2, embed_dim=64, num_heads=2)
    exported = load_file(path)
    model.load_state_dict(exported, strict=True)
    model.eval()
    qkv = "blocks.0.attn.qkv.weight"
    assert not torch.equal(exported[qkv], load_file(base_weights)[qkv])  # adapters merged in
    student = result.student.backbone.eval()
    evaluated = load_eval_backbone(str(result.final_checkpoint))  # the .pt itself
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = patch_tokens(student, images)
        torch.testing.assert_close(patch_tokens(model, images), expected)
        torch.testing.assert_close(patch_tokens(evaluated, images), expected)


def test_lora_resume_gives_the_same_losses(store, base_weights, tmp_path):
    straight = train(lora_config(store, tmp_path / "a", base_weights, max_steps=6)).losses
    checkpoint = list_checkpoints(tmp_path / "a")[0]
    assert checkpoint.name == "checkpoint-00000003.pt"
    resumed = train(lora_config(store, tmp_path / "b", base_weights, max_steps=6), checkpoint)
    assert resumed.losses == straight[3:]
    with pytest.raises(RunError, match=r"lora_rank 4 -> 0"):
        train(config(store, tmp_path / "c", max_steps=6), resume=checkpoint)


def test_lora_needs_peft_and_excludes_unfreeze_blocks(store, tmp_path, monkeypatch):
    runner = CliRunner()
    both = runner.invoke(
        app, ["train", "--store", str(store), "--lora-rank", "4", "--unfreeze-blocks", "1"]
    )
    assert both.exit_code == 2 and "exclude each other" in both.output
    assert len(both.output.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "peft", None)  # as in an environment without peft
    with pytest.raises(ValueError, match=r"--lora-rank needs peft: pip install 'mosic\[lora\]'"):
        build_student(config(store, tmp_path, lora_rank=4))


def test_configs_written_before_lora_and_eval_still_load(store, tmp_path):
    cfg = config(store, tmp_path)
    old = cfg.to_dict()
    for key in ("lora_rank", "lora_alpha", "evaluation"):
        del old[key]
    assert TrainConfig.from_dict(old) == cfg
    changed = replace(cfg, lora_rank=8, evaluation=TrainEvalConfig(every=5, data_root="/x"))
    assert TrainConfig.from_dict(changed.to_dict()) == changed


@pytest.fixture(scope="module")
def davis(tmp_path_factory) -> Path:
    """Two generated 4-frame videos in the DAVIS 2017 layout."""
    videos = [make_video(i, num_frames=4, height=48, width=64) for i in range(2)]
    return write_davis(videos, tmp_path_factory.mktemp("eval") / "DAVIS", ["a", "b"])


def test_eval_every_logs_a_finite_miou_and_leaves_training_alone(store, davis, tmp_path):
    evaluation = TrainEvalConfig(every=2, data_root=str(davis), max_items=2, input_size=96)
    cfg = config(store, tmp_path / "eval", max_steps=4, evaluation=evaluation)
    losses = train(cfg).losses
    records = [json.loads(line) for line in (tmp_path / "eval" / "metrics.jsonl").open()]
    scores = {r["step"]: r.get("eval/video_davis_miou") for r in records}
    assert list(scores) == [1, 2, 3, 4]
    assert scores[1] is None and scores[3] is None
    assert all(0 < scores[s] <= 1 and math.isfinite(scores[s]) for s in (2, 4)), scores
    assert losses == train(config(store, tmp_path / "plain", max_steps=4)).losses


def test_missing_eval_data_fails_at_once(store, tmp_path):
    missing = tmp_path / "no-davis"
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["train", "--store", str(store), "--output", str(tmp_path / "run")]
        + ["--eval-every", "5", "--eval-data-root", str(missing)],
    )
    assert result.exit_code == 2, result.output
    assert "--eval-data-root" in result.output and "no-davis: no such folder" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing started
    empty = tmp_path / "empty"
    empty.mkdir()
    evaluation = TrainEvalConfig(every=5, data_root=str(empty))
    with pytest.raises(ValueError, match="--eval-data-root: .*JPEGImages.*davischallenge"):
        train(config(store, tmp_path / "run", evaluation=evaluation))
    with pytest.raises(ValueError, match="--eval-every needs --eval-data-root"):
        train(config(store, tmp_path / "run", evaluation=TrainEvalConfig(every=5)))


def test_a_failing_evaluation_warns_and_training_goes_on(tmp_path, capsys):
    videos = [make_video(i, num_frames=4, height=48, width=64) for i in range(3)]
    voc = write_voc(videos, tmp_path, ["a", "b", "c"], every=2, train_videos=2)
    backbone = create_backbone("vit-tiny-test").train()
    settings = TrainEvalConfig(every=1, dataset="voc", data_root=str(voc), input_size=64)
    cpu = torch.device("cpu")
    hummingbird = TrainEvaluator(replace(settings, benchmark="hummingbird"), cpu)(backbone, 1)
    assert 0 < hummingbird["eval/hummingbird_voc_miou"] <= 1 and backbone.training
    overclustering = TrainEvaluator(replace(settings, benchmark="overclustering"), cpu)
    assert overclustering(backbone, 7) == {} and backbone.training  # K=100 > 32 patches
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("warning: evaluation at step 7 failed (100 clusters for 32")
    assert warning.endswith("training goes on") and len(warning.splitlines()) == 1
