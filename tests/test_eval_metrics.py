"""Confusion matrix, cluster matching and mIoU on hand-made cases."""

import numpy as np
import pytest

from mosic.stages.evaluation.datasets.base import IGNORE
from mosic.stages.evaluation.metrics import (
    confusion_matrix,
    confusion_miou,
    hungarian_match,
    many_to_one_match,
    matched_miou,
    miou,
    miou_fields,
)


def test_confusion_matrix_counts_pairs_and_skips_ignore():
    pred = np.array([[0, 1, 1], [2, 0, 1]])
    gt = np.array([[0, 1, IGNORE], [1, 0, IGNORE]])
    expected = np.array([[2, 0], [0, 1], [0, 1]])
    np.testing.assert_array_equal(confusion_matrix(pred, gt, 3, 2), expected)
    assert confusion_matrix(pred, gt, 3, 2).dtype == np.int64


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError):
        confusion_matrix(np.array([3]), np.array([0]), 3, 2)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0]), np.array([2]), 3, 2)


def test_hungarian_miou_by_hand():
    gt = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([1, 1, 0, 0, 0, 0])
    # IoU(cluster 0, class 1) = 3/4 and IoU(cluster 1, class 0) = 2/3 beat the other pairing.
    np.testing.assert_array_equal(hungarian_match(confusion_matrix(pred, gt, 2, 2)), [1, 0])
    score, per_class = matched_miou(pred, gt, 2, 2, "hungarian")
    np.testing.assert_allclose(per_class, [2 / 3, 3 / 4])
    assert score == pytest.approx(17 / 24)


def test_permuted_perfect_prediction_scores_one_under_hungarian():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, size=(4, 16, 16))
    permutation = np.array([3, 0, 4, 1, 2])
    score, per_class = matched_miou(permutation[gt], gt, 5, 5, "hungarian")
    assert score == 1.0
    np.testing.assert_array_equal(per_class, np.ones(5))


def test_many_to_one_maps_split_clusters_to_one_class():
    gt = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    clusters = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(
        many_to_one_match(confusion_matrix(clusters, gt, 3, 2)), [0, 0, 1]
    )
    assert matched_miou(clusters, gt, 3, 2, "many_to_one")[0] == 1.0
    # One-to-one leaves one of the two halves of class 0 unmatched; it goes to the background,
    # class 0, as the references' PredsmIoU sends it, which here is right.
    assert matched_miou(clusters, gt, 3, 2, "hungarian")[0] == 1.0
    # As "no class" instead, half of class 0 would be missed: IoU 1/2 for class 0.
    confusion = confusion_matrix(clusters, gt, 3, 2)
    assert confusion_miou(confusion, "hungarian", unmatched=-1)[0] == pytest.approx(0.75)


def test_unmatched_clusters_go_to_the_background_as_in_the_reference():
    """Class 1 split in two clusters: Hungarian keeps one half, the other half is predicted as
    background (class 0), counting against both classes, as NeCo's PredsmIoU does."""
    gt = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    clusters = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    score, per_class = matched_miou(clusters, gt, 3, 2, "hungarian")
    # reference: reordered predictions [0, 0, 0, 0, 1, 1, 0, 0] -> IoU 4/6 and 2/4
    np.testing.assert_allclose(per_class, [4 / 6, 2 / 4])
    assert score == pytest.approx((4 / 6 + 2 / 4) / 2)


def test_field_miou_averages_all_classes_as_the_references():
    """ADE20K as the references hold it: 151 classes, class 0 ignored: their mIoU is the mean
    over the 150 real classes x 150 / 151 (hand-made: every class 1..150 present, IoU known)."""
    rng = np.random.default_rng(0)
    gt = np.repeat(np.arange(1, 151), 4)  # class 0 never in the ground truth (ignored pixels)
    pred = gt.copy()
    wrong = rng.choice(len(gt), 100, replace=False)
    pred[wrong] = (pred[wrong] % 150) + 1  # moved to the next class
    gt = np.concatenate([gt, np.full(7, IGNORE)])  # "other" pixels, ignored
    pred = np.concatenate([pred, np.zeros(7, dtype=int)])
    per_class = miou(pred, gt, 151)[1]
    fields = miou_fields(per_class)
    assert np.isnan(per_class[0]) and fields["classes_present"] == 150
    assert fields["classes_averaged"] == 151
    real = np.array([_iou(pred[:600], gt[:600], c) for c in range(1, 151)])
    assert fields["miou_present_classes"] == pytest.approx(real.mean())
    assert fields["miou"] == pytest.approx(real.sum() / 151)
    assert fields["miou"] == pytest.approx(fields["miou_present_classes"] * 150 / 151)


def _iou(pred: np.ndarray, gt: np.ndarray, c: int) -> float:
    return ((pred == c) & (gt == c)).sum() / ((pred == c) | (gt == c)).sum()


def test_many_to_one_is_precision_based():
    # Cluster 0 covers all of class 1 but is mostly class 0: it goes to class 0 (precision),
    # although its IoU with class 1 (2/5) exceeds its IoU with class 0 (3/11).
    gt = np.array([0, 0, 0, 1, 1] + [0] * 6)
    clusters = np.array([0, 0, 0, 0, 0] + [1] * 6)
    np.testing.assert_array_equal(many_to_one_match(confusion_matrix(clusters, gt, 2, 2)), [0, 0])


def test_ignored_pixels_are_not_counted():
    gt = np.array([0, 0, 1, 1, IGNORE, IGNORE])
    pred = np.array([0, 0, 1, 1, 1, 0])  # wrong only where ignored
    assert matched_miou(pred, gt, 2, 2, "hungarian")[0] == 1.0
    assert miou(pred, gt, 2)[0] == 1.0


def test_miou_averages_present_classes_and_counts_no_class_as_a_miss():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, -1, 1, 2])  # -1: no class; 2: a class absent from gt
    score, per_class = miou(pred, gt, 3)
    np.testing.assert_allclose(per_class[:2], [1 / 2, 1 / 2])
    assert np.isnan(per_class[2])
    assert score == pytest.approx(0.5)


def test_unmatched_clusters_can_predict_a_chosen_class():
    gt = np.array([0, 0, 0, 1])
    clusters = np.array([0, 1, 2, 3])
    confusion = confusion_matrix(clusters, gt, 4, 2)
    # Two clusters are left over; as background (class 0) they complete it.
    assert confusion_miou(confusion, "hungarian", unmatched=0)[0] == 1.0
    assert confusion_miou(confusion, "hungarian", unmatched=-1)[0] == pytest.approx((1 / 3 + 1) / 2)
    assert confusion_miou(confusion, "hungarian")[0] == 1.0  # the default: the background
