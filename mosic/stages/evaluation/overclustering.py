"""Overclustering: k-means of frozen patch features, scored by mIoU after matching clusters to
classes — the protocol of NeCo / Leopart (``experiments/overcluster/eval_overcluster.py``).

Every image is resized (not cropped) to ``input_size`` x ``input_size`` (448), its mask with
nearest neighbours to the same size and then to ``mask_size`` x ``mask_size`` (100). The patch
features of the whole split are standardised, reduced by PCA to 50 dimensions and clustered with
k-means for every K and seed; the (input_size / p)^2 cluster maps are upsampled (nearest) to the
mask size, matched to the classes (Hungarian when K equals the number of classes, many-to-one
otherwise) and scored by mIoU over the non-ignored pixels of the whole split.

Memory: the patch features of all images are held at once, twice while they are standardised:
about 2 x N x (input_size / p)^2 x D x 4 bytes, e.g. 4.6 GB for VOC val (1,449 images) with a
ViT-S/14 (D = 384) at 448, 9 GB with a ViT-B. After PCA only N x (input_size / p)^2 x 50 floats
remain (0.3 GB for VOC).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mosic.stages.evaluation.datasets.base import SegmentationDataset, SegmentationSample
from mosic.stages.evaluation.features import DenseFeatures
from mosic.stages.evaluation.kmeans import Backend, kmeans, kmeans_settings, pca, standardize
from mosic.stages.evaluation.mask_resize import pil_nearest
from mosic.stages.evaluation.metrics import (
    cluster_classes,
    confusion_matrix,
    field_miou,
    mapped_miou,
    miou_fields,
)
from mosic.stages.evaluation.progress import QUIET, Phases
from mosic.stages.evaluation.visuals import Visual, VisualSink

DEFAULT_OVERCLUSTER_KS = (100, 300, 500)  # evaluated after K = num_classes


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, bilinear with antialiasing (as PIL's resize
    behind torchvision's ``Resize``)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)


def resize_mask(mask: np.ndarray, size: int, eval_size: int) -> torch.Tensor:
    """(H, W) int64 -> (eval_size, eval_size) int64: nearest neighbours to ``size`` as PIL does
    (``mask_resize.pil_nearest``), then to ``eval_size`` with torch's ``nearest``, as the
    references do; ``IGNORE`` survives as a value."""
    x = pil_nearest(torch.from_numpy(np.asarray(mask, dtype=np.int64)), size)
    if eval_size != size:
        x = F.interpolate(x[None, None].float(), size=(eval_size, eval_size), mode="nearest")[0, 0]
    return x.long()


def upsample_labels(labels: torch.Tensor, size: int) -> torch.Tensor:
    """(N, h, w) int64 cluster maps -> (N, size, size) int64, nearest."""
    up = F.interpolate(labels[:, None].float(), size=(size, size), mode="nearest")
    return up[:, 0].long()


def evaluate_overclustering(
    dataset: SegmentationDataset,
    features: DenseFeatures,
    ks: Sequence[int] | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    input_size: int = 448,
    mask_size: int = 100,
    pca_dims: int = 50,
    iterations: int = 100,
    restarts: int = 5,
    device: str | torch.device = "cpu",
    visuals: VisualSink | None = None,
    kmeans_backend: Backend = "faiss",
    progress: Phases = QUIET,
) -> dict:
    """Overclustering mIoU of ``features`` on ``dataset``.

    ks: the cluster counts, default (num_classes, 100, 300, 500); seeds: one k-means (with
    ``restarts`` restarts) per seed; device: where the torch k-means runs. kmeans_backend:
    ``faiss`` (the reference's ``faiss.Kmeans``) or ``torch``. visuals: receives the first
    ``visuals.count`` images with the clusters of the first K and seed (raw at the patch grid,
    and matched to classes at mask_size x mask_size; clusters the Hungarian matching leaves
    unmatched go to the background, class 0).
    Returns ``{"k": {K: {"miou", "std", "per_seed", "miou_present_classes",
    "classes_averaged", "classes_present"}}, "kmeans": settings, "timings_s": {"features",
    "pca", "kmeans": {K: s}, "matching": {K: s}}, "num_images"}``; miou is the field's figure
    (``metrics.field_miou``) averaged over seeds, std their population standard deviation.
    """
    num_classes = dataset.num_classes
    ks = tuple(ks) if ks is not None else (num_classes, *DEFAULT_OVERCLUSTER_KS)
    if input_size % features.patch_size:
        raise ValueError(f"input size {input_size} is not a multiple of {features.patch_size}")
    side = input_size // features.patch_size
    n = len(dataset)
    timings: dict = {"kmeans": {}, "matching": {}}
    shown: list[SegmentationSample] = []  # the images drawn in the pictures

    start = time.perf_counter()
    patch = torch.empty(n * side * side, features.dim)
    masks = torch.empty(n, mask_size, mask_size, dtype=torch.int64)
    with progress.phase("features", n, "images") as advance:
        for first in range(0, n, features.batch):
            samples = [dataset[i] for i in range(first, min(first + features.batch, n))]
            images = torch.stack([resize_image(s.image, input_size) for s in samples])
            out = features(images).permute(0, 2, 3, 1).reshape(-1, features.dim)
            patch[first * side * side : first * side * side + len(out)] = out
            for j, sample in enumerate(samples):
                masks[first + j] = resize_mask(sample.mask, input_size, mask_size)
                if visuals is not None and first + j < visuals.count:
                    shown.append(sample)
            advance(len(samples))
    timings["features"] = time.perf_counter() - start

    start = time.perf_counter()
    with progress.phase(f"standardise + PCA to {pca_dims} ({len(patch):,} patches)"):
        reduced = pca(standardize(patch), pca_dims).to(device)
    del patch
    timings["pca"] = time.perf_counter() - start

    gt = masks.numpy()
    results = {}
    label = f"k-means ({kmeans_backend}), K = {', '.join(map(str, ks))}"
    with progress.phase(label, len(ks) * len(seeds), "fits") as advance:
        for k in ks:
            matching = "hungarian" if k == num_classes else "many_to_one"
            scores, present = [], []
            timings["kmeans"][k] = timings["matching"][k] = 0.0
            for seed in seeds:
                start = time.perf_counter()
                fit = kmeans(reduced, k, iterations, restarts, seed, backend=kmeans_backend)
                labels = fit.labels.cpu()
                timings["kmeans"][k] += time.perf_counter() - start
                start = time.perf_counter()
                grid = labels.view(n, side, side)
                clusters = upsample_labels(grid, mask_size).numpy()
                confusion = confusion_matrix(clusters, gt, k, num_classes)
                mapping = cluster_classes(confusion, matching)
                per_class = mapped_miou(confusion, mapping)[1]
                scores.append(field_miou(per_class))
                present.append(miou_fields(per_class))
                if visuals is not None and (k, seed) == (ks[0], seeds[0]):
                    for i, sample in enumerate(shown):
                        pred, raw = mapping[clusters[i]], grid[i].numpy()
                        visuals(Visual(sample.name, sample.image, sample.mask, pred, raw))
                timings["matching"][k] += time.perf_counter() - start
                advance(1)
            results[k] = {
                "miou": float(np.mean(scores)),
                "std": float(np.std(scores)),
                "per_seed": [float(s) for s in scores],
                "miou_present_classes": float(
                    np.mean([p["miou_present_classes"] for p in present])
                ),
                "classes_averaged": num_classes,
                "classes_present": present[0]["classes_present"],
            }
    settings = kmeans_settings(kmeans_backend, iterations, restarts, list(seeds))
    return {"k": results, "kmeans": settings, "timings_s": timings, "num_images": n}
