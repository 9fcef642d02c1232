"""Backbone weights end to end: the position grid the weights come with (DINOv2 37 x 37) kept
through construction, checkpoints, export and evaluation; the printed export recipe run for
every registered backbone; the user's slips with weights and exports as one-line errors."""

from __future__ import annotations

import math
import os
import stat
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.layers import resample_abs_pos_embed
from typer.testing import CliRunner

from mosic.cli import app
from mosic.pipeline.checkpoint import list_checkpoints
from mosic.pipeline.train import train
from mosic.pipeline.train_step import build_student
from mosic.stages.evaluation.features import DenseFeatures
from mosic.stages.evaluation.models import load_eval_backbone
from mosic.stages.model.backbone import (
    BACKBONES,
    WeightsError,
    create_backbone,
    patch_tokens,
    position_grid,
)
from mosic.stages.objective import normalize_frames
from tests.test_train import config, make_store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def vits(tmp_path_factory) -> Path:
    """A DINOv2 ViT-S/14 state dict as timm builds it at its native 518 px (37 x 37 grid)."""
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_dinov2.lvd142m", num_classes=0)
    with torch.no_grad():  # position embeddings with detail at every scale, as trained ones
        model.pos_embed.normal_(0, 1)
    path = tmp_path_factory.mktemp("vits") / "dinov2_vits14.safetensors"
    save_file(model.state_dict(), str(path))
    return path


def test_patch_features_equal_timms_native_model_run_at_448_and_224(vits):
    native = timm.create_model(
        "vit_small_patch14_dinov2.lvd142m", num_classes=0, dynamic_img_size=True
    )
    native.load_state_dict(load_file(vits), strict=True)
    native.eval()
    ours = load_eval_backbone("dinov2-s14", str(vits))
    assert ours.pos_embed.shape == (1, 1 + 37 * 37, 384) and position_grid(ours) == (37, 37)
    # The previous construction: built for 224 px, the grid shrunk to 16 x 16 when loading.
    shrunk = timm.create_model(
        "vit_small_patch14_dinov2.lvd142m", num_classes=0, img_size=224, dynamic_img_size=True
    )
    from timm.models.vision_transformer import checkpoint_filter_fn

    shrunk.load_state_dict(checkpoint_filter_fn(load_file(vits), shrunk), strict=True)
    shrunk.eval()
    features = DenseFeatures(ours)
    rng = np.random.default_rng(0)
    for size in (448, 224):
        images = torch.from_numpy(rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8))
        normalized = normalize_frames(images.permute(0, 3, 1, 2))
        with torch.no_grad():
            expected = patch_tokens(native, normalized)
            before = patch_tokens(shrunk, normalized)
        got = features(images)
        assert got.shape == (2, 384, size // 14, size // 14)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        # Before, 448 px resampled the grid twice (37 -> 16 at load, 16 -> 32 per forward);
        # at 224 px the one resampling at load was the one a forward does now.
        assert ((before - expected).abs().max() > 0.1) == (size == 448)


def test_training_checkpoints_and_exports_keep_the_37x37_grid(vits, tmp_path):
    cfg = config("unused.zarr", tmp_path, backbone="dinov2-s14", weights=str(vits))
    student = build_student(cfg)  # built for training at 64 px
    assert student.backbone.pos_embed.shape == (1, 1 + 37 * 37, 384)
    checkpoint = tmp_path / "checkpoint.pt"
    state = {"config": {"backbone": "dinov2-s14"}, "step": 1}
    torch.save(state | {"student": student.state_dict()}, checkpoint)
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "-o", str(tmp_path / "m.safetensors")]
    )
    assert result.exit_code == 0, result.output
    assert load_file(tmp_path / "m.safetensors")["pos_embed"].shape == (1, 1370, 384)
    assert "img_size=518" in result.stdout


def old_checkpoint(new: Path, old: Path, side: int) -> None:
    """A checkpoint as mosic wrote them before grids were kept: the student's and teacher's
    position grid resampled to ``side`` x ``side`` (the training input size's)."""
    state = torch.load(new, weights_only=True)
    for part in ("student", "teacher"):
        embed = state[part]["backbone.pos_embed"]
        state[part]["backbone.pos_embed"] = resample_abs_pos_embed(embed, (side, side))
    torch.save(state, old)


def test_old_checkpoints_are_evaluated_with_their_grid_and_not_resumed(store, tmp_path):
    cfg = config(store, tmp_path / "run", max_steps=2, checkpoint_every=1)
    train(cfg)
    old = tmp_path / "old.pt"
    old_checkpoint(list_checkpoints(tmp_path / "run")[0], old, 4)  # trained at 64 px: 4 x 4
    assert position_grid(load_eval_backbone(str(old))) == (4, 4)
    evaluated = CliRunner().invoke(app, ["export", str(old), "-o", str(tmp_path / "old.st")])
    assert evaluated.exit_code == 0 and "img_size=64" in evaluated.stdout
    with pytest.raises(WeightsError) as err:  # resumed into a folder that holds no other run
        train(replace(cfg, output=str(tmp_path / "resumed")), resume=old)
    assert "old.pt: its backbone has a 4x4 position grid, this run's 14x14" in str(err.value)
    assert "start a new run" in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def recipes(tmp_path_factory) -> dict[str, tuple[str, int, int]]:
    """``mosic export`` of a training checkpoint of every registered backbone, then its printed
    recipe run, all of them in one fresh Python process. Per backbone: the export's output,
    its parameter count, and the parameter count of the model the recipe built (-1 if the
    recipe failed). The checkpoints hold zeros in bfloat16 (values do not matter here; loading
    converts them), to keep the large backbones' files small."""
    folder = tmp_path_factory.mktemp("recipes")
    outputs, scripts, sizes = {}, [], {}
    for name in BACKBONES:
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in create_backbone(name).state_dict().items()}
        student = {f"backbone.{k}": torch.zeros(v, dtype=torch.bfloat16) for k, v in shapes.items()}
        checkpoint = folder / f"{name}.pt"
        torch.save({"config": {"backbone": name}, "student": student, "step": 3}, checkpoint)
        del student
        output = folder / "export" / f"{name}.safetensors"
        result = CliRunner().invoke(app, ["export", str(checkpoint), "-o", str(output)])
        checkpoint.unlink()
        outputs[name] = result.stdout if result.exit_code == 0 else f"exit {result.exit_code}"
        sizes[name] = sum(math.prod(v) for v in shapes.values())
        lines = result.stdout.splitlines()
        if result.exit_code == 0 and lines[0].endswith("load it in timm with:"):
            recipe = textwrap.dedent("\n".join(lines[1:]))
            report = "print(NAME, sum(p.numel() for p in model.parameters()), flush=True)"
            scripts.append(f"NAME = {name!r}\n{recipe}\n{report}\ndel model\n")
    script = "".join(f"try:\n{textwrap.indent(s, '    ')}except Exception as e:\n"
                     "    print(NAME, -1, repr(e)[:300], flush=True)\n"
                     for s in scripts)  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=1200, cwd=folder
    )
    built = {line.split()[0]: line for line in run.stdout.splitlines()}
    return {
        name: (outputs[name], sizes[name], built.get(name, f"{name} -1 {run.stderr[-500:]}"))
        for name in BACKBONES
    }


@pytest.mark.parametrize("name", list(BACKBONES))
def test_the_printed_export_recipe_loads_strictly_for_every_backbone(recipes, name):
    output, size, built = recipes[name]
    assert output.splitlines()[0].endswith("load it in timm with:"), output
    assert "strict=True" in output and "dynamic_img_size=True" in output
    assert built.split()[1] == str(size), built  # the recipe's model, all its weights loaded
    if name.startswith("dinov2"):
        assert "img_size=518" in output  # 37 x 37 position tokens
    if name == "vit-tiny-test":
        assert "depth=2, embed_dim=64, num_heads=2" in output  # its construction kwargs


def test_exports_are_written_with_the_umask_and_unwritable_paths_are_one_line(store, tmp_path):
    result = train(config(store, tmp_path / "run", max_steps=1))
    before = os.umask(0o027)
    try:
        made = CliRunner().invoke(
            app, ["export", str(result.final_checkpoint), "-o", str(tmp_path / "m.safetensors")]
        )
    finally:
        os.umask(before)
    assert made.exit_code == 0, made.output
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o640
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for target in (blocker / "m.safetensors", tmp_path):  # under a file; a folder
        failed = CliRunner().invoke(
            app, ["export", str(result.final_checkpoint), "-o", str(target)]
        )
        assert failed.exit_code == 2
        [line] = failed.output.strip().splitlines()
        assert line.startswith(f"error: {target}: cannot write the export (")
    assert not list(tmp_path.glob(".m.safetensors.*"))  # no temporary file left


@pytest.fixture(scope="module")
def not_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "weights.pth"
    path.write_text("these are my notes, not weights\n")
    return path


def test_train_with_weights_of_another_architecture_or_no_weights_is_one_line(
    store, vits, not_weights, tmp_path
):
    base = ["train", "--store", str(store), "--backbone", "vit-tiny-test", "--device", "cpu"]
    base += ["--output", str(tmp_path), "--workers", "0", "--batch-size", "4", "--max-steps", "1"]
    base += ["--clip-frames", "3", "--input-size", "64"]
    foreign = CliRunner().invoke(app, [*base, "--weights", str(vits)])
    assert foreign.exit_code == 2
    [line] = foreign.output.strip().splitlines()
    assert line.startswith(f"error: {vits}: weights of another architecture than vit-tiny-test (")
    assert "cls_token (1, 1, 384) where the backbone has (1, 1, 64)" in line
    assert line.endswith("they look like dinov2-s14")
    text = CliRunner().invoke(app, [*base, "--weights", str(not_weights)])
    assert text.exit_code == 2
    [line] = text.output.strip().splitlines()
    assert line == f"error: {not_weights}: not a weights file (neither .safetensors nor a " + (
        "torch.save file of tensors)"
    )
    assert "weights_only" not in line
    assert not list_checkpoints(tmp_path)


def test_evaluate_with_weights_of_another_architecture_or_no_weights_is_one_line(
    vits, not_weights, tmp_path
):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassAug"):
        (voc / folder).mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (32, 32)).save(voc / "JPEGImages" / "a.jpg")
    for folder in ("SegmentationClass", "SegmentationClassAug"):
        Image.new("L", (32, 32)).save(voc / folder / "a.png")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split in ("trainaug", "val"):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("a\n")
    base = ["evaluate", "--model", "vit-tiny-test", "--benchmark", "overclustering"]
    base += ["--dataset", "voc", "--data-root", str(tmp_path / "VOCdevkit"), "--weights"]
    foreign = CliRunner().invoke(app, [*base, str(vits)])
    assert foreign.exit_code == 2
    [line] = foreign.output.strip().splitlines()
    assert line.startswith(f"error: {vits}: weights of another architecture than vit-tiny-test")
    assert line.endswith("they look like dinov2-s14")
    text = CliRunner().invoke(app, [*base, str(not_weights)])
    assert text.exit_code == 2
    [line] = text.output.strip().splitlines()
    assert line.startswith(f"error: {not_weights}: not a weights file")
    assert "weights_only" not in line
