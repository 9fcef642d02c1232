"""How far the trajectory benchmark's video column can move, and whether its categories can be
learnt at all (docs/reproduce.md, "Why the video column does not move").

On the benchmark's data (``configs/mini``'s ``generate:``; ``--data-seed`` picks other videos,
``--train-videos`` more of them) this scores, with the video column's own evaluation (dataset-
level k-means, K = 4, categories, ``input_size`` 128):

- labelling every pixel background (the answer a column blind to objects gets for free);
- features that carry the categories: each patch's fraction of each category (the ground truth,
  plus noise of std 0.01), the column's ceiling at this patch grid;
- the benchmark's backbone as built (random initialisation, or ``--start`` weights);
- that backbone trained on the category labels themselves (a linear head on its patch tokens,
  cross-entropy on each patch's majority label, every 2nd frame of the training videos,
  horizontal flips; ``--seeds`` runs), with its own head's accuracy at telling the 3 categories
  apart on the object patches of the held-out videos, against chance (1 / 3).

A design in which MoSiC could move the column needs the last row well above chance and the video
column of the trained backbone well above the all-background answer. Prints a table and writes
``<out>/trajbench_headroom.json``. About 2 minutes on one core with the defaults (3 seeds of the
label training).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mosic.pipeline.reproduce_config import load_rows
from mosic.pipeline.trajbench import drift_video
from mosic.stages.drift_layers import CATEGORIES
from mosic.stages.evaluation.datasets import open_dataset
from mosic.stages.evaluation.features import DenseFeatures
from mosic.stages.evaluation.overclustering import resize_image, resize_mask
from mosic.stages.evaluation.video_segmentation import evaluate_video
from mosic.stages.model.backbone import create_backbone, patch_tokens
from mosic.stages.objective import normalize_frames
from mosic.stages.synthetic_datasets import write_davis

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mini" / "a-start.yaml"
SIZE = 128  # the column's input size (configs/mini)
DATASET_EVAL_SIZE = 112  # the masks the dataset-level video column scores (evaluate_video)
CLASSES = len(CATEGORIES)


def patch_fractions(masks: np.ndarray, patch: int) -> torch.Tensor:
    """Category masks (N, H, W) -> (N, CLASSES, SIZE / patch, SIZE / patch) float32: each
    patch's fraction of each category after the evaluation's resize to SIZE."""
    labels = torch.stack([resize_mask(m, SIZE, SIZE) for m in masks])
    if labels.min() < 0 or labels.max() >= CLASSES:
        raise ValueError(f"masks hold ids outside 0..{CLASSES - 1} (ignored pixels?)")
    onehot = F.one_hot(labels, CLASSES).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(onehot, patch)


class GroundTruthFeatures:
    """``DenseFeatures``' interface over known frames: a frame's features are its patches'
    category fractions (plus noise), found by the frame's bytes."""

    def __init__(self, frames: np.ndarray, masks: np.ndarray, patch: int, noise: float = 0.01):
        self.patch_size, self.dim, self.noise = patch, CLASSES, noise
        fractions = patch_fractions(masks, patch)
        keys = [resize_image(f, SIZE).numpy().tobytes() for f in frames]
        self.table = dict(zip(keys, fractions, strict=True))
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, SIZE, SIZE, 3) uint8 -> (B, CLASSES, SIZE / p, SIZE / p)."""
        out = torch.stack([self.table[np.asarray(im).tobytes()] for im in images])
        return out + self.noise * torch.randn(out.shape, generator=self.generator)


def annotated(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every annotated frame of a video dataset: frames (N, H, W, 3) uint8, masks (N, H, W)."""
    clips = [dataset[i] for i in range(len(dataset))]
    keep = [np.flatnonzero(c.annotated) for c in clips]
    frames = np.concatenate([np.asarray(c.frames)[k] for c, k in zip(clips, keep, strict=True)])
    masks = np.concatenate([np.asarray(c.masks)[k] for c, k in zip(clips, keep, strict=True)])
    return frames, masks


def resized(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, SIZE, SIZE) uint8, resized as the evaluation resizes."""
    return torch.stack([resize_image(f, SIZE) for f in frames]).permute(0, 3, 1, 2)


def patch_labels(masks: np.ndarray, patch: int, chunk: int = 256) -> torch.Tensor:
    """(N, H, W) category masks -> (N, SIZE / patch, SIZE / patch) int64 majority labels."""
    parts = [patch_fractions(masks[i : i + chunk], patch) for i in range(0, len(masks), chunk)]
    return torch.cat([p.argmax(1) for p in parts])


def train_on_labels(
    backbone: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int
) -> tuple[nn.Module, nn.Linear, float]:
    """Every parameter of ``backbone`` and a linear head trained on (N, 3, SIZE, SIZE) uint8
    images and their (N, h, w) patch labels; returns both and the last 50 steps' mean loss."""
    head = nn.Linear(backbone.num_features, CLASSES)
    params = [*backbone.parameters(), *head.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    backbone.train()
    losses = []
    for _ in range(steps):
        pick = torch.randint(len(images), (16,), generator=generator)
        xb, yb = normalize_frames(images[pick]), labels[pick]
        if torch.rand(1, generator=generator) < 0.5:
            xb, yb = xb.flip(-1), yb.flip(-1)
        logits = head(patch_tokens(backbone, xb).permute(0, 2, 3, 1))
        loss = F.cross_entropy(logits.reshape(-1, CLASSES), yb.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return backbone.eval(), head, float(np.mean(losses[-50:]))


@torch.inference_mode()
def category_accuracy(backbone: nn.Module, head: nn.Linear, frames, masks) -> float:
    """On the patches whose majority label is an object: how often the head's highest-scoring
    category (background left out, so chance is 1 / 3) is the patch's category."""
    y = patch_labels(masks, backbone.patch_embed.patch_size[0])
    logits = head(patch_tokens(backbone, normalize_frames(resized(frames))).permute(0, 2, 3, 1))
    pred = logits[..., 1:].argmax(-1) + 1
    on_objects = y > 0
    return float((pred[on_objects] == y[on_objects]).float().mean())


def all_background(masks: np.ndarray) -> float:
    """mIoU over the ids present when every pixel is called background: the background's IoU
    is its share of the pixels, every other id's 0 (at the masks the dataset-level column
    scores)."""
    scored = torch.stack([resize_mask(m, SIZE, DATASET_EVAL_SIZE) for m in masks]).numpy()
    return float((scored == 0).mean() / len(np.unique(scored)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-seed", type=int, default=None, help="default: the configs'")
    parser.add_argument("--train-videos", type=int, default=None, help="default: the configs'")
    parser.add_argument("--steps", type=int, default=800, help="training on the labels")
    parser.add_argument("--seeds", type=int, default=3, help="training runs on the labels")
    parser.add_argument("--start", type=Path, default=None, help="start weights (default: random)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    spec = load_rows([CONFIG])[0].generate
    given = {"data_seed": args.data_seed, "train_videos": args.train_videos}
    spec = replace(spec, **{k: v for k, v in given.items() if v is not None})
    started = time.perf_counter()
    patch = create_backbone("vit-tiny-test").patch_embed.patch_size[0]
    images, labels = [], []  # every 2nd frame of each training video, kept small
    for i in range(spec.train_videos):
        video = drift_video(spec, "train", i)
        images.append(resized(video.frames[::2]))
        labels.append(patch_labels(video.masks[::2], patch))
    images, labels = torch.cat(images), torch.cat(labels)
    held = [
        drift_video(spec, "held-out", i).every(spec.davis_every) for i in range(spec.davis_videos)
    ]
    render_s = time.perf_counter() - started

    def backbone() -> nn.Module:
        weights = str(args.start) if args.start else None
        return create_backbone("vit-tiny-test", weights=weights, img_size=SIZE)

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_davis(held, tmp, [f"scene{i:03d}" for i in range(len(held))])
        dataset = open_dataset("davis", tmp, "val")
        frames, masks = annotated(dataset)  # as the column reads them (JPEG frames)

        def column(features) -> float:
            return evaluate_video(dataset, features, mode="dataset", input_size=SIZE)["miou"]

        rows["all background"] = {"video": all_background(masks)}
        rows["ground-truth features"] = {"video": column(GroundTruthFeatures(frames, masks, patch))}
        name = "start model" if args.start else "backbone, random initialisation"
        rows[name] = {"video": column(DenseFeatures(backbone()))}
        for seed in range(args.seeds):
            started = time.perf_counter()
            torch.manual_seed(seed)  # the head's initialisation
            model, head, loss = train_on_labels(backbone(), images, labels, args.steps, seed)
            rows[f"{name}, trained on the labels, seed {seed}"] = {
                "video": column(DenseFeatures(model)),
                "held_out_category_accuracy": category_accuracy(model, head, frames, masks),
                "chance": 1 / (CLASSES - 1),
                "train_loss": loss,
                "train_s": time.perf_counter() - started,
            }

    baseline = rows["all background"]["video"]
    print(
        f"data seed {spec.data_seed}: {spec.train_videos} training videos, {len(held)} held-out "
        f"({len(frames)} annotated frames); rendering {render_s:.0f} s"
    )
    width = max(map(len, rows))
    print(f"{'':{width}s} {'video':>7s} {'/ all bg':>9s} {'category acc':>13s} {'/ chance':>9s}")
    for label, row in rows.items():
        line = f"{label:{width}s} {100 * row['video']:7.1f} {row['video'] / baseline:9.2f}"
        if "held_out_category_accuracy" in row:
            accuracy = row["held_out_category_accuracy"]
            line += f" {100 * accuracy:13.1f} {accuracy / row['chance']:9.2f}"
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"data_seed": spec.data_seed, "train_videos": spec.train_videos, "steps": args.steps,
              "start": str(args.start) if args.start else None, "rows": rows}  # fmt: skip
    (args.out / "trajbench_headroom.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
