"""Points per clip: a fixed number of tracks, inside the crop, spread over it, padded if short."""

from __future__ import annotations

import numpy as np

from mosic.stages.data.points import select_points

S = 224


def grid_tracks(xs: np.ndarray, ys: np.ndarray, frames: int = 3):
    """Tracks starting on the grid xs x ys, drifting 1 px/frame right; all visible."""
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    start = np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)
    positions = np.stack([start + [f, 0] for f in range(frames)]).astype(np.float32)
    return positions, np.ones(positions.shape[:2], bool)


def cells_of(xy: np.ndarray, cells: int = 16) -> np.ndarray:
    column, row = ((xy + 0.5) * cells / S).astype(int).T
    return row * cells + column


def test_a_denser_grid_gives_one_point_per_cell_a_jittered_grid():
    centres = (np.arange(40) + 0.5) * S / 40 - 0.5  # a 40 x 40 grid: 6.25 per 16 x 16 cell
    positions, visible = grid_tracks(centres, centres)
    chosen_cells = []
    for seed in range(3):
        out, vis = select_points(positions, visible, 256, S, np.random.default_rng(seed))
        assert out.shape == (3, 256, 2) and vis.shape == (3, 256) and vis.all()
        assert np.bincount(cells_of(out[0]), minlength=256).tolist() == [1] * 256
        # every chosen track is one of the given tracks, whole
        index = [np.flatnonzero((positions[0] == p).all(-1))[0] for p in out[0]]
        np.testing.assert_array_equal(out, positions[:, index])
        chosen_cells.append(out[0])
    assert not np.array_equal(chosen_cells[0], chosen_cells[1])  # jittered, seed by seed


def test_dense_corners_do_not_take_points_from_sparse_cells():
    # The left half twice as dense as the right: a uniform draw would give the left two thirds
    # of the points and some cells several; the rounds give every cell one before a second.
    left, right = np.arange(0, S / 2, 1.75), np.arange(S / 2, S, 3.5)
    positions, visible = grid_tracks(np.concatenate([left, right]), np.arange(0, S, 3.5))
    out, _ = select_points(positions, visible, 256, S, np.random.default_rng(0))
    counts = np.bincount(cells_of(out[0]), minlength=256)
    assert counts.min() == 1 and counts.max() == 1


def test_only_tracks_visible_in_the_first_frame_are_candidates():
    centres = (np.arange(32) + 0.5) * S / 32 - 0.5
    positions, visible = grid_tracks(centres, centres)
    rng = np.random.default_rng(1)
    visible[0] = rng.random(visible.shape[1]) < 0.5
    visible[2] = rng.random(visible.shape[1]) < 0.5  # later frames keep their own visibility
    out, vis = select_points(positions, visible, 256, S, np.random.default_rng(2))
    assert vis[0].all()
    for track, seen in zip(out.transpose(1, 0, 2), vis.T, strict=True):
        n = np.flatnonzero((positions[0] == track[0]).all(-1))[0]
        assert visible[0, n]
        np.testing.assert_array_equal(seen, visible[:, n])


def test_a_clip_with_fewer_candidates_keeps_them_all_and_pads_with_invisible_points():
    positions, visible = grid_tracks(np.arange(10.0, 200, 20), np.arange(10.0, 200, 20))
    visible[0, :5] = False  # 100 tracks, 95 visible at the start
    out, vis = select_points(positions, visible, 256, S, np.random.default_rng(0))
    assert out.shape == (3, 256, 2)
    np.testing.assert_array_equal(out[:, :95], positions[:, 5:])  # stored order
    np.testing.assert_array_equal(vis[:, :95], visible[:, 5:])
    assert not vis[:, 95:].any() and not out[:, 95:].any()  # padding: (0, 0), never visible
