"""TAP-Vid metrics for one video, after google-deepmind/tapnet's ``compute_tapvid_metrics``.

Query mode "first": each query is evaluated on the frames after its own frame. Coordinates are
rescaled to a 256 x 256 frame before distances are taken, as in the TAP-Vid benchmark.
"""

from __future__ import annotations

import numpy as np

THRESHOLDS = (1, 2, 4, 8, 16)
EVAL_SIZE = 256


def tapvid_metrics(
    query_frames: np.ndarray,
    gt_positions: np.ndarray,
    gt_visible: np.ndarray,
    pred_positions: np.ndarray,
    pred_visible: np.ndarray,
    image_size: tuple[int, int],
) -> dict[str, float]:
    """Position accuracy, occlusion accuracy and Jaccard of predicted tracks of one video.

    query_frames: (N,) frame index of each query (rounded to int).
    gt_positions, pred_positions: (T, N, 2) (x, y) pixels of a frame of ``image_size``;
        NaN allowed where not evaluated (a NaN prediction counts as wrong).
    gt_visible, pred_visible: (T, N) bool.
    image_size: (H, W) of the frames the positions refer to.
    Returns ``occlusion_accuracy``, ``pts_within_{1,2,4,8,16}``, ``jaccard_{1,2,4,8,16}``,
    ``average_jaccard``, ``average_pts_within_thresh`` and ``median_error`` (pixels at 256 x 256
    over gt-visible evaluated points); a ratio with an empty denominator is NaN.
    """
    num_frames = gt_positions.shape[0]
    query = np.round(np.asarray(query_frames)).astype(int)
    evaluated = np.arange(num_frames)[:, None] > query[None, :]  # (T, N)
    height, width = image_size
    scale = np.array([EVAL_SIZE / width, EVAL_SIZE / height])
    error = np.linalg.norm((pred_positions - gt_positions) * scale, axis=-1)
    error = np.where(np.isfinite(error), error, np.inf)

    visible = gt_visible.astype(bool)
    predicted = pred_visible.astype(bool)
    gt_count = np.sum(visible & evaluated)

    def ratio(num: int, den: int) -> float:
        return float(num / den) if den else float("nan")

    metrics = {
        "occlusion_accuracy": ratio(np.sum((visible == predicted) & evaluated), evaluated.sum())
    }
    for thresh in THRESHOLDS:
        within = error < thresh
        correct = np.sum(within & visible & evaluated)
        true_pos = np.sum(within & visible & predicted & evaluated)
        false_pos = np.sum(predicted & (~visible | ~within) & evaluated)
        metrics[f"pts_within_{thresh}"] = ratio(correct, gt_count)
        metrics[f"jaccard_{thresh}"] = ratio(true_pos, gt_count + false_pos)
    metrics["average_jaccard"] = float(np.mean([metrics[f"jaccard_{x}"] for x in THRESHOLDS]))
    metrics["average_pts_within_thresh"] = float(
        np.mean([metrics[f"pts_within_{x}"] for x in THRESHOLDS])
    )
    errors = error[visible & evaluated]
    metrics["median_error"] = float(np.median(errors)) if errors.size else float("nan")
    return metrics
