"""The default CPU tracker: pyramidal Lucas-Kanade with occlusion handling, no weights.

Every frame pair, all visible points go through one forward and one backward
``cv2.calcOpticalFlowPyrLK`` call; a point stays visible when the two agree (forward-backward
check), it lands inside the frame and the patch it lands on still looks like its recent
appearance (NCC and an intensity residual, centre-weighted). A point that fails is lost: it is
carried by its anchors (neighbours among the queries of its start frame that have moved like
it), through a similarity fitted to their motion since the point's reference frame (a few
frames before it was lost), or by the translation of the single anchor that best shows the
centre of its reference patch (a point next to a layer edge then follows its own layer even
when its neighbours straddle two), and every frame it is tracked again straight from that
reference; when that long jump passes the same checks against the reference patch, tracking
resumes.
A lost point whose carried position shows the centre of its reference patch is reported
visible (it is usually right next to the edge of the surface that hid it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np

from mosic.stages.trackers.base import TrackResult
from mosic.stages.trackers.lk_patches import (
    as_complex,
    compare_patches,
    gaussian_window,
    grid_neighbours,
    inside_frame,
    patches_at,
    tiles_around,
)


@dataclass(frozen=True)
class LKConfig:
    """Settings of the LK tracker (all change the tracks).

    win_size: LK window side (pixels); levels: pyramid levels above the full image;
    iterations, epsilon: LK stopping criteria; fb_threshold: largest forward-backward error
    (pixels) of an accepted step; patch, patch_sigma: side and Gaussian weighting (pixels) of
    the appearance patch; ncc_min: smallest NCC of an accepted step; residual_max: largest
    intensity residual of an accepted step; template_rate: how fast a visible point's template
    follows its appearance; neighbours: query neighbours that may carry a lost point;
    affinity_rate, cost_max: a neighbour carries a point only while their running mean squared
    step difference (px^2) stays under cost_max; ref_margin: how many frames before a point is
    lost its reference is taken; recover_levels: pyramid levels of the long jump from the
    reference; similarity_prior: pull (px^2) of the carrying similarity towards a translation;
    tile_radius: half side of the tiles of the long jump; pick_margin: how much worse (residual)
    the similarity carry may show the reference centre than the best single-anchor translation
    and still be kept; glimpse_patch, glimpse_sigma, glimpse_max: side, Gaussian weighting and
    largest residual of the centre check that reports a lost point visible.
    """

    win_size: int = 5
    levels: int = 2
    iterations: int = 30
    epsilon: float = 0.01
    fb_threshold: float = 0.5
    patch: int = 9
    patch_sigma: float = 2.0
    ncc_min: float = 0.8
    residual_max: float = 0.35
    template_rate: float = 0.2
    neighbours: int = 12
    affinity_rate: float = 0.2
    cost_max: float = 1.0
    ref_margin: int = 3
    recover_levels: int = 1
    similarity_prior: float = 50.0
    tile_radius: int = 12
    pick_margin: float = 0.1
    glimpse_patch: int = 5
    glimpse_sigma: float = 1.0
    glimpse_max: float = 0.7


class LKTracker:
    """Pyramidal Lucas-Kanade point tracker (see the module docstring)."""

    name = "lk"
    version = "2"
    window_sets = 8  # measured: bench/stage_one.py, docs/benchmarks.md

    def __init__(self, config: LKConfig | None = None, **options: float) -> None:
        self.config = replace(config or LKConfig(), **options)

    def params(self) -> dict:
        """The LKConfig fields as a dict."""
        return asdict(self.config)

    def track_batch(
        self, videos: list[tuple[np.ndarray, np.ndarray]], horizon: int | None = None
    ) -> list[TrackResult]:
        """``track`` on each (frames (T, H, W, 3) uint8, queries (N, 3)) pair in turn."""
        return [self.track(frames, queries, horizon) for frames, queries in videos]

    def track(
        self, frames: np.ndarray, queries: np.ndarray, horizon: int | None = None
    ) -> TrackResult:
        """Track (N, 3) queries ``(t, x, y)`` through frames (T, H, W, 3) uint8 RGB, each for
        ``horizon`` frames from its own frame (None: to the last frame).

        Returns positions (T, N, 2) float32 (NaN before each query's frame and after its
        horizon), visible (T, N) and confidence (T, N) float32 in [0, 1].
        """
        return _Run(self.config, frames, queries, horizon).result


class _Run:
    """The state of one ``LKTracker.track`` call; ``result`` holds the tracks."""

    def __init__(
        self, cfg: LKConfig, frames: np.ndarray, queries: np.ndarray, horizon: int | None
    ) -> None:
        self.cfg = cfg
        num_frames, self.height, self.width = frames.shape[:3]
        n = len(queries)
        self.start = np.round(queries[:, 0]).astype(int)
        self.end = self.start + (horizon or num_frames)  # a query's rows: start .. end - 1
        self.positions = np.full((num_frames, n, 2), np.nan, np.float32)
        self.visible = np.zeros((num_frames, n), bool)
        self.confidence = np.zeros((num_frames, n), np.float32)
        self.result = TrackResult(self.positions, self.visible, self.confidence)
        if n == 0 or num_frames == 0:
            return
        self.gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        self.lk_args = {
            "winSize": (cfg.win_size, cfg.win_size),
            "maxLevel": cfg.levels,
            "criteria": (
                cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS,
                cfg.iterations,
                cfg.epsilon,
            ),
        }
        self.weights = gaussian_window(cfg.patch, cfg.patch_sigma)
        self.centre_weights = gaussian_window(cfg.glimpse_patch, cfg.glimpse_sigma)
        self.glimpsed = np.zeros((num_frames, n), bool)
        self.neighbours = grid_neighbours(queries, cfg.neighbours)
        self.cost = np.full(self.neighbours.shape, cfg.cost_max / 2, np.float32)
        self.pos = queries[:, 1:3].astype(np.float32).copy()
        self.shown = np.zeros(n, bool)
        self.step = np.zeros((n, 2), np.float32)
        self.templates = np.zeros((n, cfg.patch**2), np.float32)
        self.ref_frame = self.start.copy()
        self.ref_pos = self.pos.copy()
        self.ref_templates = np.zeros_like(self.templates)
        side = 2 * cfg.tile_radius + 1
        self.ref_tiles = np.zeros((n, side, side), np.uint8)
        self.ref_centres = np.zeros((n, 2), int)
        last = min(num_frames, self.end.max())
        for s in range(self.start.min(), last):
            self._record(s)
            if s + 1 < last:
                self._advance(s)
        self.result = TrackResult(self.positions, self.visible | self.glimpsed, self.confidence)

    def _float(self, s: int) -> np.ndarray:
        """Frame ``s`` as float32 grey, (H, W)."""
        return self.gray[s].astype(np.float32)

    def _record(self, s: int) -> None:
        """Start the queries of frame ``s`` and write the state into row ``s``."""
        new = np.flatnonzero(self.start == s)
        if new.size:
            self.shown[new] = inside_frame(self.pos[new], self.height, self.width)
            self.templates[new] = patches_at(self._float(s), self.pos[new], self.cfg.patch)
            self._reference(new, s)
            self.confidence[s, new] = self.shown[new]
        active = (self.start <= s) & (s < self.end)
        self.positions[s, active] = self.pos[active]
        self.visible[s, active] = self.shown[active]

    def _lk(
        self,
        a: np.ndarray,
        b: np.ndarray,
        points: np.ndarray,
        guess: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LK from grey image ``a`` to ``b`` for (M, 2) points, optionally from (M, 2) guesses
        (then with ``recover_levels`` pyramid levels).

        Returns the new points (M, 2), LK success (M,) bool and forward-backward error (M,).
        """
        p0 = points.reshape(-1, 1, 2).astype(np.float32)
        if guess is None:
            args, init = self.lk_args, None
        else:
            args = {
                **self.lk_args,
                "maxLevel": self.cfg.recover_levels,
                "flags": cv2.OPTFLOW_USE_INITIAL_FLOW,
            }
            init = guess.reshape(-1, 1, 2).astype(np.float32).copy()
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, init, **args)
        back_init = None if guess is None else p0.copy()
        back, st2, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, back_init, **args)
        fb = np.linalg.norm(back.reshape(-1, 2) - points, axis=1)
        return p1.reshape(-1, 2), (st1.ravel() == 1) & (st2.ravel() == 1), fb

    def _accept(
        self,
        image: np.ndarray,
        points: np.ndarray,
        lk_ok: np.ndarray,
        fb: np.ndarray,
        templates: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The checks of a step: (M,) bool accepted and (M,) float32 confidence in [0, 1].

        image: (H, W) float32 target frame; points: (M, 2) where the step landed; templates:
        (M, P) patches the landing patches must match.
        """
        cfg = self.cfg
        seen = patches_at(image, points, cfg.patch)
        ncc, residual = compare_patches(seen, templates, self.weights)
        good = (
            lk_ok
            & (fb < cfg.fb_threshold)
            & (ncc > cfg.ncc_min)
            & (residual < cfg.residual_max)
            & inside_frame(points, self.height, self.width)
        )
        conf = np.clip(ncc, 0, 1) * np.clip(1 - fb / (2 * cfg.fb_threshold), 0, 1)
        return good, conf.astype(np.float32)

    def _advance(self, s: int) -> None:
        """Move every started query from frame ``s`` to ``s + 1``."""
        cfg = self.cfg
        image = self._float(s + 1)
        active = (self.start <= s) & (s + 1 < self.end)
        moved = np.zeros_like(self.pos)
        ok = np.zeros(len(self.pos), bool)
        track = np.flatnonzero(active & self.shown)
        if track.size:
            p1, lk_ok, fb = self._lk(self.gray[s], self.gray[s + 1], self.pos[track])
            good, conf = self._accept(image, p1, lk_ok, fb, self.templates[track])
            keep = track[good]
            ok[keep] = True
            moved[keep] = p1[good] - self.pos[keep]
            self.confidence[s + 1, keep] = conf[good]
            self._set_references(s, track[~good])

        self._update_affinity(ok, moved)
        hidden = np.flatnonzero(active & ~ok)
        moved[hidden] = self._carry(hidden, ok, moved, image)
        self.pos[active] += moved[active]
        self.step[active] = moved[active]
        self.shown[:] = ok
        for start in np.unique(self.start[hidden]):  # per query set: tracks of one set do not
            self._recover(s + 1, hidden[self.start[hidden] == start], image)  # hang on others'
        self._glimpse(s + 1, hidden[~self.shown[hidden]], image)
        refresh = np.flatnonzero(active & self.shown)
        seen = patches_at(image, self.pos[refresh], cfg.patch)
        self.templates[refresh] += cfg.template_rate * (seen - self.templates[refresh])

    def _set_references(self, s: int, lost: np.ndarray) -> None:
        """For points (M,) visible at ``s`` but lost at ``s + 1``: the recovery reference is the
        last frame at least ``ref_margin`` frames back where they were visible (else ``s``)."""
        cfg = self.cfg
        for q in lost:
            first = self.start[q]
            back = np.flatnonzero(self.visible[first : max(s - cfg.ref_margin, first) + 1, q])
            r = first + back[-1] if back.size else s
            self.ref_frame[q] = r
            self.ref_pos[q] = self.positions[r, q]
        for r in np.unique(self.ref_frame[lost]):
            self._reference(lost[self.ref_frame[lost] == r], r)

    def _reference(self, group: np.ndarray, r: int) -> None:
        """Cut the reference patches and tiles of points (M,) from frame ``r`` at ref_pos."""
        cfg = self.cfg
        self.ref_templates[group] = patches_at(self._float(r), self.ref_pos[group], cfg.patch)
        centres = np.round(self.ref_pos[group]).astype(int)
        side = 2 * cfg.tile_radius + 1
        tiles = tiles_around(self.gray[r], centres, cfg.tile_radius)
        self.ref_tiles[group] = tiles.reshape(side, -1, side).transpose(1, 0, 2)
        self.ref_centres[group] = centres

    def _update_affinity(self, ok: np.ndarray, moved: np.ndarray) -> None:
        """Running mean squared step difference between points both visible, (N, K) in place."""
        both = ok[:, None] & ok[self.neighbours]
        gap = np.sum((moved[:, None] - moved[self.neighbours]) ** 2, axis=-1)
        self.cost[both] += self.cfg.affinity_rate * (gap[both] - self.cost[both])

    def _carry(
        self, hidden: np.ndarray, ok: np.ndarray, moved: np.ndarray, image: np.ndarray
    ) -> np.ndarray:
        """Steps (M, 2) to the next frame, float32 (H, W) ``image``, of hidden points (M,).

        Anchors are the neighbours that have moved like the point and are visible both now and
        in its reference frame: a similarity fitted from their reference-frame positions to
        their new ones carries the point's reference position, unless one anchor's translation
        shows the point's reference centre clearly better (``_pick``). Without anchors, the
        median step of its visible like-moving neighbours, else its own last step.
        """
        cfg = self.cfg
        nb = self.neighbours[hidden]
        alike = ok[nb] & (self.cost[hidden] <= cfg.cost_max)
        steps = self.step[hidden].copy()
        has = alike.any(axis=1)
        if has.any():
            candidates = np.where(alike[has][..., None], moved[nb[has]], np.nan)
            steps[has] = np.nanmedian(candidates, axis=1)

        ref = self.ref_frame[hidden][:, None]
        anchor = alike & self.visible[ref, nb]
        fit = anchor.any(axis=1)
        if fit.any():
            z = as_complex(self.positions[ref[fit], nb[fit]])
            w = as_complex(self.pos[nb[fit]] + moved[nb[fit]])
            count = anchor[fit].sum(axis=1)
            z_mean = np.sum(np.where(anchor[fit], z, 0), axis=1) / count
            w_mean = np.sum(np.where(anchor[fit], w, 0), axis=1) / count
            zc = np.where(anchor[fit], z - z_mean[:, None], 0)
            wc = np.where(anchor[fit], w - w_mean[:, None], 0)
            reg = cfg.similarity_prior
            a = (np.sum(np.conj(zc) * wc, axis=1) + reg) / (np.sum(np.abs(zc) ** 2, axis=1) + reg)
            target = a * (as_complex(self.ref_pos[hidden[fit]]) - z_mean) + w_mean
            target = self._pick(hidden[fit], target, anchor[fit], z, w, image)
            steps[fit] = np.stack([target.real, target.imag], -1) - self.pos[hidden[fit]]
        return steps

    def _centre_residual(
        self, image: np.ndarray, points: np.ndarray, group: np.ndarray
    ) -> np.ndarray:
        """Residual (M,) of the ``glimpse_patch`` centre of the reference patches of points
        (M,) seen in float32 ``image`` (H, W) at (M, 2) (x, y) ``points``."""
        size, crop = self.cfg.glimpse_patch, (self.cfg.patch - self.cfg.glimpse_patch) // 2
        side = slice(crop, crop + size)
        ref = self.ref_templates[group].reshape(-1, self.cfg.patch, self.cfg.patch)
        templates = ref[:, side, side].reshape(len(group), -1)
        _, residual = compare_patches(
            patches_at(image, points, size), templates, self.centre_weights
        )
        return residual

    def _pick(
        self,
        group: np.ndarray,
        target: np.ndarray,
        anchor: np.ndarray,
        before: np.ndarray,
        after: np.ndarray,
        image: np.ndarray,
    ) -> np.ndarray:
        """Where to carry hidden points (M,): their similarity target (M,) complex, or the
        reference position moved by one anchor's translation, whichever shows the centre of
        the reference patch best in ``image`` (H, W) float32 (the target wins ties within
        ``pick_margin``). anchor: (M, K) bool; before, after: (M, K) complex neighbour
        positions in the reference frame and in ``image``. Returns (M,) complex."""
        cand = np.concatenate(
            [target[:, None], as_complex(self.ref_pos[group])[:, None] + after - before], 1
        )
        rows, cols = np.nonzero(np.concatenate([np.ones((len(group), 1), bool), anchor], 1))
        points = np.stack([cand[rows, cols].real, cand[rows, cols].imag], -1).astype(np.float32)
        cost = np.full(cand.shape, np.inf)
        cost[rows, cols] = self._centre_residual(image, points, group[rows])
        cost[:, 0] -= self.cfg.pick_margin
        return cand[np.arange(len(group)), np.argmin(cost, axis=1)]

    def _glimpse(self, s: int, hidden: np.ndarray, image: np.ndarray) -> None:
        """Report hidden points (M,) as visible at ``s`` (without resuming tracking) when the
        centre of their reference patch is seen at their carried position."""
        cfg = self.cfg
        hidden = hidden[inside_frame(self.pos[hidden], self.height, self.width)]
        if not hidden.size:
            return
        residual = self._centre_residual(image, self.pos[hidden], hidden)
        self.glimpsed[s, hidden] = residual < cfg.glimpse_max

    def _recover(self, s: int, hidden: np.ndarray, image: np.ndarray) -> None:
        """Track hidden points (M,) inside frame ``s`` straight from their reference frames
        (starting from the carried positions); those that pass the checks are visible again.

        One LK call for all: each point's reference tile and a tile of frame ``s`` around its
        carried position are laid side by side in two strips.
        """
        radius = self.cfg.tile_radius
        hidden = hidden[inside_frame(self.pos[hidden], self.height, self.width)]
        if not hidden.size:
            return
        side = 2 * radius + 1
        shift = np.arange(hidden.size)[:, None] * np.array([side, 0]) + radius
        ref_strip = np.ascontiguousarray(
            self.ref_tiles[hidden].transpose(1, 0, 2).reshape(side, -1)
        )
        centres = np.round(self.pos[hidden]).astype(int)
        strip = tiles_around(self.gray[s], centres, radius)
        start = self.ref_pos[hidden] - self.ref_centres[hidden] + shift
        guess = self.pos[hidden] - centres + shift
        p1, lk_ok, fb = self._lk(ref_strip, strip, start, guess)
        p1 = p1 - shift + centres
        inside_tile = np.all(np.abs(p1 - centres) < radius - self.cfg.win_size, axis=1)
        good, conf = self._accept(image, p1, lk_ok & inside_tile, fb, self.ref_templates[hidden])
        found = hidden[good]
        self.pos[found] = p1[good]
        self.shown[found] = True
        self.confidence[s, found] = conf[good]
        self.templates[found] = self.ref_templates[found]
