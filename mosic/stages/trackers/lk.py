"""The default CPU tracker: pyramidal Lucas-Kanade with occlusion handling, no weights.

Every frame pair, all visible points go through one forward and one backward
``cv2.calcOpticalFlowPyrLK`` call, and each landing point is refined to where its patch
matches the previous frame's by zero-mean normalised correlation (so a brightness or contrast
drift cannot bias the steps; ``lk_photometry``). The global gain and offset between the frames,
measured on those points, bring every frame into the photometry of the set's first frame,
where appearance is compared however long ago a template was cut. Patches are sampled along
each point's *frame*, the rotation and scale its like-moving neighbours have undergone since
its query frame, so a template stays valid on a turning object.

A step is kept when the forward and backward passes agree, it lands inside the frame, and the
patch there still looks like the point's template (NCC and an intensity residual). A point on
a plain surface (weak template) cannot be placed by its own patch: it takes the step of its
like-moving neighbours and stays visible while its patch stays plain and of the same mean.
A point that fails is hidden and carried by its neighbours until it is found again
(``lk_hidden``): re-tracked from its reference patch where its neighbours carry it, searched
for by that patch near where it was when nothing carries it (a surface that left the frame).
A scene cut (a frame whose thumbnail no longer correlates with the previous one while most
tracked points fail) hides every point started before it for good. Each query set (the
queries of one start frame) is tracked on its own, for its horizon.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import cv2
import numpy as np

from mosic.stages.trackers.base import TrackResult
from mosic.stages.trackers.lk_config import LKConfig
from mosic.stages.trackers.lk_hidden import HiddenPoints
from mosic.stages.trackers.lk_motion import (
    clip_zoom,
    fit_similarity_trimmed,
    masked_median,
    update_affinity,
)
from mosic.stages.trackers.lk_patches import (
    as_complex,
    as_points,
    compare_patches,
    gaussian_window,
    grid_neighbours,
    inside_frame,
    noise_sigma,
    patches_at,
    weighted_stats,
)
from mosic.stages.trackers.lk_photometry import light_step, refine_steps, with_gradients
from mosic.stages.trackers.lk_search import thumbnail, thumbnail_similarity


class LKTracker:
    """Pyramidal Lucas-Kanade point tracker (see the module docstring)."""

    name = "lk"
    version = "3"
    default_grid = 16  # >= 30 frames/s on one core at 256 px; 32 x 32: 12 (docs/trackers.md)
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

        The queries of each start frame (a query set) are tracked on their own, so a set's
        tracks are the same in any window (its neighbours, photometry and scene cuts are its
        own). Returns positions (T, N, 2) float32 (NaN before each query's frame and after
        its horizon), visible (T, N) and confidence (T, N) float32 in [0, 1]: 1 at the query
        frame, the NCC of the patch with the template times the forward-backward agreement
        after a tracked step, 0.5 for a point on a plain surface carried by its neighbours,
        0 where the point is hidden.
        """
        num_frames, n = len(frames), len(queries)
        result = TrackResult(
            np.full((num_frames, n, 2), np.nan, np.float32),
            np.zeros((num_frames, n), bool),
            np.zeros((num_frames, n), np.float32),
        )
        start = np.round(queries[:, 0]).astype(int) if n else np.zeros(0, int)
        gray: dict[int, np.ndarray] = {}
        for first in np.unique(start[(start >= 0) & (start < num_frames)]):
            rows = np.arange(first, min(num_frames, first + (horizon or num_frames)))
            for r in rows:
                if r not in gray:
                    gray[r] = cv2.cvtColor(frames[r], cv2.COLOR_RGB2GRAY)
            group = np.flatnonzero(start == first)
            local = queries[group].astype(np.float32).copy()
            local[:, 0] = 0
            run = _Run(self.config, [gray[r] for r in rows], local).result
            result.positions[rows[:, None], group] = run.positions
            result.visible[rows[:, None], group] = run.visible
            result.confidence[rows[:, None], group] = run.confidence
        return result


class _Run(HiddenPoints):
    """The tracking of one query set (or any queries) through (H, W) uint8 grey frames
    ``gray``; ``result`` holds the tracks."""

    def __init__(self, cfg: LKConfig, gray: list[np.ndarray], queries: np.ndarray) -> None:
        self.cfg = cfg
        num_frames = len(gray)
        self.height, self.width = gray[0].shape if gray else (0, 0)
        n = len(queries)
        self.start = np.round(queries[:, 0]).astype(int)
        self.positions = np.full((num_frames, n, 2), np.nan, np.float32)
        self.visible = np.zeros((num_frames, n), bool)
        self.confidence = np.zeros((num_frames, n), np.float32)
        self.result = TrackResult(self.positions, self.visible, self.confidence)
        if n == 0 or num_frames == 0:
            return
        self.gray = gray
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
        self.refine_weights = gaussian_window(cfg.refine_patch, cfg.refine_sigma)
        self.centre_weights = gaussian_window(cfg.glimpse_patch, cfg.glimpse_sigma)
        first = self.start.min()
        self.weak_bound = max(cfg.weak_std, cfg.weak_noise * noise_sigma(self.gray[first]))
        self.light = (1.0, 0.0)  # window photometry -> frame: pixel = gain * window + offset
        self.window = {first: self.gray[first].astype(np.float32)}
        self.window_u8 = {first: self.gray[first]}
        self.thumbs: dict[int, np.ndarray] = {}
        self.neighbours = grid_neighbours(queries, cfg.neighbours)
        self.cost = np.full(self.neighbours.shape, cfg.cost_max / 2, np.float32)
        self.origin = as_complex(queries[:, 1:3])
        self.pos = queries[:, 1:3].astype(np.float32).copy()
        self.shown = np.zeros(n, bool)
        self.severed = np.zeros(n, bool)  # started before a scene cut
        self.step = np.zeros((n, 2), np.float32)
        self.frame = np.ones(n, np.complex128)
        self.spin = np.zeros(n)  # running mean turn of each frame per frame (radians)
        self.frames = np.ones((num_frames, n), np.complex64)
        self.templates = np.zeros((n, cfg.patch**2), np.float32)
        self.weak = np.zeros(n, bool)
        self.init_hidden(n, num_frames)
        for s in range(first, num_frames):
            self._record(s)
            if s + 1 < num_frames:
                self._advance(s)
        self.result = TrackResult(self.positions, self.visible | self.glimpsed, self.confidence)

    def _record(self, s: int) -> None:
        """Start the queries of frame ``s`` and write the state into row ``s``."""
        new = np.flatnonzero(self.start == s)
        if new.size:
            self.shown[new] = inside_frame(self.pos[new], self.height, self.width)
            self.templates[new] = patches_at(self.window[s], self.pos[new], self.cfg.patch)
            self._set_weak(new)
            self.reference(new, s)
            self.confidence[s, new] = self.shown[new]
        active = self.start <= s
        self.positions[s, active] = self.pos[active]
        self.visible[s, active] = self.shown[active]
        self.frames[s, active] = self.frame[active]

    def _set_weak(self, group: np.ndarray) -> None:
        """Whether the templates of points (M,) are weak (a plain surface)."""
        _, std = weighted_stats(self.templates[group], self.weights)
        self.weak[group] = std < self.weak_bound

    def lk(
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

    def accept(
        self,
        image: np.ndarray,
        group: np.ndarray,
        points: np.ndarray,
        lk_ok: np.ndarray,
        fb: np.ndarray,
        templates: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The checks of a step of points (M,) of ``group``: (M,) bool accepted and (M,)
        float32 confidence in [0, 1].

        image: (H, W) float32 target frame in window photometry; points: (M, 2) where the step
        landed; templates: (M, P) canonical patches the landing patches must match (a weak
        point's only by staying plain, ``plain``).
        """
        cfg = self.cfg
        seen = patches_at(image, points, cfg.patch, self.frame[group])
        ncc, residual = compare_patches(seen, templates, self.weights)
        inside = inside_frame(points, self.height, self.width)
        agree = lk_ok & (fb < cfg.fb_threshold)
        textured = agree & (ncc > cfg.ncc_min) & (residual < cfg.residual_max)
        weak = self.weak[group]
        good = inside & np.where(weak, self.plain(seen, templates), textured)
        conf = np.clip(ncc, 0, 1) * np.clip(1 - fb / (2 * cfg.fb_threshold), 0, 1)
        self.seen = seen
        return good, np.where(weak, 0.5, conf).astype(np.float32)

    def plain(self, seen: np.ndarray, templates: np.ndarray) -> np.ndarray:
        """Whether (M, P) patches still show the plain surfaces of weak (M, P) templates: as
        plain (weighted std) and of about the same mean, (M,) bool."""
        cfg = self.cfg
        mean_s, std_s = weighted_stats(seen, self.weights)
        mean_t, std_t = weighted_stats(templates, self.weights)
        flat = std_s < cfg.plain_std * std_t + 0.5 * self.weak_bound
        return flat & (np.abs(mean_s - mean_t) < cfg.plain_mean * self.weak_bound)

    def _advance(self, s: int) -> None:
        """Move every started query from frame ``s`` to ``s + 1``."""
        cfg = self.cfg
        active = self.start <= s
        moved = np.zeros_like(self.pos)
        ok = np.zeros(len(self.pos), bool)
        track = np.flatnonzero(active & self.shown)
        previous, raw = self.gray[s].astype(np.float32), self.gray[s + 1].astype(np.float32)
        if track.size:
            p1, lk_ok, fb = self.lk(self.gray[s], self.gray[s + 1], self.pos[track])
            if cfg.refine_patch == cfg.patch:
                targets = self.templates[track]
            else:
                targets = patches_at(previous, self.pos[track], cfg.refine_patch, self.frame[track])
            p1 = refine_steps(
                with_gradients(raw), p1, targets, self.frame[track], self.refine_weights,
                cfg.refine_iterations,
            )  # fmt: skip
            sure = lk_ok & (fb < cfg.fb_threshold)
            step = light_step(previous, raw, self.pos[track[sure]], p1[sure], self.weights, 3.0)
            if step is not None:
                gain, offset = self.light
                self.light = (step[0] * gain, step[0] * offset + step[1])
        image = (raw - self.light[1]) / self.light[0]
        self.window[s + 1] = image
        self.window_u8[s + 1] = np.clip(np.round(image), 0, 255).astype(np.uint8)
        if track.size:
            good, conf = self.accept(image, track, p1, lk_ok, fb, self.templates[track])
            landed = self.seen
            if self._is_cut(s, good):
                self.severed[active] = True
                good[:] = False
            keep = track[good]
            ok[keep] = True
            moved[keep] = p1[good] - self.pos[keep]
            self.confidence[s + 1, keep] = conf[good]
            self.set_references(s, track[~good])

        self._spread_to_weak(ok, moved)
        self._place_weak(ok, moved)
        update_affinity(self.cost, self.neighbours, ok, moved, cfg.affinity_rate)
        hidden = np.flatnonzero(active & ~ok & ~self.severed)
        moved[hidden] = self.carry(hidden, ok, moved, image)
        self._turn_frames(np.flatnonzero(active & ~self.severed), ok, moved)
        self.pos[active] += moved[active]
        self.step[active] = moved[active]
        self.shown[:] = ok
        self.hidden_for[active & ~ok] += 1
        self.recover(s + 1, hidden, image)
        self.search(s + 1, hidden[~self.shown[hidden]], image)
        self.hidden_for[self.shown] = 0
        self.glimpse(s + 1, hidden[~self.shown[hidden]], image)
        if track.size:
            self._refresh(image, track[good], landed[good])

    def _refresh(self, image: np.ndarray, kept: np.ndarray, landed: np.ndarray) -> None:
        """Move the templates of points (M,) tracked through this step towards their (M, P)
        ``landed`` patches (weak points', placed by their neighbours, are cut again in float32
        ``image``)."""
        weak = self.weak[kept]
        if weak.any():
            group = kept[weak]
            landed = landed.copy()
            landed[weak] = patches_at(image, self.pos[group], self.cfg.patch, self.frame[group])
        self.templates[kept] += self.cfg.template_rate * (landed - self.templates[kept])
        self._set_weak(kept)

    def _is_cut(self, s: int, good: np.ndarray) -> bool:
        """Whether frame ``s + 1`` starts another shot: at least ``cut_lost`` of the (M,)
        tracked points failed (``good``) and its thumbnail no longer correlates with frame
        ``s``'s."""
        if np.mean(~good) < self.cfg.cut_lost:
            return False
        for f in (s, s + 1):
            if f not in self.thumbs:
                self.thumbs[f] = thumbnail(self.gray[f])
        return thumbnail_similarity(self.thumbs[s], self.thumbs[s + 1]) < self.cfg.cut_similarity

    def _spread_to_weak(self, ok: np.ndarray, moved: np.ndarray) -> None:
        """Weak tracked points take the median step of their like-moving neighbours whose step
        is known, spreading out from textured points for ``weak_spread`` rounds; weak points
        still without one are hidden. ok (N,) and moved (N, 2) in place."""
        known = ok & ~self.weak
        todo = ok & self.weak
        for _ in range(self.cfg.weak_spread):
            group = np.flatnonzero(todo)
            if not group.size:
                break
            nb = self.neighbours[group]
            use = known[nb] & (self.cost[group] <= self.cfg.cost_max)
            has = use.any(axis=1)
            if not has.any():
                break
            moved[group[has]] = masked_median(moved[nb[has]], use[has])
            known[group[has]] = True
            todo[group[has]] = False
        ok[todo] = False

    def _place_weak(self, ok: np.ndarray, moved: np.ndarray) -> None:
        """Weak tracked points with two textured like-moving tracked neighbours at least go
        where the similarity taking those neighbours from their query positions to their new
        ones takes the point's query position (no error adds up frame after frame). moved
        (N, 2) in place."""
        cfg = self.cfg
        group = np.flatnonzero(ok & self.weak)
        if not group.size:
            return
        nb = self.neighbours[group]
        anchor = ok[nb] & ~self.weak[nb] & (self.cost[group] <= cfg.cost_max)
        fit = anchor.sum(axis=1) >= 2
        if not fit.any():
            return
        group, nb, anchor = group[fit], nb[fit], anchor[fit]
        dst = as_complex(self.pos[nb] + moved[nb])
        a, z_mean, w_mean = fit_similarity_trimmed(
            self.origin[nb], dst, anchor, cfg.similarity_prior, self.frame[group], cfg.frame_trim
        )
        target = clip_zoom(a, cfg.max_zoom) * (self.origin[group] - z_mean) + w_mean
        moved[group] = as_points(target) - self.pos[group]

    def _turn_frames(self, group: np.ndarray, ok: np.ndarray, moved: np.ndarray) -> None:
        """Frames of points (M,): the similarity taking their like-moving tracked neighbours
        (and themselves when tracked) from their query positions to their new ones, pulled
        towards the previous frame turned once more by its last change (which it keeps
        without such neighbours)."""
        cfg = self.cfg
        nb = np.concatenate([group[:, None], self.neighbours[group]], axis=1)
        alike = np.concatenate(
            [np.ones((len(group), 1), bool), self.cost[group] <= cfg.cost_max], axis=1
        )
        anchor = ok[nb] & alike
        src = self.origin[nb]
        dst = as_complex(self.pos[nb] + moved[nb])
        expected = self.frame[group] * np.exp(1j * self.spin[group])
        a, _, _ = fit_similarity_trimmed(
            src, dst, anchor, cfg.frame_prior, expected, cfg.frame_trim
        )
        a = clip_zoom(a, cfg.max_zoom)
        turn = np.angle(a / self.frame[group])
        seen = anchor[:, 1:].any(axis=1)
        spin = self.spin[group]
        self.spin[group] = np.where(seen, spin + cfg.spin_rate * (turn - spin), cfg.coast * spin)
        self.frame[group] = a
