"""TAP-Vid metrics on hand-made tracks."""

import numpy as np
import pytest

from mosic.stages.tapvid import THRESHOLDS, tapvid_metrics

T, N = 6, 4


def _tracks(size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query frames (N,), positions (T, N, 2) and visibility (T, N) of straight tracks."""
    query = np.array([0, 0, 2, 3])
    t = np.arange(T, dtype=np.float32)[:, None]
    pos = np.stack([10 + 5 * t + 20 * np.arange(N), 50 + 2 * t + 0 * np.arange(N)], -1)
    pos = pos * size / 256
    visible = np.arange(T)[:, None] >= query[None]
    return query, pos.astype(np.float32), visible


def test_perfect_prediction_scores_one() -> None:
    query, pos, vis = _tracks()
    m = tapvid_metrics(query, pos, vis, pos, vis, (256, 256))
    for key, value in m.items():
        assert value == (0.0 if key == "median_error" else 1.0), key


def test_known_offset_of_three_pixels() -> None:
    query, pos, vis = _tracks()
    m = tapvid_metrics(query, pos, vis, pos + np.array([3.0, 0.0]), vis, (256, 256))
    assert m["pts_within_4"] == 1 and m["pts_within_8"] == 1 and m["pts_within_16"] == 1
    assert m["pts_within_2"] == 0 and m["pts_within_1"] == 0
    assert m["jaccard_4"] == 1 and m["jaccard_2"] == 0
    assert m["average_pts_within_thresh"] == pytest.approx(0.6)
    assert m["median_error"] == pytest.approx(3.0)
    assert m["occlusion_accuracy"] == 1


def test_predicted_occluded_when_visible() -> None:
    query, pos, vis = _tracks()
    pred_vis = vis.copy()
    pred_vis[4, 0] = False  # one evaluated visible point called occluded
    m = tapvid_metrics(query, pos, vis, pos, pred_vis, (256, 256))
    evaluated = int(np.sum(np.arange(T)[:, None] > query[None]))
    assert m["occlusion_accuracy"] == pytest.approx(1 - 1 / evaluated)
    # Position accuracy does not look at the predicted visibility; Jaccard counts a FN.
    assert m["pts_within_1"] == 1
    assert m["jaccard_1"] == pytest.approx((evaluated - 1) / evaluated)


def test_predicted_visible_when_occluded_is_a_false_positive() -> None:
    query, pos, vis = _tracks()
    vis = vis.copy()
    vis[5, 1] = False
    pred_vis = vis.copy()
    pred_vis[5, 1] = True
    m = tapvid_metrics(query, pos, vis, pos, pred_vis, (256, 256))
    visible_evaluated = int(np.sum(vis & (np.arange(T)[:, None] > query[None])))
    assert m["jaccard_16"] == pytest.approx(visible_evaluated / (visible_evaluated + 1))
    assert m["pts_within_16"] == 1


def test_query_frame_and_earlier_frames_are_excluded() -> None:
    query, pos, vis = _tracks()
    pred = pos.copy()
    for i, q in enumerate(query):
        pred[: q + 1, i] = np.nan  # wrong (NaN) on and before the query frame
    pred_vis = vis.copy()
    pred_vis[query, np.arange(N)] = False
    m = tapvid_metrics(query, pos, vis, pred, pred_vis, (256, 256))
    assert m["average_jaccard"] == 1 and m["occlusion_accuracy"] == 1


def test_rescaling_to_256() -> None:
    height, width = 128, 512  # x scaled by 1/2, y by 2
    query, pos, vis = _tracks()
    pos = pos * np.array([width / 256, height / 256], np.float32)
    m = tapvid_metrics(query, pos, vis, pos + np.array([5.0, 0.0]), vis, (height, width))
    assert m["pts_within_4"] == 1 and m["pts_within_2"] == 0  # 5 px in x -> 2.5 px
    m = tapvid_metrics(query, pos, vis, pos + np.array([0.0, 1.5]), vis, (height, width))
    assert m["pts_within_4"] == 1 and m["pts_within_2"] == 0  # 1.5 px in y -> 3 px
    assert m["median_error"] == pytest.approx(3.0)


def test_keys() -> None:
    query, pos, vis = _tracks()
    m = tapvid_metrics(query, pos, vis, pos, vis, (256, 256))
    expected = {"occlusion_accuracy", "average_jaccard", "average_pts_within_thresh"}
    expected |= {"median_error"} | {f"pts_within_{x}" for x in THRESHOLDS}
    expected |= {f"jaccard_{x}" for x in THRESHOLDS}
    assert set(m) == expected
