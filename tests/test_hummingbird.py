"""k nearest neighbours and the Hummingbird protocol on synthetic images whose answer is known.

The synthetic images paint each class in its own colour; ``ColourFeatures`` plays a backbone
whose patch feature is the class histogram of the patch's pixels (read back from the colours), so
retrieval must recover the labels. ``RandomFeatures`` carries no information: chance level.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mosic.stages.evaluation.datasets.base import IGNORE, SegmentationSample
from mosic.stages.evaluation.hummingbird import (
    HummingbirdConfig,
    build_memory,
    crop_box,
    evaluate_hummingbird,
    patch_histograms,
    sample_patches,
)
from mosic.stages.evaluation.knn import knn

PALETTE = np.array([[230, 25, 25], [25, 230, 25], [25, 25, 230], [10, 10, 10]], dtype=np.uint8)
PATCH = 8


class Synthetic:
    """``n`` images of the four palette classes: a background and two rectangles, or (with
    ``stripes``) horizontal bands one patch row high; ``aligned``: edges on the patch grid.
    ``ignore``: a rectangle of each mask is IGNORE (its pixels keep their colour)."""

    name = "synthetic"
    num_classes = 4
    class_names = ("red", "green", "blue", "black")

    def __init__(
        self,
        n: int,
        size: tuple[int, int],
        seed: int,
        aligned: bool = False,
        stripes: bool = False,
        ignore: bool = False,
    ):
        rng = np.random.default_rng(seed)
        h, w = size
        unit = PATCH if aligned or stripes else 1
        self.samples = []
        for i in range(n):
            if stripes:
                rows = rng.integers(0, 4, h // PATCH)
                mask = np.repeat(rows, PATCH)[:, None].repeat(w, 1)
            else:
                mask = np.full((h, w), rng.integers(0, 4))
                for _ in range(2):
                    y0, y1 = np.sort(rng.choice(np.arange(0, h + 1, unit), 2, replace=False))
                    x0, x1 = np.sort(rng.choice(np.arange(0, w + 1, unit), 2, replace=False))
                    mask[y0:y1, x0:x1] = rng.integers(0, 4)
            image = PALETTE[mask]
            mask = mask.astype(np.int64)
            if ignore:
                mask[: h // 4, : w // 4] = IGNORE
            self.samples.append(SegmentationSample(f"s{i}", image, mask))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> SegmentationSample:
        return self.samples[i]


class ColourFeatures:
    """(B, H, W, 3) uint8 -> (B, 4, H/8, W/8): the fraction of each patch's pixels nearest to
    each palette colour."""

    patch_size = PATCH
    dim = 4
    device = torch.device("cpu")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(images).float()
        dist = ((x[..., None, :] - torch.from_numpy(PALETTE).float()) ** 2).sum(-1)
        onehot = F.one_hot(dist.argmin(-1), 4).permute(0, 3, 1, 2).float()
        return F.avg_pool2d(onehot, PATCH)


class RandomFeatures:
    """Gaussian noise of the shape a backbone would give: no information."""

    patch_size = PATCH
    dim = 16
    device = torch.device("cpu")

    def __init__(self):
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = images.shape
        return torch.randn(b, self.dim, h // PATCH, w // PATCH, generator=self.generator)


# knn ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_knn_chunked_equals_brute_force(dtype):
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(50, 16, generator=g)
    bank = torch.randn(1000, 16, generator=g).to(dtype)
    full = queries @ bank.float().T
    want_s, want_i = full.topk(7, dim=1)
    for query_chunk, bank_chunk in [(50, 1000), (13, 97), (7, 5)]:  # (7, 5): chunks < k
        scores, indices = knn(queries, bank, 7, query_chunk, bank_chunk, use_faiss=False)
        assert torch.allclose(scores, want_s, atol=1e-5)
        assert torch.equal(indices, want_i)  # random data: no ties
        assert torch.allclose(full.gather(1, indices), scores, atol=1e-5)


def test_knn_faiss_path_matches():
    """The faiss path (float32 copies, chunk offsets) against the torch one."""
    g = torch.Generator().manual_seed(1)
    queries, bank = torch.randn(20, 8, generator=g), torch.randn(300, 8, generator=g).half()
    want = knn(queries, bank, 5, 7, 64, use_faiss=False)
    got = knn(queries, bank, 5, 7, 64, use_faiss=True)
    assert torch.equal(got[1], want[1]) and torch.allclose(got[0], want[0], atol=1e-5)


def test_knn_rejects_k_larger_than_bank():
    with pytest.raises(ValueError):
        knn(torch.zeros(2, 3), torch.zeros(4, 3), 5)


# memory bank pieces ------------------------------------------------------------------------


def test_patch_histograms_count_pixels_and_skip_ignore():
    mask = torch.zeros(1, 4, 8, dtype=torch.int64)  # two 4 x 4 patches
    mask[0, :2, :4] = 1  # half of patch 0 is class 1
    mask[0, :, 4:] = IGNORE
    mask[0, 0, 4] = 2  # one pixel of patch 1 is class 2, the rest ignored
    hist = patch_histograms(mask, 4, 3)
    assert hist.shape == (1, 2, 3)
    assert torch.allclose(hist[0, 0], torch.tensor([0.5, 0.5, 0.0]))
    assert torch.allclose(hist[0, 1], torch.tensor([0.0, 0.0, 1 / 16]))


def test_sample_patches_prefers_rare_classes_and_skips_unlabelled():
    """Scores are (patches sharing the class) x U(0, 1): 7U for background, 2U for the rare
    class, so rare patches are kept more often, though not always."""
    hist = torch.zeros(1, 10, 3)
    hist[0, :7, 0] = 1  # seven background patches
    hist[0, 7:9, 1] = 1  # two patches of a rare class
    # patch 9: unlabelled (all IGNORE)
    counts = np.zeros(10)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        counts[sample_patches(hist, 4, generator)[0].numpy()] += 1
    assert counts[9] == 0
    assert counts[7:9].min() > 0.8 * 300 and counts[:7].max() < 0.5 * 300


def test_crop_box_fits_and_covers_the_scale():
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(500):
        top, left, h, w = crop_box(60, 80, (0.5, 2.0), rng)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
        areas.append(h * w / (60 * 80))
    assert min(areas) < 0.55 and max(areas) == 1.0  # too-large draws fall back to the full image


# the protocol ------------------------------------------------------------------------------


def _config(train: Synthetic) -> HummingbirdConfig:
    return HummingbirdConfig(input_size=64, memory_size=len(train) * 2 * 32, batch=8)


def test_ignored_training_pixels_count_as_class_0_in_the_bank_as_in_the_reference():
    """open-hummingbird-eval's ``_create_memory`` turns VOC's 255 into 0 (and keeps ADE20K's
    "other", 0): every pixel of a training view lands in some class of the bank's labels."""
    train = Synthetic(4, (64, 64), seed=5, ignore=True)
    config = HummingbirdConfig(input_size=64, memory_size=None, aug_epochs=1, batch=4)
    cpu = torch.device("cpu")
    _, labels, _ = build_memory(train, ColourFeatures(), config, cpu)
    torch.testing.assert_close(labels.float().sum(1), torch.ones(len(labels)))
    replace = dict(config.__dict__, ignored_label=None)
    _, apart, _ = build_memory(train, ColourFeatures(), HummingbirdConfig(**replace), cpu)
    assert (apart.float().sum(1) < 0.99).any()  # ignored pixels in no class
    moved = labels.float()[:, 0] - apart.float()[:, 0]
    torch.testing.assert_close(moved, 1 - apart.float().sum(1))  # ...all of them into class 0


def test_hummingbird_recovers_the_labels_exactly_on_grid_aligned_stripes():
    """Val images are 64 x 64 (no resize) with one-patch-high bands: every query patch is pure,
    and bilinear upsampling of one-hot label maps between two rows of patches switches class
    exactly at the patch edge (the 0.5 crossing lies between pixel centres)."""
    train = Synthetic(16, (72, 88), seed=1)
    val = Synthetic(6, (64, 64), seed=2, stripes=True, ignore=True)
    result = evaluate_hummingbird(train, val, ColourFeatures(), _config(train))
    assert result["miou"] == 1.0
    assert result["bank_size"] == 16 * 2 * 32 and result["patches_per_view"] == 32
    for phase in ("build_bank_s", "val_features_s", "retrieve_s", "score_s"):
        assert result[phase] >= 0


def test_hummingbird_near_perfect_on_grid_aligned_rectangles():
    """Rectangles: at a convex corner, bilinear upsampling weighs the corner patch by
    wy * wx < 0.5 for the few pixels nearest the corner, so those go to the neighbours' class;
    a few pixels per corner out of 4096 per image."""
    train = Synthetic(16, (72, 88), seed=1)
    val = Synthetic(8, (64, 64), seed=3, aligned=True, ignore=True)
    result = evaluate_hummingbird(train, val, ColourFeatures(), _config(train))
    assert result["miou"] > 0.95


def test_hummingbird_random_features_are_near_chance():
    train = Synthetic(16, (72, 88), seed=1)
    val = Synthetic(8, (64, 64), seed=3, aligned=True)
    result = evaluate_hummingbird(train, val, RandomFeatures(), _config(train))
    assert result["miou"] < 0.3  # chance (about 0.17 here) with four classes and matching
