"""Teacher targets under bf16 autocast: the share of arg-max targets that differ from fp32's.

Runs the teacher of a ViT-S/14 (random weights, or ``--weights``) on generated clips (12
frames at 224 px, a 16 x 16 grid of tracks per clip), then Sinkhorn-Knopp and the arg-max,
three ways: all in float32 (the reference); under bf16 autocast with the cosine scores computed
inside autocast, i.e. rounded to bf16 before Sinkhorn (mosic before this benchmark); and under
bf16 autocast with mosic's float32 scores and Sinkhorn. Twice: with the random prototypes a
run starts from, and with prototypes set on the teacher's own embeddings (as after training,
where scores come near 1 and bf16's steps of 2^-8 there matter most). Prints a table and
writes ``<out>/teacher_precision.json``. CPU or GPU (``--device``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mosic.pipeline.train_config import TrainConfig
from mosic.pipeline.train_step import build_student
from mosic.stages.losses.sinkhorn import SinkhornKnopp
from mosic.stages.model.backbone import patch_tokens
from mosic.stages.model.sampling import sample_features
from mosic.stages.objective import normalize_frames
from mosic.stages.queries import grid_points
from mosic.stages.synthetic import make_video

SIZE, FRAMES, GRID = 224, 12, 16


def clips(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated clips: images (count * F, 3, S, S) normalised, points (count * F, N, 2)."""
    frames = np.stack(
        [
            make_video(seed, num_frames=FRAMES, height=SIZE, width=SIZE).frames
            for seed in range(count)
        ]
    )
    images = normalize_frames(torch.from_numpy(frames).permute(0, 1, 4, 2, 3).flatten(0, 1))
    points = torch.from_numpy(grid_points(SIZE, SIZE, GRID)).expand(len(images), -1, -1)
    return images, points.contiguous()


def embeddings(network, images, points, bf16: bool) -> torch.Tensor:
    """Head outputs (P, 256) at the points, under bf16 autocast or not (float32 out)."""
    context = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.no_grad(), context:
        features = patch_tokens(network.backbone, images)
        sampled = sample_features(features, points, images.shape[-2:], network.sampling)
        return network.head(sampled).flatten(0, 1)


def targets(scores: torch.Tensor, sinkhorn: SinkhornKnopp) -> torch.Tensor:
    return sinkhorn(scores).argmax(dim=1)


def measure(network, images, points, sinkhorn) -> dict:
    """Share of targets that differ from fp32's: bf16 scores (before) and fp32 scores (after)."""
    prototypes = network.prototypes
    exact = targets(prototypes(embeddings(network, images, points, bf16=False)), sinkhorn)
    low = embeddings(network, images, points, bf16=True)
    with torch.no_grad(), torch.autocast(images.device.type, dtype=torch.bfloat16):
        rounded = F.normalize(low, dim=-1) @ prototypes.weight.t()  # the old in-autocast scores
        before = targets(rounded, sinkhorn)
        after = targets(prototypes(low), sinkhorn)  # float32 scores (mosic)
    return {
        "points": len(exact),
        "bf16_scores_changed": float((before != exact).float().mean()),
        "fp32_scores_changed": float((after != exact).float().mean()),
        "max_score": float(prototypes(low).detach().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--backbone", default="dinov2-s14")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = TrainConfig(stores=("unused",), backbone=args.backbone, weights=args.weights)
    network = build_student(cfg).to(args.device).eval()
    images, points = (t.to(args.device) for t in clips(args.clips))
    sinkhorn = SinkhornKnopp(cfg.objective.sinkhorn_epsilon, cfg.objective.sinkhorn_iterations)
    rows = {"random prototypes": measure(network, images, points, sinkhorn)}
    with torch.no_grad():  # prototypes on K of the teacher's own embeddings, as after training
        own = embeddings(network, images, points, bf16=False)
        chosen = torch.randperm(len(own), generator=torch.Generator().manual_seed(0))
        network.prototypes.weight.copy_(F.normalize(own[chosen[: cfg.prototypes]], dim=1))
    rows["prototypes on the embeddings"] = measure(network, images, points, sinkhorn)

    print(
        f"teacher targets, bf16 autocast against fp32: {args.backbone} "
        f"({'random weights' if not args.weights else args.weights}), {args.clips} clips x "
        f"{FRAMES} frames at {SIZE} px, {GRID * GRID} points each, on {args.device}"
    )
    for name, r in rows.items():
        print(
            f"  {name:<30} targets changed: bf16 scores {100 * r['bf16_scores_changed']:5.2f} %"
            f", fp32 scores {100 * r['fp32_scores_changed']:5.2f} %  (max score "
            f"{r['max_score']:.3f}, {r['points']} points)"
        )
    (args.out / "teacher_precision.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
