"""Settings of the ``lk`` tracker (``mosic.stages.trackers.lk``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LKConfig:
    """Settings of the LK tracker (all change the tracks).

    win_size: LK window side (pixels); levels: pyramid levels above the full image;
    iterations, epsilon: LK stopping criteria; fb_threshold: largest forward-backward error
    (pixels) of an accepted step; refine_iterations, refine_patch, refine_sigma: Gauss-Newton
    steps, patch side and Gaussian weighting of the normalised-correlation refinement;
    patch, patch_sigma: side and Gaussian weighting (pixels) of the appearance patch; ncc_min:
    smallest NCC of an accepted step; residual_max: largest intensity residual of an accepted
    step; template_rate: how fast a visible point's template follows its appearance;
    frame_prior: pull (px^2) of a point's frame towards its previous value turned by its spin;
    frame_trim: neighbours the first frame fit misses by more than this (px) are left out of
    the second; spin_rate: how fast a frame's spin (turn per frame) follows its measured turns;
    coast: how much of its spin a frame without tracked neighbours keeps each frame; max_zoom:
    largest scale of a frame or carrying similarity; weak_std, weak_noise: a template is weak (plain
    surface) when its weighted std is under the larger of weak_std grey levels and weak_noise
    times the noise std; plain_std, plain_mean: a weak point still shows its surface while its
    patch's std stays under plain_std times the template's plus half the weak bound, and its
    mean within plain_mean weak bounds of the template's; weak_spread: rounds of passing steps
    from textured points across weak ones; neighbours: query neighbours that may carry a point;
    affinity_rate, cost_max: a neighbour carries a point only while their running mean squared
    step difference (px^2) stays under cost_max; ref_margin: how many frames before a point is
    lost its reference is taken; recover_levels: pyramid levels of the long jump from the
    reference; similarity_prior: pull (px^2) of the carrying similarity towards a translation;
    tile_radius: half side of the tiles of the long jump; pick_margin: how much worse (residual)
    the similarity carry may show the reference centre than the best single-anchor translation
    and still be kept; pick_anchors: how many (nearest) anchors offer their translation;
    recover_often: a point hidden longer than this many frames is tracked from its reference
    every other frame only; glimpse_patch, glimpse_sigma, glimpse_max: side, Gaussian weighting and
    largest residual of the centre check that reports a lost point visible; search_after,
    search_every, search_radius, detect_min: a hidden point no anchor carries is searched for
    by its reference template within search_radius px, every search_every frames from
    search_after frames hidden on, and found where the normalised correlation reaches
    detect_min (and the step's checks pass); cut_similarity,
    cut_lost: a frame starts a new shot when its thumbnail's correlation with the previous one
    is under cut_similarity and at least cut_lost of the tracked points fail.
    """

    win_size: int = 5
    levels: int = 2
    iterations: int = 30
    epsilon: float = 0.01
    fb_threshold: float = 0.5
    refine_iterations: int = 2
    refine_patch: int = 9
    refine_sigma: float = 2.0
    patch: int = 9
    patch_sigma: float = 2.0
    ncc_min: float = 0.8
    residual_max: float = 0.35
    template_rate: float = 0.2
    frame_prior: float = 100.0
    frame_trim: float = 1.0
    spin_rate: float = 0.3
    coast: float = 0.8
    max_zoom: float = 1.5
    weak_std: float = 4.0
    weak_noise: float = 1.5
    plain_std: float = 1.5
    plain_mean: float = 2.0
    weak_spread: int = 1
    neighbours: int = 24
    affinity_rate: float = 0.2
    cost_max: float = 1.0
    ref_margin: int = 3
    recover_levels: int = 1
    similarity_prior: float = 50.0
    tile_radius: int = 12
    pick_margin: float = 0.1
    pick_anchors: int = 8
    recover_often: int = 4
    glimpse_patch: int = 5
    glimpse_sigma: float = 1.0
    glimpse_max: float = 0.7
    search_after: int = 5
    search_every: int = 3
    search_radius: int = 16
    detect_min: float = 0.95
    cut_similarity: float = 0.5
    cut_lost: float = 0.6
