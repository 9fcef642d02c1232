"""The trajectory benchmark's generator: tracks agree with the pixels, appearance drifts along
them, the pixel left behind is most often something else, categories are shared."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mosic.stages.data.augment import AugmentConfig
from mosic.stages.data.still_views import still_views
from mosic.stages.drift_videos import CATEGORIES, DriftSettings, drift_scene, make_drift_video
from mosic.stages.objective import corrupt_tracks
from mosic.stages.queries import grid_points

STILL = DriftSettings(hue_speed=(0.0, 0.0), background_hue_speed=0.0, brightness_swing=0.0,
                      noise=0.0)  # fmt: skip


def object_tracks(video, start=0, grid=16):
    """Ground-truth tracks of the grid points of ``start`` that lie on an object."""
    points = grid_points(*video.masks.shape[1:], grid)
    queries = np.concatenate([np.full((len(points), 1), start), points], 1).astype(np.float32)
    positions, visible = video.ground_truth(queries)
    x, y = np.round(points).astype(int).T
    on_object = video.objects[start, y, x] > 0
    return positions[:, on_object], visible[:, on_object], video.masks[start, y, x][on_object]


def at(image, positions):
    """Pixels of ``image`` (H, W, ...) at (N, 2) positions, rounded."""
    x, y = np.round(positions).astype(int).T
    return image[y, x]


@pytest.mark.parametrize("seed", [3, 11])
def test_tracks_follow_the_pixels_of_their_object(seed):
    video = make_drift_video(seed, settings=STILL)  # no drift, no noise: colour is constant
    positions, visible, category = object_tracks(video)
    assert len(category) > 20
    for t in (5, 15, 30):
        seen = visible[t]
        assert seen.sum() > 5
        assert (at(video.masks[t], positions[t, seen]) == category[seen]).mean() > 0.95
        first = at(video.frames[0], positions[0, seen]).astype(float)
        later = at(video.frames[t], positions[t, seen]).astype(float)
        assert np.median(np.abs(first - later).max(axis=1)) < 30  # same pattern phase


def test_appearance_drifts_along_tracks_and_the_static_pixel_is_mostly_something_else():
    drifting = make_drift_video(3)
    still = make_drift_video(3, settings=STILL)
    positions, visible, _ = object_tracks(drifting)
    _, _, category = object_tracks(still)
    seen = visible[15]
    change = np.abs(
        at(drifting.frames[0], positions[0, seen]).astype(float)
        - at(drifting.frames[15], positions[15, seen]).astype(float)
    ).mean()
    unchanged = np.abs(
        at(still.frames[0], positions[0, seen]).astype(float)
        - at(still.frames[15], positions[15, seen]).astype(float)
    ).mean()
    assert change > 2 * unchanged
    # The same pixel 15 frames later: on another layer for most object points.
    start_owner = at(drifting.objects[0], positions[0])
    assert (at(drifting.objects[15], positions[0]) != start_owner).mean() > 0.5
    assert len(category) == len(start_owner)


def test_scenes_are_deterministic_and_categories_are_shared_between_videos():
    a, b = make_drift_video(5, num_frames=6), make_drift_video(5, num_frames=6)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    seen = {c for seed in range(12) for c in drift_scene(seed).categories[1:]}
    assert seen == set(range(1, len(CATEGORIES)))
    assert set(np.unique(a.masks)) <= set(range(len(CATEGORIES)))


def test_still_views_put_each_point_on_its_own_pixel():
    image = make_drift_video(2, num_frames=1).frames[0]
    config = AugmentConfig(64, crop_scale=(0.3, 1.0))
    frames, positions, visible = still_views(image, 3, 8, config, np.random.default_rng(0))
    assert frames.shape == (3, 3, 64, 64) and positions.shape == (3, 64, 2)
    grid = grid_points(*image.shape[:2], 8)
    original = at(image, grid).astype(float)
    for v in range(3):
        inside = visible[v] & (positions[v] > 1).all(1) & (positions[v] < 62).all(1)
        view = frames[v].transpose(1, 2, 0)
        seen = at(view, positions[v, inside]).astype(float)
        assert np.median(np.abs(seen - original[inside]).max(1)) < 40


def test_corrupted_tracks():
    positions = torch.arange(2 * 3 * 4 * 2, dtype=torch.float32).view(2, 3, 4, 2)
    visible = torch.rand(2, 3, 4) > 0.5
    swapped, same = corrupt_tracks(positions, visible, "swap_xy")
    assert torch.equal(swapped[..., 0], positions[..., 1]) and torch.equal(same, visible)
    other, seen = corrupt_tracks(positions, visible, "other_clip")
    assert torch.equal(other[0], positions[1]) and torch.equal(seen[1], visible[0])
    lagged, _ = corrupt_tracks(positions, visible, "shift_frame")
    assert torch.equal(lagged[:, 0], positions[:, 0]) and torch.equal(lagged[:, 2], positions[:, 1])
    assert corrupt_tracks(positions, visible, "none")[0] is positions
    with pytest.raises(ValueError, match="swap_xy"):
        corrupt_tracks(positions, visible, "transpose")
