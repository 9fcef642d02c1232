"""The tracks of a training clip: a fixed number, spread over the crop, from the stored grid.

The paper's code seeds a 16 x 16 grid on every augmented clip's first frame: 256 points per
clip. mosic reads its tracks from a store, whose (denser, 32 x 32 by default) grid was seeded
on the whole stored frame, and draws ``count`` of those that are inside the crop and visible
in the clip's first frame, spread over the crop like the paper's grid.
"""

from __future__ import annotations

import math

import numpy as np


def select_points(
    positions: np.ndarray,
    visible: np.ndarray,
    count: int,
    size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` tracks of an augmented clip, spread over its first frame; padded if too few.

    positions: (F, N, 2) float32 (x, y) output pixels and visible: (F, N) bool (False outside
    the crop), as ``augment_clip`` returns them; size: the output side S.
    Candidates are the tracks visible in the first frame. The S x S frame is cut into g x g
    cells (g = ceil(sqrt(count)), 16 for 256) by the candidates' first positions; candidates
    are drawn in rounds, one random candidate from every cell that still has one per round,
    until ``count`` are chosen (in the last round the cells are served in random order). With
    a few candidates per cell this is a jittered g x g grid; where the stored grid is denser
    than the cells, no cell gets a second point before every cell has a first.
    A clip with ``count`` candidates or fewer keeps them all; the missing points are padding:
    position (0, 0) and visible nowhere, so they weigh nothing in the loss.
    Returns positions (F, count, 2) float32 and visible (F, count) bool, the chosen tracks in
    their stored order, then the padding. Draws one permutation from ``rng`` (none when there
    are at most ``count`` candidates).
    """
    frames = positions.shape[0]
    candidates = np.flatnonzero(visible[0])
    if len(candidates) > count:
        cells = math.isqrt(count - 1) + 1  # ceil(sqrt(count))
        shuffle = rng.permutation(len(candidates))
        xy = positions[0, candidates[shuffle]]
        column, row = np.clip(((xy + 0.5) * (cells / size)).astype(np.int64), 0, cells - 1).T
        cell = row * cells + column
        by_cell = np.argsort(cell, kind="stable")  # shuffled order kept inside each cell
        first_of_cell = np.searchsorted(cell[by_cell], cell[by_cell], side="left")
        round_of = np.empty(len(cell), np.int64)
        round_of[by_cell] = np.arange(len(cell)) - first_of_cell
        taken = np.lexsort((np.arange(len(cell)), round_of))[:count]  # by round, then shuffled
        candidates = np.sort(candidates[shuffle[taken]])
    out_positions = np.zeros((frames, count, 2), np.float32)
    out_visible = np.zeros((frames, count), bool)
    out_positions[:, : len(candidates)] = positions[:, candidates]
    out_visible[:, : len(candidates)] = visible[:, candidates]
    return out_positions, out_visible
