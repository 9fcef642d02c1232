"""Model pieces: Sinkhorn, feature sampling axes, what trains, the EMA teacher, the loss."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mosic.stages.losses.sinkhorn import SinkhornKnopp
from mosic.stages.losses.trajectory import trajectory_cluster_loss
from mosic.stages.model.backbone import WeightsError, create_backbone, unfreeze_last_blocks
from mosic.stages.model.network import MoSiCNetwork, ema_update, make_teacher
from mosic.stages.model.sampling import sample_features


def cosine_scores(points: int, prototypes: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(points, 16, generator=g), dim=1)
    b = torch.nn.functional.normalize(torch.randn(prototypes, 16, generator=g), dim=1)
    return a @ b.t()


def test_sinkhorn_gives_equipartitioned_rows_that_sum_to_one():
    scores = cosine_scores(2000, 20, seed=0)
    q = SinkhornKnopp(epsilon=0.06, iterations=100)(scores)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(2000), atol=1e-4, rtol=0)
    torch.testing.assert_close(q.sum(dim=0), torch.full((20,), 100.0), atol=1.0, rtol=0)
    # A few iterations already move the marginals most of the way from the raw softmax.
    raw = torch.softmax(scores / 0.06, dim=1).sum(dim=0)
    three = SinkhornKnopp(epsilon=0.06, iterations=3)(scores).sum(dim=0)
    assert (three - 100).abs().max() < 0.5 * (raw - 100).abs().max()


def _sinkhorn_rank(rank: int, world: int, init: str, scores: torch.Tensor, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    part = scores.chunk(world)[rank]
    torch.save(SinkhornKnopp(0.06, 3)(part), f"{out}.{rank}")
    dist.destroy_process_group()


def test_sinkhorn_over_two_gloo_ranks_equals_one_process(tmp_path):
    scores = cosine_scores(600, 10, seed=1)
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_sinkhorn_rank, args=(2, init, scores, str(tmp_path / "q")), nprocs=2)
    parts = [torch.load(tmp_path / f"q.{r}", weights_only=True) for r in range(2)]
    torch.testing.assert_close(torch.cat(parts), SinkhornKnopp(0.06, 3)(scores))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_points_moving_along_x_sample_moving_columns(mode):
    # A 4 x 6 feature map whose channel 0 is the column index and channel 1 the row index,
    # for a 64 x 96 image with 16 px patches.
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(6.0), indexing="ij")
    features = torch.stack([cols, rows]).unsqueeze(0)  # (1, 2, 4, 6)
    x = torch.tensor([8.0, 24.0, 40.0, 56.0, 72.0])  # patch centres along x (x + 0.5 = 16 j + 8)
    points = torch.stack([x - 0.5, torch.full_like(x, 23.5)], dim=1).unsqueeze(0)
    sampled = sample_features(features, points, (64, 96), mode)[0]
    torch.testing.assert_close(sampled[:, 0], torch.arange(5.0))  # columns move
    torch.testing.assert_close(sampled[:, 1], torch.ones(5))  # the row stays


def test_nearest_sampling_takes_the_patch_containing_the_pixel():
    features = torch.arange(6.0).view(1, 1, 1, 6)  # one row of 6 patches, 16 px wide
    points = torch.tensor([[[0.0, 0.0], [15.0, 0.0], [16.0, 0.0], [95.0, 0.0]]])
    sampled = sample_features(features, points, (16, 96), "nearest")[0, :, 0]
    assert sampled.tolist() == [0.0, 0.0, 1.0, 5.0]


def tiny_network() -> MoSiCNetwork:
    torch.manual_seed(0)
    backbone = create_backbone("vit-tiny-test", img_size=64)
    unfreeze_last_blocks(backbone, 1)
    return MoSiCNetwork(backbone, prototypes=8, dim=16)


def test_only_unfrozen_blocks_head_and_prototypes_change_and_teacher_follows_ema():
    student = tiny_network()
    teacher = make_teacher(student)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-2)
    images = torch.randn(2, 3, 64, 64)
    points = torch.rand(2, 10, 2) * 63
    loss = student(images, points).logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    optimizer.step()
    ema_update(teacher, student, 0.9)
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(
        k.startswith(("backbone.blocks.1.", "head.", "prototypes.")) for k in changed
    )
    assert any(k.startswith("backbone.blocks.1.") for k in changed)
    for k, v in teacher.state_dict().items():
        expected = 0.9 * teacher_before[k] + 0.1 * student.state_dict()[k]
        torch.testing.assert_close(v, expected)


def test_unfreeze_counts_from_the_end():
    backbone = create_backbone("vit_tiny_patch16_224", img_size=32)  # 12 blocks
    assert unfreeze_last_blocks(backbone, 2) == ["blocks.10", "blocks.11"]
    with pytest.raises(ValueError, match="has 12 blocks"):
        unfreeze_last_blocks(backbone, 13)


def test_loss_weights_out_invisible_frames():
    logits = torch.tensor([[[10.0, 0.0], [0.0, 10.0]]])  # (B=1, N=2, K=2)
    targets = torch.tensor([[[0, 1], [1, 1]]])  # (B, F=2, N): frame 1 point 0 is wrong...
    weights = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])  # ...but invisible there
    loss = trajectory_cluster_loss(logits, targets, weights)
    assert loss < 1e-3
    assert trajectory_cluster_loss(logits, targets, torch.ones_like(weights)) > 2.0
    soft = torch.nn.functional.one_hot(targets, 2).float()
    torch.testing.assert_close(trajectory_cluster_loss(logits, soft, weights), loss)


def test_local_weights_load_strictly_and_other_backbones_fail(tmp_path):
    source = create_backbone("vit-tiny-test", img_size=64)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    loaded = create_backbone("vit-tiny-test", weights=tmp_path / "w.pth", img_size=64)
    for a, b in zip(source.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(
        WeightsError,
        match=r"w.pth: weights of another architecture than "
        r"dino-s16 \(cls_token \(1, 1, 64\) where the backbone has \(1, 1, 384\).*"
        r"they look like vit-tiny-test",
    ):
        create_backbone("dino-s16", weights=tmp_path / "w.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        create_backbone("vit-tiny-test", weights=tmp_path / "nope.pth")


def test_xformers_attention_without_xformers_is_a_clear_error():
    try:
        import xformers  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("xformers is installed here")
    from mosic.stages.model.attention import use_xformers

    with pytest.raises(RuntimeError, match="--attention xformers needs xformers"):
        use_xformers(create_backbone("vit-tiny-test", img_size=32))
