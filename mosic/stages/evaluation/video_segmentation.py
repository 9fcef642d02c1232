"""Unsupervised video object segmentation by clustering: the protocol of TimeT
(``evaluation.py`` ``Evaluator.evaluate`` / ``evaluate_localizations``, ``clustering.py``
``cluster_features``).

Annotated frames are resized to ``input_size`` x ``input_size`` (224) and their patch features
standardised and reduced by PCA to 50 dimensions. K-means then runs per unit — one frame
(``"frame"``), one clip (``"clip"``) or all frames of the split (``"dataset"``) — with K the
number of distinct ground-truth ids in the unit, background included, unless ``num_clusters``
fixes it. The features, bilinearly upsampled to ``eval_size`` (224 for frame/clip, 112 for
dataset, as TimeT), are assigned to the nearest centroid; the unit's clusters are matched to its
ground-truth ids (Hungarian, unmatched clusters to the background) and scored by the mIoU over
the ids present in the unit. The score is the mean over frames, over clips, or the one
dataset-wide value.

Memory: frame and clip modes hold one clip's features at a time; dataset mode holds the patch
features of every annotated frame (twice while standardising: 2 x frames x (input_size / p)^2 x
D x 4 bytes, 1.2 GB for DAVIS val's ~2,000 frames with a ViT-S/16 at 224) and their masks at
``eval_size``.

DAVIS's object ids are per video (its 1, 2, ... name different objects in different videos); in
``"dataset"`` mode id j of every video is one class, as in TimeT. YouTube-VOS clips come with
their ids already mapped to meta.json categories (``datasets.ytvos``), as TimeT's loader does
in every mode, so objects of one category are one class (within a unit, and across videos in
``"dataset"`` mode).

K-means is ``faiss.Kmeans`` (50 iterations, 5 restarts, seed 1: TimeT's ``cluster_features``)
unless ``kmeans_backend`` is ``torch``.

Pictures (``visuals``): ceil(N / clips) annotated frames evenly spaced over each clip (the first
frame when one), clip after clip until N, each with its unit's matched ids and raw clusters at
``eval_size``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mosic.stages.evaluation.datasets.base import IGNORE, VideoClip, VideoDataset
from mosic.stages.evaluation.features import DenseFeatures
from mosic.stages.evaluation.kmeans import (
    Backend,
    kmeans,
    kmeans_settings,
    pca,
    standardize,
)
from mosic.stages.evaluation.metrics import (
    Matching,
    cluster_classes,
    confusion_matrix,
    mapped_miou,
)
from mosic.stages.evaluation.overclustering import resize_image, resize_mask
from mosic.stages.evaluation.progress import QUIET, Phases
from mosic.stages.evaluation.visuals import Visual, VisualSink

Mode = Literal["frame", "clip", "dataset"]
# A frame drawn in the pictures: (its position among the unit's frames, name, frame (H, W, 3)
# uint8, mask (H, W) int64).
Shown = tuple[int, str, np.ndarray, np.ndarray]


def _annotated_clips(
    dataset: VideoDataset, features: DenseFeatures, input_size: int, eval_size: int
) -> Iterator[tuple[VideoClip, np.ndarray, torch.Tensor, np.ndarray]]:
    """Per clip with annotated frames: the clip, the indices (T,) of its T annotated frames,
    their patch features (T, h, w, D) float32 and masks (T, eval_size, eval_size) int64."""
    for i in range(len(dataset)):
        clip = dataset[i]
        keep = np.flatnonzero(clip.annotated)
        if keep.size == 0:
            continue
        frames = torch.stack([resize_image(clip.frames[t], input_size) for t in keep])
        patch = features(frames).permute(0, 2, 3, 1).contiguous()
        masks = torch.stack([resize_mask(clip.masks[t], input_size, eval_size) for t in keep])
        yield clip, keep, patch, masks.numpy()


def _shown_frames(clip: VideoClip, keep: np.ndarray, count: int) -> list[Shown]:
    """``count`` of the clip's annotated frames ``keep`` evenly spaced (fewer when it has
    fewer), positioned among the annotated frames."""
    if count <= 0:
        return []
    positions = np.unique(np.linspace(0, len(keep) - 1, count).round().astype(int))
    return [
        (int(p), f"{clip.name}_{keep[p]:05d}", clip.frames[keep[p]], clip.masks[keep[p]])
        for p in positions
    ]


def _reduce(patch: torch.Tensor, dims: int) -> torch.Tensor:
    """(..., D) -> (..., dims): standardised, then PCA over all the given vectors."""
    flat = patch.reshape(-1, patch.shape[-1])
    return pca(standardize(flat), dims).reshape(*patch.shape[:-1], -1)


def _pixel_clusters(reduced: torch.Tensor, centroids: torch.Tensor, size: int) -> np.ndarray:
    """(T, h, w, d) features, (K, d) centroids -> (T, size, size) int64: each pixel's nearest
    centroid after bilinear upsampling of the features.

    The nearest centroid of f maximises f . c - |c|^2 / 2, which is affine in f; bilinear
    upsampling is linear with weights summing to one, so these K scores are upsampled instead of
    the d feature channels: the same argmax (up to float rounding), K / d of the work.
    """
    out = []
    half_norms = centroids.square().sum(1) / 2
    for frame in reduced:
        scores = (frame @ centroids.T - half_norms).permute(2, 0, 1)[None]  # (1, K, h, w)
        up = F.interpolate(scores, size=(size, size), mode="bilinear", align_corners=False)
        out.append(up[0].argmax(0))
    return torch.stack(out).numpy()


def _unit_miou(
    clusters: np.ndarray, gt: np.ndarray, k: int, matching: Matching
) -> tuple[float, np.ndarray]:
    """mIoU of one unit's clusters (T, H, W) against its ids (T, H, W), over the ids present;
    clusters the matching leaves over predict the background (id 0) as in TimeT. Also returns
    the (k,) int64 id each cluster predicts (IGNORE: none, when the unit has no background)."""
    valid = gt != IGNORE
    ids = np.unique(gt[valid])
    compact = np.where(valid, np.searchsorted(ids, gt), IGNORE)
    confusion = confusion_matrix(clusters, compact, k, len(ids))
    background = int(np.searchsorted(ids, 0)) if 0 in ids else -1
    mapping = cluster_classes(confusion, matching, unmatched=background)
    return mapped_miou(confusion, mapping)[0], np.where(mapping >= 0, ids[mapping], IGNORE)


def evaluate_video(
    dataset: VideoDataset,
    features: DenseFeatures,
    mode: Mode = "frame",
    num_clusters: int | None = None,
    input_size: int = 224,
    eval_size: int | None = None,
    pca_dims: int = 50,
    iterations: int = 50,
    restarts: int = 5,
    seed: int = 1,
    matching: Matching = "hungarian",
    visuals: VisualSink | None = None,
    kmeans_backend: Backend = "faiss",
    progress: Phases = QUIET,
) -> dict:
    """Clustering mIoU of ``features`` on the annotated frames of ``dataset``.

    mode: the unit k-means runs on and mIoU is computed over. num_clusters: K per unit (None:
    the number of distinct ground-truth ids in the unit). eval_size: resolution of the scored
    masks (None: ``input_size`` for frame/clip, 112 for dataset). visuals: receives
    ``visuals.count`` annotated frames spread over the clips (see the module's docstring).
    kmeans_backend: ``faiss`` or ``torch``. Returns ``{"mode", "miou", "averaged_over", "clusters",
    "num_clips", "num_frames", "num_units", "eval_size", "kmeans", "timings_s": {"features",
    "pca", "kmeans", "matching"}}``.
    """
    if mode not in ("frame", "clip", "dataset"):
        raise ValueError(f"unknown mode {mode!r}")
    if input_size % features.patch_size:
        raise ValueError(f"input size {input_size} is not a multiple of {features.patch_size}")
    if eval_size is None:
        eval_size = 112 if mode == "dataset" else input_size
    timings = dict.fromkeys(("features", "pca", "kmeans", "matching"), 0.0)
    scores: list[float] = []

    def score(reduced: torch.Tensor, gt: np.ndarray, shown: list[Shown]) -> None:
        """Cluster one unit, (T, h, w, d) features and (T, H, W) ids, record its mIoU and draw
        its ``shown`` frames."""
        if not (gt != IGNORE).any():
            return
        k = num_clusters or len(np.unique(gt[gt != IGNORE]))
        start = time.perf_counter()
        points = reduced.reshape(-1, reduced.shape[-1])
        fit = kmeans(points, k, iterations, restarts, seed, backend=kmeans_backend)
        clusters = _pixel_clusters(reduced, fit.centroids, eval_size)
        timings["kmeans"] += time.perf_counter() - start
        start = time.perf_counter()
        miou, ids = _unit_miou(clusters, gt, k, matching)
        scores.append(miou)
        if visuals is not None:
            for t, name, frame, mask in shown:
                visuals(Visual(name, frame, mask, ids[clusters[t]], clusters[t]))
        timings["matching"] += time.perf_counter() - start

    wanted = visuals.count if visuals is not None else 0
    per_clip = math.ceil(wanted / max(len(dataset), 1))
    num_clips = num_frames = 0
    kept: list[tuple[torch.Tensor, np.ndarray]] = []
    kept_shown: list[Shown] = []
    clips = _annotated_clips(dataset, features, input_size, eval_size)
    with progress.phase(
        "features" if mode == "dataset" else f"features + {mode}-wise k-means",
        len(dataset),
        "clips",
    ) as advance:
        while True:
            start = time.perf_counter()
            item = next(clips, None)
            timings["features"] += time.perf_counter() - start
            if item is None:
                break
            advance(1)
            clip, keep, patch, gt = item
            shown = _shown_frames(clip, keep, per_clip)[:wanted]
            wanted -= len(shown)
            num_clips += 1
            num_frames += len(gt)
            if mode == "dataset":
                offset = num_frames - len(gt)
                kept.append((patch, gt))
                kept_shown += [(offset + t, *rest) for t, *rest in shown]
                continue
            start = time.perf_counter()
            reduced = _reduce(patch, pca_dims)
            timings["pca"] += time.perf_counter() - start
            if mode == "clip":
                score(reduced, gt, shown)
            else:
                for t in range(len(gt)):
                    here = [(0, *rest) for s, *rest in shown if s == t]
                    score(reduced[t : t + 1], gt[t : t + 1], here)
    if mode == "dataset" and kept:
        start = time.perf_counter()
        with progress.phase(f"standardise + PCA to {pca_dims} ({num_frames:,} frames)"):
            patch, gt = torch.cat([p for p, _ in kept]), np.concatenate([g for _, g in kept])
            kept.clear()
            reduced = _reduce(patch, pca_dims)
            del patch
        timings["pca"] += time.perf_counter() - start
        label = f"k-means ({kmeans_backend}) and matching over {num_frames:,} frames"
        with progress.phase(label):
            score(reduced, gt, kept_shown)
    return {
        "mode": mode,
        "miou": float(np.mean(scores)) if scores else float("nan"),
        "averaged_over": f"ids present in each {mode} (TimeT), then over the {mode}s",
        "clusters": num_clusters or "the unit's number of ground-truth ids",
        "num_clips": num_clips,
        "num_frames": num_frames,
        "num_units": len(scores),
        "eval_size": eval_size,
        "kmeans": kmeans_settings(kmeans_backend, iterations, restarts, [seed]),
        "timings_s": timings,
    }
