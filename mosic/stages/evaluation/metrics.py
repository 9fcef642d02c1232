"""Segmentation metrics for unsupervised evaluation: confusion matrices, cluster-to-class
matching (Hungarian, many-to-one) and mIoU.

Follows ``PredsmIoU`` of NeCo / Leopart (``experiments/utils.py``): Hungarian matching maximises
the summed IoU of matched (cluster, class) pairs; many-to-one matching sends each cluster to the
class it is most precise for. Everything is computed from one confusion matrix, so a metric over
millions of pixels costs one ``np.bincount``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from mosic.stages.evaluation.datasets.base import IGNORE

Matching = Literal["hungarian", "many_to_one"]


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_pred: int, num_gt: int) -> np.ndarray:
    """Pixel counts of (predicted label, ground-truth class) pairs.

    pred: (...) int labels ``0 .. num_pred - 1``; gt: (...) same shape, class ids
    ``0 .. num_gt - 1`` or ``IGNORE`` (those pixels are not counted).
    Returns (num_pred, num_gt) int64.
    """
    pred = np.asarray(pred).ravel()
    gt = np.asarray(gt).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"pred has {pred.size} pixels, gt {gt.size}")
    valid = gt != IGNORE
    pred, gt = pred[valid].astype(np.int64), gt[valid].astype(np.int64)
    if pred.size and (pred.min() < 0 or pred.max() >= num_pred):
        raise ValueError(f"pred labels outside 0 .. {num_pred - 1}")
    if gt.size and (gt.min() < 0 or gt.max() >= num_gt):
        raise ValueError(f"gt classes outside 0 .. {num_gt - 1} (and not IGNORE)")
    counts = np.bincount(pred * num_gt + gt, minlength=num_pred * num_gt)
    return counts.reshape(num_pred, num_gt).astype(np.int64)


def iou_matrix(confusion: np.ndarray) -> np.ndarray:
    """IoU of every (cluster, class) pair if that cluster alone predicted that class.

    confusion: (P, G) counts -> (P, G) float64, 0 where the pair's union is empty.
    """
    confusion = confusion.astype(np.float64)
    union = confusion.sum(1, keepdims=True) + confusion.sum(0, keepdims=True) - confusion
    return np.divide(confusion, union, out=np.zeros_like(confusion), where=union > 0)


def hungarian_match(confusion: np.ndarray) -> np.ndarray:
    """One-to-one matching of clusters to classes maximising the summed IoU.

    confusion: (P, G) counts -> (P,) int64 class of each cluster; -1 for the clusters left
    unmatched when P > G.
    """
    rows, cols = linear_sum_assignment(iou_matrix(confusion), maximize=True)
    mapping = np.full(confusion.shape[0], -1, dtype=np.int64)
    mapping[rows] = cols
    return mapping


def many_to_one_match(confusion: np.ndarray) -> np.ndarray:
    """Each cluster to the class it is most precise for; several clusters may share a class.

    Precision tp / (tp + fp) of cluster i for class j has the denominator (the cluster's size)
    in common over j, so this is the argmax of the cluster's row; ties and empty clusters go to
    the lowest class id, as in the reference's greedy loop with a strict ``>``.
    confusion: (P, G) counts -> (P,) int64.
    """
    return confusion.argmax(axis=1).astype(np.int64)


def _miou_from_counts(counts: np.ndarray) -> tuple[float, np.ndarray]:
    """``miou`` from (C + 1, C) counts of (predicted class + 1, true class); row 0 holds the
    pixels predicted as no class."""
    tp = np.diag(counts[1:]).astype(np.float64)
    gt_count = counts.sum(0)
    union = gt_count + counts[1:].sum(1) - tp
    present = gt_count > 0
    per_class = np.full(counts.shape[1], np.nan)
    per_class[present] = tp[present] / union[present]
    return (float(per_class[present].mean()) if present.any() else float("nan")), per_class


def miou(pred_labels: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[float, np.ndarray]:
    """Mean IoU of class predictions.

    pred_labels: (...) class ids ``0 .. num_classes - 1`` or -1 (predicts no class: the pixel
    counts only as a miss of its true class); gt: (...) same shape, ``IGNORE`` pixels skipped.
    Returns the mean over the classes present in ``gt`` (NaN if none) and the (num_classes,)
    float64 per-class IoU, NaN for the classes absent from ``gt``.
    """
    counts = confusion_matrix(np.asarray(pred_labels) + 1, gt, num_classes + 1, num_classes)
    return _miou_from_counts(counts)


def match(confusion: np.ndarray, matching: Matching) -> np.ndarray:
    """``hungarian_match`` or ``many_to_one_match`` of a (P, G) confusion -> (P,) int64."""
    if matching == "hungarian":
        return hungarian_match(confusion)
    if matching == "many_to_one":
        return many_to_one_match(confusion)
    raise ValueError(f"unknown matching {matching!r}")


def matched_miou(
    clusters: np.ndarray,
    gt: np.ndarray,
    num_clusters: int,
    num_classes: int,
    matching: Matching = "hungarian",
) -> tuple[float, np.ndarray]:
    """mIoU of a clustering after matching its clusters to classes on the same pixels.

    clusters: (...) ids ``0 .. num_clusters - 1``; gt: (...) class ids or ``IGNORE``.
    Returns ``miou``'s (mean, (num_classes,) per-class IoU).
    """
    return confusion_miou(confusion_matrix(clusters, gt, num_clusters, num_classes), matching)


def confusion_miou(
    confusion: np.ndarray, matching: Matching, unmatched: int = 0
) -> tuple[float, np.ndarray]:
    """``matched_miou`` from the (P, G) cluster/class confusion alone; clusters that the
    Hungarian matching leaves unmatched predict class ``unmatched`` (0, the background, as in
    the references; -1: no class)."""
    return mapped_miou(confusion, cluster_classes(confusion, matching, unmatched))


def cluster_classes(confusion: np.ndarray, matching: Matching, unmatched: int = 0) -> np.ndarray:
    """The class each cluster predicts: ``match`` of the (P, G) confusion -> (P,) int64, with
    ``unmatched`` for the clusters the Hungarian matching leaves unmatched (0: the background,
    as NeCo's, Leopart's and open-hummingbird-eval's ``PredsmIoU`` do; -1: no class)."""
    mapping = match(confusion, matching)
    mapping[mapping < 0] = unmatched
    return mapping


def field_miou(per_class: np.ndarray) -> float:
    """The mIoU the references report (``PredsmIoU`` of NeCo, Leopart, open-hummingbird-eval):
    per-class IoU summed over ALL classes and divided by their number; a class absent from the
    ground truth counts 0 (ADE20K: 151 classes, the ignored "other" class 0 included).
    per_class: (C,) float, NaN for absent classes."""
    return float(np.nansum(per_class) / len(per_class))


def miou_fields(per_class: np.ndarray) -> dict:
    """A result's mIoU entries from (C,) per-class IoU (NaN: absent from the ground truth):
    ``miou`` (the field's figure, ``field_miou``), ``miou_present_classes`` (the mean over the
    classes present; ADE20K's 150-class figure on its full val set), ``classes_averaged``,
    ``classes_present`` and ``per_class_iou`` (a list, NaN for absent classes)."""
    present = ~np.isnan(per_class)
    return {
        "miou": field_miou(per_class),
        "miou_present_classes": float(per_class[present].mean()) if present.any() else np.nan,
        "classes_averaged": len(per_class),
        "classes_present": int(present.sum()),
        "per_class_iou": per_class.tolist(),
    }


def mapped_miou(confusion: np.ndarray, mapping: np.ndarray) -> tuple[float, np.ndarray]:
    """``miou`` of the (P, G) cluster/class confusion when cluster i predicts class
    ``mapping[i]`` ((P,) int, -1: no class)."""
    counts = np.zeros((confusion.shape[1] + 1, confusion.shape[1]), dtype=np.int64)
    np.add.at(counts, mapping + 1, confusion)
    return _miou_from_counts(counts)
