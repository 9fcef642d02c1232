"""Clip augmentation: the tracks move exactly with the pixels (found again as painted dots)."""

from __future__ import annotations

import numpy as np
import pytest

from mosic.stages.data.augment import AugmentConfig, augment_clip, clip_crop, crop_box

H, W, S = 96, 128, 64


def dotted_clip(positions: np.ndarray) -> np.ndarray:
    """Black frames (F, H, W, 3) with a 3x3 white dot at each track's (round(y), round(x))."""
    frames = np.zeros((len(positions), H, W, 3), np.uint8)
    for frame, points in zip(frames, positions, strict=True):
        for x, y in np.round(points).astype(int):
            frame[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = 255
    return frames


def find_dot(frame: np.ndarray, near: np.ndarray, radius: int = 5) -> np.ndarray:
    """Brightness-weighted centroid (x, y) of the dot in a window around ``near``."""
    x0, y0 = np.maximum(np.round(near).astype(int) - radius, 0)
    window = frame[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1, 0].astype(np.float64)
    ys, xs = np.mgrid[: window.shape[0], : window.shape[1]]
    return np.array([(xs * window).sum(), (ys * window).sum()]) / window.sum() + [x0, y0]


def moving_tracks(rng: np.random.Generator, frames: int = 4) -> np.ndarray:
    """(F, N, 2) float32 integer positions, 12 points 30+ px apart drifting up to 3 px/frame."""
    ys, xs = np.mgrid[12:H:30, 12:W:30]
    start = np.stack([xs.ravel(), ys.ravel()], -1)
    steps = rng.integers(-3, 4, (frames, len(start), 2))
    steps[0] = 0
    return (start + steps.cumsum(0)).astype(np.float32)


@pytest.mark.parametrize("geometry", ["paper", "aspect"])
def test_visible_tracks_land_on_their_dots_and_the_rest_is_outside(geometry):
    rng = np.random.default_rng(0)
    config = AugmentConfig(input_size=S, crop_scale=(0.3, 0.8), crop_geometry=geometry)
    checked = hidden = 0
    for seed in range(12):
        positions = moving_tracks(rng)
        visible = np.ones(positions.shape[:2], bool)
        out, moved, vis = augment_clip(
            dotted_clip(positions), positions, visible, config, np.random.default_rng(seed)
        )
        assert out.shape == (4, S, S, 3) and out.dtype == np.uint8
        assert moved.dtype == np.float32 and moved.shape == positions.shape
        inside = ((moved >= -0.5) & (moved < S - 0.5)).all(-1)
        np.testing.assert_array_equal(vis, inside)
        for f, n in zip(
            *np.nonzero(vis & (moved > 4).all(-1) & (moved < S - 5).all(-1)), strict=True
        ):
            np.testing.assert_allclose(find_dot(out[f], moved[f, n]), moved[f, n], atol=1.0)
            checked += 1
        hidden += int((~vis).sum())
    assert checked > 100 and hidden > 20


def test_flip_mirrors_x_and_keeps_y():
    positions = moving_tracks(np.random.default_rng(1))
    visible = np.ones(positions.shape[:2], bool)
    frames = dotted_clip(positions)
    flips = set()
    for seed in range(8):
        plain = augment_clip(
            frames, positions, visible, AugmentConfig(S, flip=False), np.random.default_rng(seed)
        )
        maybe = augment_clip(
            frames, positions, visible, AugmentConfig(S), np.random.default_rng(seed)
        )
        flipped = not np.array_equal(maybe[0], plain[0])
        flips.add(flipped)
        if flipped:
            np.testing.assert_array_equal(maybe[0], plain[0][:, :, ::-1])
            np.testing.assert_allclose(maybe[1][..., 0], S - 1 - plain[1][..., 0], atol=1e-4)
            np.testing.assert_array_equal(maybe[1][..., 1], plain[1][..., 1])
        np.testing.assert_array_equal(maybe[2], plain[2])
    assert flips == {True, False}


def test_x_only_motion_stays_x_only():
    start = np.array([[20, 30], [60, 50], [90, 70]], np.float32)
    positions = np.stack([start + [2 * f, 0] for f in range(5)])
    visible = np.ones(positions.shape[:2], bool)
    for seed in range(6):
        config = AugmentConfig(S, crop_scale=(0.9, 1.0))
        _, moved, _ = augment_clip(
            dotted_clip(positions), positions, visible, config, np.random.default_rng(seed)
        )
        np.testing.assert_allclose(moved[..., 1], np.broadcast_to(moved[:1, :, 1], (5, 3)))
        assert (np.abs(np.diff(moved[..., 0], axis=0)) > 0.5).all()


def test_crop_falls_back_to_the_centre_when_no_draw_fits():
    # A 100 x 300 frame cannot hold a full-area crop with a ratio <= 4/3.
    x0, y0, w, h = crop_box(100, 300, (1.0, 1.0), (3 / 4, 4 / 3), np.random.default_rng(0))
    assert (w, h) == (133, 100) and (x0, y0) == ((300 - 133) // 2, 0)


def test_color_jitter_changes_colours_not_tracks():
    positions = moving_tracks(np.random.default_rng(2))
    visible = np.ones(positions.shape[:2], bool)
    frames = np.random.default_rng(3).integers(0, 256, (4, H, W, 3), dtype=np.uint8)
    plain = augment_clip(frames, positions, visible, AugmentConfig(S), np.random.default_rng(5))
    config = AugmentConfig(S, color_jitter=0.4)
    jittered = augment_clip(frames, positions, visible, config, np.random.default_rng(5))
    assert not np.array_equal(plain[0], jittered[0])
    np.testing.assert_array_equal(plain[1], jittered[1])
    np.testing.assert_array_equal(plain[2], jittered[2])


def test_paper_geometry_crops_the_squashed_square_aspect_keeps_the_frames_shape():
    # 16:9 frames (256 x 455 as a 256 px store keeps them).
    height, width = 256, 455
    paper, aspect = AugmentConfig(224), AugmentConfig(224, crop_geometry="aspect")
    areas = {"paper": [], "aspect": []}
    for seed in range(400):
        x0, y0, w, h = clip_crop(height, width, paper, np.random.default_rng(seed))
        assert 0 <= x0 and x0 + w <= width and 0 <= y0 and y0 + h <= height
        # On the 224 x 224 square the frame is squashed to, the crop's ratio is in [3/4, 4/3].
        squashed_ratio = (w / width) / (h / height)
        assert 3 / 4 - 0.02 < squashed_ratio < 4 / 3 + 0.02
        areas["paper"].append(w * h / (width * height))
        x0, y0, w, h = clip_crop(height, width, aspect, np.random.default_rng(seed))
        assert 3 / 4 - 0.01 < w / h < 4 / 3 + 0.01  # on the stored frame itself
        areas["aspect"].append(w * h / (width * height))
    assert min(areas["paper"]) > 0.39 and max(areas["paper"]) > 0.95  # scale 0.4-1 of it all
    assert max(areas["aspect"]) < 0.76  # a 4:3 crop of a 16:9 frame covers at most 75 %


def test_unknown_crop_geometry_is_a_clear_error():
    with pytest.raises(ValueError, match="--crop-geometry 'square': use paper or aspect"):
        AugmentConfig(crop_geometry="square")
