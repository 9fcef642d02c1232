"""Guard: ``TrainStep`` against a training step written out from the paper's equations.

The reference below uses no mosic module for computing: only the tiny timm ViT's own layers
(patch embedding, position embedding, blocks, norm) and the parameters of a copy of the
network, read by name. It follows the paper's code (SMSD75/MoSiC,
``experiments/exp_mosic_multigpu.py``): features upsampled to the image (nearest) and read at
each track's pixel, a projection MLP, cosine scores against L2-normalised prototypes, the
teacher's Sinkhorn-Knopp (``utils/my_utils.py``), arg-max targets, a cross-entropy at
temperature 0.1, AdamW, then the EMA teacher; with mosic's documented departures
(docs/method.md): x is the column and y the row, Sinkhorn and the mean run over the visible
points of tracks seen in their first frame, the token-dropping weight is the first frame's.
A change to the objective that is not made here too fails these tests.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from mosic.pipeline.train_config import OptimConfig, TrainConfig
from mosic.pipeline.train_step import TrainStep, build_student, cosine_schedule, param_groups
from mosic.stages.data.augment import AugmentConfig
from mosic.stages.data.clips import ClipConfig
from mosic.stages.model.network import make_teacher
from mosic.stages.objective import ObjectiveConfig

B, FRAMES, N, S, PATCH, K = 2, 3, 24, 64, 16, 8
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MOMENTUM, TEMPERATURE, EPSILON, ITERATIONS = 0.9, 0.1, 0.06, 3
LR_HEAD, LR_BACKBONE, DECAY, TOTAL_STEPS = 1e-3, 1e-4, 0.01, 4


def fixed_batch(seed: int = 0):
    """Frames (B, F, 3, S, S) uint8, positions (B, F, N, 2) (x, y) and visible (B, F, N)."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (B, FRAMES, 3, S, S), dtype=torch.uint8, generator=g)
    start = torch.rand(B, 1, N, 2, generator=g) * (S - 1)
    steps = torch.randn(B, FRAMES, N, 2, generator=g) * 6
    steps[:, 0] = 0
    positions = (start + steps.cumsum(1)).clamp(0, S - 1)
    visible = torch.rand(B, FRAMES, N, generator=g) > 0.25
    return frames, positions, visible


# ---- the reference, from the equations ----------------------------------------------------


def patch_features(vit, images: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
    """(B, 3, S, S) -> (B, S/p, S/p, D) by the ViT's layers; with ``kept`` (B, L') only those
    patch tokens enter the blocks (prefix tokens always do) and the others' features are 0."""
    x = vit._pos_embed(vit.patch_embed(images))
    p = vit.num_prefix_tokens
    if kept is not None:
        x = torch.cat(
            [x[:, :p], torch.stack([t[k] for t, k in zip(x[:, p:], kept, strict=True)])], dim=1
        )
    x = vit.norm(vit.blocks(vit.norm_pre(x)))[:, p:]
    if kept is not None:
        rows = []
        for tokens, k in zip(x, kept, strict=True):
            full = tokens.new_zeros(S // PATCH * (S // PATCH), tokens.shape[-1])
            rows.append(full.index_put((k,), tokens))
        x = torch.stack(rows)
    return x.reshape(len(images), S // PATCH, S // PATCH, -1)


def at_pixels(grid: torch.Tensor, points: torch.Tensor, swap: bool) -> torch.Tensor:
    """The paper's sampling: the map upsampled (nearest) to S x S, read at each point's pixel.

    grid (B, h, w, C); points (B, P, 2) (x, y). Row y, column x (``swap``: the paper's code's
    row x, column y)."""
    up = F.interpolate(grid.permute(0, 3, 1, 2), size=(S, S), mode="nearest").permute(0, 2, 3, 1)
    pixel = torch.floor(points + 0.5).long().clamp(0, S - 1)
    x, y = pixel[..., 0], pixel[..., 1]
    rows, cols = (x, y) if swap else (y, x)
    return up[torch.arange(len(points))[:, None], rows, cols]


def cosine_scores(net, features: torch.Tensor) -> torch.Tensor:
    """The projection MLP (d -> 1024 -> 1024 -> 512 -> 256, GELU), L2 norm, prototypes."""
    linears = [m for m in net.head.mlp if isinstance(m, torch.nn.Linear)]
    x = features
    for i, layer in enumerate(linears):
        x = x @ layer.weight.t() + layer.bias
        if i < len(linears) - 1:
            x = F.gelu(x)
    return (x / x.norm(dim=-1, keepdim=True)) @ net.prototypes.weight.t()


def sinkhorn(scores: torch.Tensor) -> torch.Tensor:
    """``find_optimal_assignment``: Q = exp(S / eps)^T, rows then columns normalised."""
    q = torch.exp(scores / EPSILON).t()
    q = q / q.sum()
    k, m = q.shape
    for _ in range(ITERATIONS):
        q = q * ((1 / k) / q.sum(dim=1, keepdim=True))
        q = q * ((1 / m) / q.sum(dim=0, keepdim=True))
    return (q / q.sum(dim=0, keepdim=True)).t()


def reference_loss(student, teacher, batch, objective: ObjectiveConfig, swap: bool = False):
    frames, positions, visible = batch
    images = (frames.float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(
        3, 1, 1
    )
    flat_images, flat_points = images.flatten(0, 1), positions.flatten(0, 1)
    seen = visible & visible[:, :1]
    with torch.no_grad():
        t_features = at_pixels(
            patch_features(teacher.backbone, flat_images, None), flat_points, swap
        )
        t_scores = cosine_scores(teacher, t_features).view(B, FRAMES, N, K)
        q = sinkhorn(t_scores[seen])
    soft = torch.zeros(B, FRAMES, N, K).index_put((seen.nonzero(as_tuple=True)), q)
    hard = soft.argmax(-1)
    kept, on_kept = None, torch.ones(B * FRAMES, N, dtype=torch.bool)
    tokens = (S // PATCH) ** 2
    if objective.mask_ratio:
        order = torch.randn(B, tokens).argsort(dim=1)  # the paper's draw: one order per clip
        kept = order[:, int(tokens * objective.mask_ratio) :].repeat_interleave(FRAMES, dim=0)
        kept_map = torch.zeros(B * FRAMES, tokens).scatter(1, kept, 1.0)
        kept_map = kept_map.view(-1, S // PATCH, S // PATCH, 1)
        on_kept = at_pixels(kept_map, flat_points, swap)[..., 0] > 0
    features = at_pixels(patch_features(student.backbone, flat_images, kept), flat_points, swap)
    log_p = F.log_softmax(cosine_scores(student, features) / TEMPERATURE, -1).view(B, FRAMES, N, K)

    def cross_entropy(log_probs, soft_t, hard_t, weight):
        if objective.soft_targets:
            per_term = -(soft_t * log_probs).sum(-1)
        else:
            per_term = -log_probs.gather(-1, hard_t.unsqueeze(-1)).squeeze(-1)
        return (per_term * weight).sum() / weight.sum()

    on_kept = on_kept.view(B, FRAMES, N)
    first = log_p[:, :1].expand(-1, FRAMES, -1, -1)  # each track's first-frame prediction
    loss = cross_entropy(first, soft, hard, (seen & on_kept[:, :1]).float())
    if objective.symmetric:  # every frame predicts the first frame's cluster; the paper's +=
        first_soft = soft[:, :1].expand_as(soft)
        first_hard = hard[:, :1].expand_as(hard)
        loss = loss + cross_entropy(log_p, first_soft, first_hard, (seen & on_kept).float())
    return loss


def lr_factor(step: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / TOTAL_STEPS))


def reference_groups(student) -> list[dict]:
    """Backbone at 1e-4, head and prototypes at 1e-3; weight decay on matrices except the
    prototypes (mosic's choice, docs/method.md)."""
    groups = {}
    for name, parameter in student.named_parameters():
        if parameter.requires_grad:
            part = "backbone" if name.startswith("backbone.") else "head"
            decay = parameter.ndim > 1 and not name.startswith("prototypes.")
            groups.setdefault((part, decay), []).append(parameter)
    lr = {"backbone": LR_BACKBONE, "head": LR_HEAD}
    return [
        {"params": p, "lr": lr[part], "weight_decay": DECAY if decay else 0.0}
        for (part, decay), p in groups.items()
    ]


def reference_step(student, teacher, optimizer, step, batch, objective, swap=False) -> float:
    """One step of the reference; ``student`` and ``teacher`` are updated in place."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr_factor(step)
    with torch.no_grad():
        for net in (student, teacher):
            w = net.prototypes.weight
            w.copy_(w / w.norm(dim=1, keepdim=True))
    loss = reference_loss(student, teacher, batch, objective, swap)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
            t.copy_(MOMENTUM * t + (1 - MOMENTUM) * s)
    return loss.item()


# ---- mosic ------------------------------------------------------------------------------


def config(objective: ObjectiveConfig) -> TrainConfig:
    return TrainConfig(
        stores=("unused",),
        backbone="vit-tiny-test",
        unfreeze_blocks=1,
        prototypes=K,
        teacher_momentum=MOMENTUM,
        device="cpu",
        precision="fp32",
        clip=ClipConfig(clip_frames=FRAMES, augment=AugmentConfig(input_size=S)),
        objective=objective,
        optim=OptimConfig(lr_head=LR_HEAD, lr_backbone=LR_BACKBONE, weight_decay=DECAY),
    )


def make_optimizer(kind: str, groups: list[dict]) -> torch.optim.Optimizer:
    """SGD (an update linear in the gradient: exact comparisons over several steps) or AdamW."""
    for group in groups:
        group["initial_lr"] = group["lr"]
    if kind == "sgd":
        return torch.optim.SGD(groups)
    return torch.optim.AdamW(groups)


def paired_steps(objective: ObjectiveConfig, steps: int, optimizer: str = "sgd", swap=False):
    """``TrainStep`` and the reference from the same weights on the same batches, step by
    step; yields (loss, student, teacher, reference loss, its student, its teacher)."""
    cfg = config(objective)
    torch.manual_seed(0)
    student = build_student(cfg)
    teacher = make_teacher(student)
    ref_student, ref_teacher = copy.deepcopy(student), copy.deepcopy(teacher)
    mosic_optimizer = make_optimizer(optimizer, param_groups(student, cfg))
    ref_optimizer = make_optimizer(optimizer, reference_groups(ref_student))
    scheduler = torch.optim.lr_scheduler.LambdaLR(mosic_optimizer, cosine_schedule(TOTAL_STEPS, 0))
    cpu = torch.device("cpu")
    train_step = TrainStep(cfg, student, teacher, student, mosic_optimizer, scheduler, cpu)
    for step in range(steps):
        batch = fixed_batch(step)
        torch.manual_seed(10 + step)  # the same token-dropping draw for both
        loss, _ = train_step(*batch)
        torch.manual_seed(10 + step)
        ref_loss = reference_step(
            ref_student, ref_teacher, ref_optimizer, step, batch, objective, swap
        )
        yield loss, student, teacher, ref_loss, ref_student, ref_teacher


OBJECTIVES = {
    "default": ObjectiveConfig(),
    "symmetric": ObjectiveConfig(symmetric=True),
    "soft-targets": ObjectiveConfig(soft_targets=True),
    "token-dropping": ObjectiveConfig(mask_ratio=0.5),
    "token-dropping-symmetric": ObjectiveConfig(mask_ratio=0.25, symmetric=True),
}


def assert_same_networks(
    student, ref_student, teacher, ref_teacher, where=None, atol: float = 2e-6
) -> None:
    """Gradients to float32 rounding; weights and teacher weights to ``atol``, all of them or
    only ``where`` (name -> bool mask of the elements to compare)."""
    for (key, value), ref in zip(student.named_parameters(), ref_student.parameters(), strict=True):
        if value.requires_grad:
            torch.testing.assert_close(value.grad, ref.grad, rtol=1e-4, atol=1e-7, msg=key)
        mask = where[key] if where else torch.ones_like(value, dtype=torch.bool)
        torch.testing.assert_close(value[mask], ref[mask], rtol=0, atol=atol, msg=key)
    for (key, value), ref in zip(teacher.named_parameters(), ref_teacher.parameters(), strict=True):
        mask = where[key] if where else torch.ones_like(value, dtype=torch.bool)
        torch.testing.assert_close(value[mask], ref[mask], rtol=0, atol=atol, msg=key)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_three_train_steps_equal_the_reference_steps(name):
    losses = []
    for loss, student, teacher, ref_loss, ref_student, ref_teacher in paired_steps(
        OBJECTIVES[name], steps=3
    ):
        assert loss == pytest.approx(ref_loss, rel=2e-6)
        assert_same_networks(student, ref_student, teacher, ref_teacher)
        losses.append(loss)
    assert len(set(losses)) == len(losses)  # the steps changed something


def test_an_adamw_step_equals_the_reference_step():
    """AdamW divides by |g| + 1e-8: where a gradient is not far above 1e-8 the step's size is
    float rounding noise, so weights are compared where |g| > 1e-7 (all but 1 in 1,000), to
    1 % of the head's learning rate (a wrong gradient moves a weight by up to the rate)."""
    [(loss, student, teacher, ref_loss, ref_student, ref_teacher)] = paired_steps(
        ObjectiveConfig(), steps=1, optimizer="adamw"
    )
    assert loss == pytest.approx(ref_loss, rel=2e-6)
    where = {
        key: value.grad.abs() > 1e-7 if value.requires_grad else torch.ones_like(value).bool()
        for key, value in student.named_parameters()
    }
    assert sum(int((~m).sum()) for m in where.values()) < 1e-3 * sum(
        m.numel() for m in where.values()
    )
    assert_same_networks(student, ref_student, teacher, ref_teacher, where, atol=1e-2 * LR_HEAD)


def test_the_reference_with_x_and_y_swapped_does_not_match():
    [(loss, _, _, straight, _, _)] = paired_steps(ObjectiveConfig(), steps=1)
    [(_, _, _, swapped, _, _)] = paired_steps(ObjectiveConfig(), steps=1, swap=True)
    assert loss == pytest.approx(straight, rel=2e-6)
    assert abs(loss - swapped) > 1e-2 * abs(loss)
