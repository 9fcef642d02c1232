"""``TrainStep`` under DDP (real gloo ranks), on empty batches, under autocast; token dropping."""

from __future__ import annotations

import copy
import time

import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from mosic.pipeline.train_config import OptimConfig, TrainConfig
from mosic.pipeline.train_step import TrainStep, build_optimizer, build_student
from mosic.stages.data.augment import AugmentConfig
from mosic.stages.data.clips import ClipConfig
from mosic.stages.losses.sinkhorn import SinkhornKnopp
from mosic.stages.model.backbone import create_backbone, patch_tokens
from mosic.stages.model.network import make_teacher
from mosic.stages.model.token_drop import (
    draw_kept_tokens,
    kept_token_map,
    patch_tokens_kept,
    points_on_kept_tokens,
)
from mosic.stages.objective import ObjectiveConfig

B, FRAMES, N, S = 4, 3, 20, 64


def config(**objective) -> TrainConfig:
    return TrainConfig(
        stores=("unused",),
        backbone="vit-tiny-test",
        unfreeze_blocks=1,
        prototypes=8,
        batch_size=B,
        device="cpu",
        precision="fp32",
        clip=ClipConfig(clip_frames=FRAMES, augment=AugmentConfig(input_size=S)),
        objective=ObjectiveConfig(**objective),
        optim=OptimConfig(lr_head=1e-3, lr_backbone=1e-4),
    )


def batch(visible_share: list[float], seed: int = 0):
    """B clips; clip b's tracks are visible with probability visible_share[b] (0: never)."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (B, FRAMES, 3, S, S), dtype=torch.uint8, generator=g)
    start = torch.rand(B, 1, N, 2, generator=g) * (S - 1)
    positions = (start + torch.randn(B, FRAMES, N, 2, generator=g).cumsum(1) * 3).clamp(0, S - 1)
    share = torch.tensor(visible_share).view(B, 1, 1)
    visible = torch.rand(B, FRAMES, N, generator=g) < share
    return frames, positions, visible


def one_step(cfg: TrainConfig, data, ddp: bool = False) -> dict:
    """Weights, gradients, loss and statistics after one ``TrainStep`` from seeded weights."""
    torch.manual_seed(0)
    student = build_student(cfg)
    teacher = make_teacher(student)
    optimizer, scheduler = build_optimizer(student, cfg, total_steps=10)
    model = DistributedDataParallel(student) if ddp else student
    step = TrainStep(cfg, student, teacher, model, optimizer, scheduler, torch.device("cpu"))
    loss, stats = step(*data)
    return {
        "loss": loss,
        "stats": stats,
        "grads": {k: p.grad for k, p in student.named_parameters() if p.grad is not None},
        "student": copy.deepcopy(student.state_dict()),
        "teacher": copy.deepcopy(teacher.state_dict()),
    }


SCENARIOS = {  # name: (objective settings, visible share of each clip; ranks take 2 clips each)
    "unequal visibility": ({}, [0.95, 0.9, 0.3, 0.2]),
    "unequal, symmetric": ({"symmetric": True}, [0.95, 0.9, 0.3, 0.2]),
    "rank 1 sees nothing": ({}, [0.9, 0.8, 0.0, 0.0]),
}


def _rank(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    results = {}
    for name, (objective, shares) in SCENARIOS.items():
        data = [t[2 * rank : 2 * rank + 2] for t in batch(shares)]
        results[name] = one_step(config(**objective), data, ddp=True)
    torch.save(results, f"{out}.{rank}")
    dist.destroy_process_group()


def spawn_two_ranks(function, args, timeout: float = 240.0) -> None:
    """Run ``function(rank, *args)`` on 2 processes; fail (not hang) if they do not finish."""
    context = mp.spawn(function, args=args, nprocs=2, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the ranks did not finish in {timeout:.0f} s (out of step?)")


def test_two_gloo_ranks_give_the_step_of_one_process_with_both_halves(tmp_path):
    spawn_two_ranks(_rank, (f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "r")))
    ranks = [torch.load(tmp_path / f"r.{r}", weights_only=False) for r in range(2)]
    for name, (objective, shares) in SCENARIOS.items():
        single = one_step(config(**objective), batch(shares))
        for rank in ranks:
            got = rank[name]
            assert got["loss"] == pytest.approx(single["loss"], rel=1e-5), name
            assert got["stats"].terms == single["stats"].terms
            assert got["stats"].points_per_clip == pytest.approx(single["stats"].points_per_clip)
            assert got["stats"].visible_fraction == pytest.approx(single["stats"].visible_fraction)
            assert got["stats"].cluster_usage == pytest.approx(single["stats"].cluster_usage)
            for key, grad in single["grads"].items():  # sums in another order: float rounding
                scale = float(grad.abs().max())
                torch.testing.assert_close(got["grads"][key], grad, rtol=1e-4, atol=1e-5 * scale)
            # AdamW's first step is lr * g / (|g| + 1e-8): float rounding of a small gradient
            # moves it, so weights are compared where |g| > 1e-7, to 1 % of the head's lr.
            for part in ("student", "teacher"):
                for key, value in single[part].items():
                    grad = single["grads"].get(key)
                    where = grad.abs() > 1e-7 if grad is not None else torch.ones_like(value) > 0
                    torch.testing.assert_close(
                        got[part][key][where], value[where], atol=1e-5, rtol=0
                    )


def test_a_batch_with_nothing_visible_changes_no_weight():
    cfg = config()
    torch.manual_seed(0)
    student = build_student(cfg)
    student.prototypes.normalize_()  # as every step begins
    reference = student.state_dict()
    result = one_step(cfg, batch([0.0] * B))
    assert result["loss"] == 0.0 and result["stats"].terms == 0
    assert result["stats"].points_per_clip == 0.0
    for key, value in reference.items():
        torch.testing.assert_close(result["student"][key], value, rtol=0, atol=0)
        torch.testing.assert_close(result["teacher"][key], value, rtol=0, atol=0)


def test_sinkhorn_of_no_points_is_empty():
    assignments = SinkhornKnopp(0.06, 3)(torch.zeros(0, 7))
    assert assignments.shape == (0, 7) and assignments.dtype == torch.float32


def test_scores_and_sinkhorn_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    student = build_student(config())
    images, points = torch.randn(2, 3, S, S), torch.rand(2, 10, 2) * (S - 1)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = student.head(torch.randn(2, 10, 64))
            scores = student(images, points)
            assignments = SinkhornKnopp(0.06, 3)(scores.flatten(0, 1))
        exact = student.prototypes(features.float())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under = student.prototypes(features)
    assert scores.dtype == torch.float32 and assignments.dtype == torch.float32
    torch.testing.assert_close(under, exact, rtol=0, atol=0)
    torch.testing.assert_close(assignments, SinkhornKnopp(0.06, 3)(scores.flatten(0, 1)))


def _vit_on_kept_tokens(vit, images, kept):
    """The ViT run by hand on the prefix tokens and the kept patch tokens alone."""
    x = vit._pos_embed(vit.patch_embed(images))
    p = vit.num_prefix_tokens
    x = torch.cat([x[:, :p], x[:, p:][torch.arange(len(x))[:, None], kept]], dim=1)
    return vit.norm(vit.blocks(vit.norm_pre(x)))[:, p:]


def test_dropped_tokens_never_reach_the_vit_and_kept_ones_keep_their_place():
    torch.manual_seed(0)
    vit = create_backbone("vit-tiny-test", img_size=S).eval()
    images = torch.randn(3, 3, S, S)
    kept = draw_kept_tokens(3, 16, 0.5, "cpu")
    assert kept.shape == (3, 8) and all(len(set(k.tolist())) == 8 for k in kept)
    features = patch_tokens_kept(vit, images, kept)  # (3, D, 4, 4)
    flat = features.flatten(2).transpose(1, 2)  # (3, 16, D)
    with torch.no_grad():
        expected = _vit_on_kept_tokens(vit, images, kept)
    for b in range(3):
        torch.testing.assert_close(flat[b, kept[b]], expected[b])
        dropped = sorted(set(range(16)) - set(kept[b].tolist()))
        assert not flat[b, dropped].any()
    assert isinstance(vit.patch_drop, torch.nn.Identity)  # the slot is given back
    everything = torch.arange(16).repeat(3, 1)
    torch.testing.assert_close(
        patch_tokens_kept(vit, images, everything), patch_tokens(vit, images)
    )


def test_token_dropping_runs_through_evas_rotary_embedding():
    torch.manual_seed(0)
    eva = timm.create_model(
        "eva02_tiny_patch14_224", img_size=56, depth=1, num_classes=0, dynamic_img_size=True
    ).eval()
    images = torch.randn(2, 3, 56, 56)
    everything = torch.arange(16).repeat(2, 1)
    with torch.no_grad():
        torch.testing.assert_close(
            patch_tokens_kept(eva, images, everything), patch_tokens(eva, images)
        )
        half = draw_kept_tokens(2, 16, 0.5, "cpu")
        features = patch_tokens_kept(eva, images, half).flatten(2)
    assert (features.abs().sum(1) > 0).sum(1).tolist() == [8, 8]
    assert eva.patch_drop is None


def test_points_weigh_only_where_their_feature_comes_from_kept_tokens():
    kept_map = kept_token_map(torch.tensor([[0, 3]]), (2, 2))  # patches (0, 0) and (1, 1) kept
    assert kept_map.view(-1).tolist() == [1.0, 0.0, 0.0, 1.0]
    # 32 x 32 image, 16 px patches: points in patch (0,0), (0,1), (1,1), and on the centre line
    points = torch.tensor([[[3.0, 4.0], [20.0, 4.0], [25.0, 30.0], [15.0, 15.0]]])
    nearest = points_on_kept_tokens(kept_map, points, (32, 32), "nearest")[0].tolist()
    bilinear = points_on_kept_tokens(kept_map, points, (32, 32), "bilinear")[0].tolist()
    assert nearest == [True, False, True, True]
    assert bilinear == [True, False, True, False]  # between kept and dropped patches
