"""Hummingbird in-context scene understanding (dense nearest-neighbour retrieval).

Follows vpariza/open-hummingbird-eval (``hbird/hbird_eval.py``, ``HbirdEvaluation``;
``hbird/utils/transforms.py``): every training image is colour-jittered (brightness, contrast,
saturation, hue 0.1, each with probability 0.5), random-resized-cropped to ``input_size``
(scale (0.5, 2.0), ratio (3/4, 4/3); a draw larger than the image is redrawn, as torchvision
does) ``aug_epochs`` times; of each view ``memory_size // (len(train) * aug_epochs)`` patches
enter the memory bank, the ones with the lowest (rare-class score x uniform random factor),
where a patch's rare-class score is the summed number of the image's patches that contain each
class the patch contains. A patch is stored as its L2-normalised feature and its label: the
class histogram of its pixels (the fraction of its p x p pixels in each class; ignored pixels
count as class 0, as the reference turns VOC's 255 into 0). Each
validation image is resized to ``input_size``; each of its patches takes the softmax over
(cosine similarity / temperature) of its ``k`` nearest bank patches as weights of their labels;
the (C, h, w) label maps are bilinearly upsampled to ``input_size``, argmaxed, and scored
against the mask (nearest-resized to ``input_size``) with Hungarian matching and mIoU.

The image/mask transforms here (``crop_box``, ``resized_crop``, ``resize``, ``ViewDataset``)
are shared with the linear protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset

from mosic.stages.data import augment
from mosic.stages.evaluation.datasets.base import IGNORE, SegmentationDataset, SegmentationSample
from mosic.stages.evaluation.features import DenseFeatures
from mosic.stages.evaluation.kmeans import cluster_map
from mosic.stages.evaluation.knn import knn
from mosic.stages.evaluation.mask_resize import pil_nearest
from mosic.stages.evaluation.metrics import confusion_matrix, confusion_miou, miou_fields
from mosic.stages.evaluation.progress import QUIET, Advance, Phases
from mosic.stages.evaluation.visuals import Visual, VisualSink

View = Callable[[SegmentationSample, np.random.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class HummingbirdConfig:
    """Hummingbird settings; the defaults are the reference README's (2 augmentation epochs, a
    1024 * 10^4-patch memory, 512 px for patch 16; use 504 for patch 14: ``input_size`` must be
    a multiple of the patch size).

    ``memory_size``: bank rows in all (None: every patch of every view). ``bank_dtype``: the
    bank's storage (float16 halves the reference's float32; its rounding, ~5e-4 relative, moves
    a cosine by well under the 0.02 temperature). ``device``: where the bank and the search live
    (None: the features' device). ``query_chunk``/``bank_chunk``: ``knn``'s working blocks.
    ``workers``: DataLoader processes for reading and augmenting images. ``ignored_label``: the
    class ignored pixels of the training views count as in the bank's labels (0, as the
    reference's ``_create_memory`` turns VOC's 255 into 0 and keeps ADE20K's "other", 0; None:
    in no class). Ignored pixels of the validation images are never scored.
    """

    input_size: int = 512
    memory_size: int | None = 10_240_000
    aug_epochs: int = 2
    k: int = 30
    temperature: float = 0.02
    batch: int = 64
    seed: int = 0
    crop_scale: tuple[float, float] = (0.5, 2.0)
    jitter: float = 0.1
    jitter_p: float = 0.5
    bank_dtype: torch.dtype = torch.float16
    device: str | None = None
    query_chunk: int = 4096
    bank_chunk: int = 65536
    workers: int = 0
    ignored_label: int | None = 0


def evaluate_hummingbird(
    train: SegmentationDataset,
    val: SegmentationDataset,
    features: DenseFeatures,
    config: HummingbirdConfig,
    visuals: VisualSink | None = None,
    progress: Phases = QUIET,
) -> dict:
    """Build the memory bank from ``train``, label ``val`` by retrieval, score it.

    Returns ``metrics.miou_fields`` (``miou``, the field's figure over all classes;
    ``miou_present_classes``; ``per_class_iou``, NaN for classes absent from val), ``bank_size``
    (rows), ``bank_bytes`` (features + labels), ``patches_per_view``, and the wall seconds of
    ``build_bank_s`` (augment, extract, sample), ``val_features_s``, ``retrieve_s`` (search and
    label transfer) and ``score_s`` (upsample, argmax, confusion, matching).
    ``visuals``: receives the first ``visuals.count`` validation images with their transferred
    labels (input_size x input_size argmax, before the Hungarian matching of the score).
    """
    if config.input_size % features.patch_size:
        raise ValueError(f"input_size {config.input_size} not a multiple of {features.patch_size}")
    device = torch.device(config.device) if config.device else features.device
    t0 = time.perf_counter()
    views = len(train) * config.aug_epochs
    with progress.phase("memory bank", views, "views") as advance:
        bank, labels, per_view = build_memory(train, features, config, device, advance)
    t1 = time.perf_counter()
    with progress.phase("label transfer", len(val), "images") as advance:
        confusion, times = _label_val(val, features, bank, labels, config, visuals, advance)
    t2 = time.perf_counter()
    per_class = confusion_miou(confusion, "hungarian")[1]
    return {
        **miou_fields(per_class),
        "bank_size": len(bank),
        "bank_bytes": bank.nbytes + labels.nbytes,
        "patches_per_view": per_view,
        "build_bank_s": t1 - t0,
        "val_features_s": times["features"],
        "retrieve_s": times["retrieve"],
        "score_s": times["score"] + time.perf_counter() - t2,
    }


def build_memory(
    train: SegmentationDataset,
    features: DenseFeatures,
    config: HummingbirdConfig,
    device: torch.device,
    advance: Advance = lambda n: None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The memory bank: features (M, D) L2-normalised and labels (M, C) class histograms, both
    ``config.bank_dtype`` on ``device``, and the number of patches kept per view;
    ``advance(n)`` after every batch of n views."""
    grid = config.input_size // features.patch_size
    n_patches = grid * grid
    views = len(train) * config.aug_epochs
    if config.memory_size is None:
        per_view = n_patches
    else:
        per_view = min(config.memory_size // views, n_patches)
        if per_view == 0:
            raise ValueError(f"memory_size {config.memory_size} < {views} training views")
    num_classes = train.num_classes
    bank = torch.empty((views * per_view, features.dim), dtype=config.bank_dtype, device=device)
    labels = torch.empty((views * per_view, num_classes), dtype=config.bank_dtype, device=device)
    view = partial(
        train_view,
        size=config.input_size,
        scale=config.crop_scale,
        jitter=config.jitter,
        jitter_p=config.jitter_p,
    )
    generator = torch.Generator().manual_seed(config.seed)
    row = 0
    for epoch in range(config.aug_epochs):
        data = ViewDataset(train, view, config.seed, epoch, range(len(train)))
        for images, masks in view_loader(data, config.batch, config.workers, drop_last=False):
            feats = features(images)  # (B, D, g, g)
            if feats.shape[2:] != (grid, grid):
                raise ValueError(f"features of {tuple(feats.shape)}, expected a {grid}^2 grid")
            feats = feats.flatten(2).transpose(1, 2).to(device)  # (B, N, D)
            if config.ignored_label is not None:
                masks = masks.masked_fill(masks == IGNORE, config.ignored_label)
            hist = patch_histograms(masks, features.patch_size, num_classes).to(device)
            if per_view < n_patches:
                keep = sample_patches(hist, per_view, generator).to(device)  # (B, per_view)
                feats = feats.gather(1, keep[..., None].expand(-1, -1, feats.shape[2]))
                hist = hist.gather(1, keep[..., None].expand(-1, -1, num_classes))
            n = feats.shape[0] * per_view
            bank[row : row + n] = F.normalize(feats.flatten(0, 1), dim=1).to(bank.dtype)
            labels[row : row + n] = hist.flatten(0, 1).to(labels.dtype)
            row += n
            advance(len(images))
    return bank, labels, per_view


def patch_histograms(masks: torch.Tensor, patch: int, num_classes: int) -> torch.Tensor:
    """Class histogram of the pixels under each patch.

    masks: (B, H, W) int64 class ids or IGNORE (-1), H and W multiples of ``patch`` ->
    (B, H/p * W/p, C) float32, row-major patches; each row is the fraction of the patch's p * p
    pixels in each class (IGNORE pixels count in no class, so a row sums to the valid fraction).
    """
    b, h, w = masks.shape
    gh, gw = h // patch, w // patch
    ys = torch.arange(h) // patch
    xs = torch.arange(w) // patch
    cell = (ys[:, None] * gw + xs[None, :]).expand(b, h, w)
    cell = cell + (torch.arange(b) * gh * gw)[:, None, None]
    index = cell * (num_classes + 1) + (masks + 1)  # bin 0 of each patch: IGNORE
    counts = torch.bincount(index.flatten(), minlength=b * gh * gw * (num_classes + 1))
    counts = counts.view(b, gh * gw, num_classes + 1)[..., 1:]
    return counts.float() / (patch * patch)


def sample_patches(hist: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """The reference's rare-class sampling of ``n`` patches per image.

    hist: (B, N, C) patch class histograms -> (B, n) int64 patch indices: the ``n`` lowest
    scores, score = (sum over the patch's classes of the number of the image's patches holding
    that class) x U(0, 1); a patch with no labelled pixel scores 1e6 (taken last).
    """
    present = (hist > 0).float()
    frequency = present.sum(1)  # (B, C) patches per class
    score = torch.einsum("bnc,bc->bn", present, frequency)
    score = score * torch.rand(score.shape, generator=generator).to(score.device)
    score = torch.where(present.sum(2) > 0, score, torch.full_like(score, 1e6))
    return score.topk(n, dim=1, largest=False).indices


def _label_val(
    val: SegmentationDataset,
    features: DenseFeatures,
    bank: torch.Tensor,
    labels: torch.Tensor,
    config: HummingbirdConfig,
    visuals: VisualSink | None = None,
    advance: Advance = lambda n: None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Retrieval labels of every validation image, scored: the (C, C) confusion of predicted
    against true classes and the seconds spent in features / retrieve / score; the first
    ``visuals.count`` images and their labels go to ``visuals``; ``advance(n)`` after every
    batch of n images."""
    num_classes = labels.shape[1]
    grid = config.input_size // features.patch_size
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    times = {"features": 0.0, "retrieve": 0.0, "score": 0.0}
    view = partial(val_view, size=config.input_size)
    data = ViewDataset(val, view, config.seed, 0, range(len(val)))
    seen = 0
    for images, masks in view_loader(data, config.batch, config.workers, drop_last=False):
        t0 = time.perf_counter()
        maps = features(images)  # (B, D, g, g)
        feats = maps.flatten(2).transpose(1, 2).flatten(0, 1)  # (B * N, D)
        t1 = time.perf_counter()
        probs = label_transfer(F.normalize(feats.to(bank.device), dim=1), bank, labels, config)
        probs = probs.view(len(images), grid, grid, num_classes).permute(0, 3, 1, 2)
        t2 = time.perf_counter()
        for prob, mask, patches in zip(probs, masks, maps, strict=True):
            up = F.interpolate(prob[None], size=mask.shape, mode="bilinear")
            pred = up[0].argmax(0).cpu().numpy()
            confusion += confusion_matrix(pred, mask.numpy(), num_classes, num_classes)
            if visuals is not None and seen < visuals.count:
                sample = val[seen]
                visuals(Visual(sample.name, sample.image, sample.mask, pred, cluster_map(patches)))
            seen += 1
        t3 = time.perf_counter()
        times["features"] += t1 - t0
        times["retrieve"] += t2 - t1
        times["score"] += t3 - t2
        advance(len(images))
    return confusion, times


def label_transfer(
    queries: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, config: HummingbirdConfig
) -> torch.Tensor:
    """Soft labels of L2-normalised queries (Q, D) from their ``k`` nearest bank rows ->
    (Q, C) float32: sum over neighbours of softmax(cosine / temperature) x neighbour label."""
    scores, indices = knn(queries, bank, config.k, config.query_chunk, config.bank_chunk)
    out = torch.empty((len(queries), labels.shape[1]), device=bank.device)
    for s in range(0, len(queries), config.query_chunk):
        weights = torch.softmax(scores[s : s + config.query_chunk] / config.temperature, dim=1)
        neighbour_labels = labels[indices[s : s + config.query_chunk]].float()  # (q, k, C)
        out[s : s + config.query_chunk] = torch.einsum("qk,qkc->qc", weights, neighbour_labels)
    return out


# Image/mask views, shared with the linear protocol. -------------------------------------------


def crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    rng: np.random.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` with a numpy generator, as (top, left,
    height, width) (``mosic.stages.data.augment.crop_box`` in torchvision's order)."""
    left, top, w, h = augment.crop_box(height, width, scale, ratio, rng)
    return top, left, h, w


def resized_crop(
    image: torch.Tensor, mask: torch.Tensor, box: tuple[int, int, int, int], size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``box`` (top, left, height, width; inside the image) of image (3, H, W) uint8 and
    mask (H, W) int64 and resize to size x size: the image bilinear with antialiasing, the mask
    with PIL's nearest neighbours (as the references, on PIL images)."""
    image = TF.resized_crop(image, *box, [size, size], antialias=True)
    return image, pil_nearest(mask, size, box)


def resize(image: torch.Tensor, mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``resized_crop`` of the whole image."""
    return resized_crop(image, mask, (0, 0, image.shape[1], image.shape[2]), size)


def as_tensors(sample: SegmentationSample) -> tuple[torch.Tensor, torch.Tensor]:
    """image (3, H, W) uint8 and mask (H, W) int64 tensors of a sample."""
    image = torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1)
    return image, torch.from_numpy(np.asarray(sample.mask, dtype=np.int64))


def color_jitter(
    image: torch.Tensor, strength: float, p: float, rng: np.random.Generator
) -> torch.Tensor:
    """The reference's jitter of image (3, H, W) uint8: brightness, contrast, saturation (factor
    U(1 - s, 1 + s)) and hue (shift U(-s, s)), in that order, each applied with probability p."""
    for adjust in (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation):
        if rng.random() < p:
            image = adjust(image, float(rng.uniform(1 - strength, 1 + strength)))
    if rng.random() < p:
        image = TF.adjust_hue(image, float(rng.uniform(-strength, strength)))
    return image


def train_view(
    sample: SegmentationSample,
    rng: np.random.Generator,
    size: int,
    scale: tuple[float, float],
    jitter: float,
    jitter_p: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hummingbird's training view: jitter, then a random resized crop to size x size.
    Returns image (size, size, 3) uint8 and mask (size, size) int64."""
    image, mask = as_tensors(sample)
    image = color_jitter(image, jitter, jitter_p, rng)
    image, mask = resized_crop(image, mask, crop_box(*mask.shape, scale, rng), size)
    return image.permute(1, 2, 0), mask


def val_view(
    sample: SegmentationSample, rng: np.random.Generator, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation view: image (size, size, 3) uint8 and mask (size, size) int64 resized."""
    image, mask = resize(*as_tensors(sample), size)
    return image.permute(1, 2, 0), mask


class ViewDataset(Dataset):
    """Views of the items ``order`` of a segmentation dataset; item j is
    ``view(dataset[order[j]], rng)`` with rng seeded by (seed, epoch, order[j]), so a view does
    not depend on batching or on the number of loader workers."""

    def __init__(
        self,
        dataset: SegmentationDataset,
        view: View,
        seed: int,
        epoch: int,
        order: Sequence[int],
    ):
        self.dataset = dataset
        self.view = view
        self.seed = seed
        self.epoch = epoch
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = int(self.order[j])
        rng = np.random.default_rng((self.seed, self.epoch, i))
        return self.view(self.dataset[i], rng)


def view_loader(data: ViewDataset, batch: int, workers: int, drop_last: bool) -> DataLoader:
    """Batches of (images (B, S, S, 3) uint8, masks (B, S, S) int64) in order."""
    return DataLoader(data, batch_size=batch, num_workers=workers, drop_last=drop_last)
