"""The linear segmentation protocol on the synthetic colour images of ``test_hummingbird``:
features that encode the class train a near-perfect head, noise does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mosic.stages.evaluation.datasets.base import SegmentationSample
from mosic.stages.evaluation.linear import LinearConfig, evaluate_linear, train_view
from tests.test_hummingbird import ColourFeatures, RandomFeatures, Synthetic

# lr 1.0 instead of 0.01: the fake features are histograms of norm <= 1, where a backbone's
# patch features have norms in the tens; six epochs then suffice.
CONFIG = LinearConfig(input_size=64, mask_size=32, epochs=6, drop_at=5, batch=8, lr=1.0)


def test_linear_learns_class_encoding_features():
    """Histogram features are linearly separable per patch; the residual error is at object
    edges inside a patch (one prediction per patch, bilinearly blended to 32 x 32)."""
    train = Synthetic(32, (72, 88), seed=1)
    val = Synthetic(8, (64, 64), seed=3, aligned=True, ignore=True)
    result = evaluate_linear(train, val, ColourFeatures(), CONFIG)
    assert result["miou"] > 0.9
    assert result["steps"] == CONFIG.epochs * (32 // 8)
    for phase in ("train_s", "predict_s", "score_s"):
        assert result[phase] >= 0


def test_linear_random_features_stay_low():
    train = Synthetic(32, (72, 88), seed=1)
    val = Synthetic(8, (64, 64), seed=3, aligned=True)
    result = evaluate_linear(train, val, RandomFeatures(), CONFIG)
    assert result["miou"] < 0.4


def test_linear_needs_one_full_batch():
    with pytest.raises(ValueError):
        evaluate_linear(
            Synthetic(4, (64, 64), 0), Synthetic(2, (64, 64), 0), ColourFeatures(), CONFIG
        )


def test_train_view_flips_image_and_mask_together():
    mask = np.zeros((40, 40), dtype=np.int64)
    mask[:, :10] = 1
    image = np.where(mask[..., None] == 1, 255, 0).astype(np.uint8).repeat(3, 2)
    sample = SegmentationSample("x", image, mask)
    for seed in range(10):
        img, msk = train_view(sample, np.random.default_rng(seed), 32, (0.8, 1.0), 0.5)
        assert img.shape == (32, 32, 3) and msk.shape == (32, 32)
        bright = img[..., 0] > 127
        agree = (bright == (msk == 1)).float().mean()
        assert agree > 0.93  # same crop and flip: only the edge column may differ (~0.5 if not)
        assert torch.unique(msk).tolist() == [0, 1]
