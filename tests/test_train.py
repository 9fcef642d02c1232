"""Stage two end to end on CPU: a tiny ViT trained from a real store of generated videos."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from typer.testing import CliRunner

from mosic.cli import app
from mosic.pipeline.checkpoint import CheckpointError, list_checkpoints
from mosic.pipeline.export import export_backbone
from mosic.pipeline.run_folder import RunError
from mosic.pipeline.train import TrainingError, train
from mosic.pipeline.train_config import TrainConfig
from mosic.stages.data.augment import AugmentConfig
from mosic.stages.data.clips import ClipConfig
from mosic.stages.model.backbone import patch_tokens
from mosic.stages.objective import ObjectiveConfig
from mosic.stages.synthetic import make_video, write_video_file
from mosic.store_schema import TrackStore


def make_store(root: Path) -> Path:
    """A track store of 8 generated 128x96 videos (30 frames) in ``root``; returns its path."""
    for i in range(8):
        video = make_video(i, num_frames=30, height=96, width=128)
        write_video_file(video, root / "videos" / f"v{i}.mp4")
    path = root / "tracks.zarr"
    result = CliRunner().invoke(
        app,
        [
            "extract-tracks",
            str(root / "videos"),
            "--store",
            str(path),
            "--grid",
            "8",
            "--horizon",
            "13",
            "--query-every",
            "4",
            "--size",
            "128x96",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("train"))


def config(store, output, **changes) -> TrainConfig:
    base = TrainConfig(
        stores=(str(store),),
        output=str(output),
        backbone="vit-tiny-test",
        unfreeze_blocks=1,
        prototypes=8,
        batch_size=4,
        max_steps=6,
        loader_workers=0,
        checkpoint_every=3,
        log_every=1,
        device="cpu",
        clip=ClipConfig(
            clip_frames=3, clip_step=6, augment=AugmentConfig(input_size=64), points_per_clip=32
        ),
        objective=ObjectiveConfig(),
    )
    return replace(base, **changes)


def test_loss_falls_and_clusters_do_not_collapse(store, tmp_path):
    cfg = config(store, tmp_path, max_steps=100, checkpoint_every=1000, log_every=50)
    cfg = replace(cfg, optim=replace(cfg.optim, lr_head=1e-3, lr_backbone=1e-4))
    records = []
    result = train(cfg, on_step=records.append)
    first = sum(r["loss"] for r in records[:20]) / 20
    last = sum(r["loss"] for r in records[-20:]) / 20
    usage = sum(r["cluster_usage"] for r in records[-20:]) / 20
    print(f"loss {first:.3f} -> {last:.3f}, cluster usage {usage:.2f}")
    assert last < 0.8 * first
    assert usage > 0.5  # far from one cluster taking everything (0)
    assert result.steps == 100 and (tmp_path / "metrics.jsonl").exists()
    # 32 points per clip drawn from the 8 x 8 stored grid: those inside the crop, at most 32
    points = [r["points_per_clip"] for r in records]
    assert 10 < sum(points) / len(points) <= 32 and max(points) <= 32
    assert list((tmp_path / "tensorboard").iterdir())


def test_resume_gives_bitwise_the_same_losses(store, tmp_path):
    straight = train(config(store, tmp_path / "a", max_steps=8, checkpoint_every=4)).losses
    first = train(config(store, tmp_path / "b", max_steps=8, checkpoint_every=4)).losses
    checkpoint = list_checkpoints(tmp_path / "b")[0]
    assert checkpoint.name == "checkpoint-00000004.pt"
    resumed = train(config(store, tmp_path / "c", max_steps=8), resume=checkpoint).losses
    assert first == straight
    assert resumed == straight[4:]


def test_checkpoint_of_another_model_is_refused(store, tmp_path):
    train(config(store, tmp_path / "a", max_steps=3))
    checkpoint = list_checkpoints(tmp_path / "a")[-1]
    other = config(store, tmp_path / "b", prototypes=16)
    with pytest.raises(RunError, match=r"prototypes 8 -> 16, max_steps 3 -> 6; "):
        train(other, resume=checkpoint)
    allowed = ("prototypes", "max_steps")  # named, but the weights cannot take it
    with pytest.raises(CheckpointError, match=r"checkpoint-00000003.pt: does not fit the model"):
        train(other, resume=checkpoint, allow_changes=allowed)


def test_nan_loss_stops_with_the_step_and_keeps_checkpoints(store, tmp_path):
    cfg = config(store, tmp_path, max_steps=6, checkpoint_every=2)
    train(replace(cfg, max_steps=2))
    [good] = list_checkpoints(tmp_path)
    state = torch.load(good, weights_only=True)
    for key in state["student"]:
        if key.startswith("head."):
            state["student"][key].fill_(float("nan"))  # as a diverged run would leave it
    torch.save(state, tmp_path / "diverged.pt")
    with pytest.raises(TrainingError, match=r"loss is nan at step 3; stopped .*diverged.pt"):
        train(
            replace(cfg, output=str(tmp_path / "b")), tmp_path / "diverged.pt", None, ("max_steps",)
        )
    assert list_checkpoints(tmp_path) == [good] and not list_checkpoints(tmp_path / "b")


def test_export_loads_in_timm_strictly_with_the_same_features(store, tmp_path):
    result = train(config(store, tmp_path, max_steps=2))
    path, name = export_backbone(result.final_checkpoint, tmp_path / "model.safetensors")
    model = timm.create_model(
        name, num_classes=0, dynamic_img_size=True, depth=2, embed_dim=64, num_heads=2
    )
    model.load_state_dict(load_file(path), strict=True)
    model.eval()
    student = result.student.backbone.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(patch_tokens(model, images), patch_tokens(student, images))


def _ddp_rank(rank: int, cfg: TrainConfig, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=os.environ["TEST_MASTER_PORT"],
    )
    torch.set_num_threads(1)
    result = train(cfg)
    torch.save(result.student.state_dict(), f"{out}.{rank}")


def test_ddp_with_two_gloo_processes_keeps_ranks_identical(store, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        os.environ["TEST_MASTER_PORT"] = str(s.getsockname()[1])
    cfg = config(store, tmp_path, max_steps=3)
    mp.spawn(_ddp_rank, args=(cfg, str(tmp_path / "state")), nprocs=2)
    a, b = (torch.load(tmp_path / f"state.{r}", weights_only=True) for r in range(2))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    initial = config(store, tmp_path / "init", max_steps=1)
    assert not all(torch.equal(a[k], v) for k, v in train(initial).student.state_dict().items())


def test_cli_train_errors_are_one_line(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["train", "--store", str(tmp_path / "none.zarr")])
    assert missing.exit_code == 2 and "none.zarr" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    for flag, value, message in [
        ("--crop-geometry", "square", "--crop-geometry 'square': use paper or aspect"),
        ("--points-per-clip", "-1", "--points-per-clip -1: use 0 or more"),
        ("--mask-ratio", "1.0", "--mask-ratio 1.0: use a share in [0, 1)"),
    ]:
        bad = runner.invoke(app, ["train", "--store", str(tmp_path / "s.zarr"), flag, value])
        assert bad.exit_code == 2 and message in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1


def test_store_is_untouched_by_training(store, tmp_path):
    before = TrackStore.open(store).records()
    train(config(store, tmp_path, max_steps=2))
    assert TrackStore.open(store).records() == before


def test_cpu_training_keeps_the_thread_count_the_user_chose(store, tmp_path, monkeypatch):
    """With OMP_NUM_THREADS set, train() leaves torch's intra-op threads as they are (on a
    shared 2-core machine, raising them to every core made steps ~20x slower); unset, it gives
    torch the cores the DataLoader workers leave."""
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    train(config(store, tmp_path / "chosen", max_steps=1))
    assert torch.get_num_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    try:
        train(config(store, tmp_path / "free", max_steps=1))
        assert torch.get_num_threads() == os.cpu_count()  # loader_workers=0 in config()
    finally:
        torch.set_num_threads(1)
