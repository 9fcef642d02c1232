"""Hidden points of the ``lk`` tracker: carried by their neighbours, found again.

A point that fails a step is lost: it is carried by its anchors (neighbours among the queries
of its start frame that have moved like it), through a similarity fitted to their motion since
the point's reference frame (a few frames before it was lost), or by the translation of the
single anchor that best shows the centre of its reference patch (a point next to a layer edge
then follows its own layer even when its neighbours straddle two). Every frame it is tracked
again straight from that reference, both tiles sampled along the point's frame so that a
turned surface still matches; when that long jump passes the step's checks against the
reference patch, tracking resumes. A lost point whose carried position shows the centre of its
reference patch is reported visible (it is usually right next to the edge of the surface that
hid it); a weak one, when its surface shows there again as plain as it was.
"""

from __future__ import annotations

import numpy as np

from mosic.stages.trackers.lk_motion import clip_zoom, fit_similarity, masked_median
from mosic.stages.trackers.lk_patches import (
    as_complex,
    as_points,
    compare_patches,
    inside_frame,
    patches_at,
)
from mosic.stages.trackers.lk_search import search_templates


class HiddenPoints:
    """What ``lk._Run`` does with hidden points (a mixin: it reads and writes the run's state:
    ``cfg``, ``pos``, ``frame``, ``frames``, ``positions``, ``visible``, ``shown``, ...)."""

    def init_hidden(self, n: int, num_frames: int) -> None:
        """The state of hidden points, for N queries over ``num_frames`` frames."""
        cfg = self.cfg
        side = 2 * cfg.tile_radius + 1
        self.glimpsed = np.zeros((num_frames, n), bool)
        self.ref_frame = self.start.copy()
        self.ref_pos = self.pos.copy()
        self.ref_templates = np.zeros_like(self.templates)
        self.ref_tiles = np.zeros((n, side * side), np.float32)
        self.hidden_for = np.zeros(n, int)
        self.anchored = np.zeros(n, bool)  # hidden and carried by anchors this frame

    def set_references(self, s: int, lost: np.ndarray) -> None:
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
            self.reference(lost[self.ref_frame[lost] == r], r)

    def reference(self, group: np.ndarray, r: int) -> None:
        """Cut the reference patches and tiles of points (M,) from frame ``r`` (window
        photometry) at ref_pos, sampled along their frames there."""
        cfg = self.cfg
        frames = self.frames[r, group]
        image = self.window[r]
        self.ref_templates[group] = patches_at(image, self.ref_pos[group], cfg.patch, frames)
        side = 2 * cfg.tile_radius + 1
        self.ref_tiles[group] = patches_at(image, self.ref_pos[group], side, frames)

    def carry(
        self, hidden: np.ndarray, ok: np.ndarray, moved: np.ndarray, image: np.ndarray
    ) -> np.ndarray:
        """Steps (M, 2) to the next frame, float32 (H, W) ``image``, of hidden points (M,).

        Anchors are the neighbours that have moved like the point and are visible both now and
        in its reference frame: a similarity fitted from their reference-frame positions to
        their new ones carries the point's reference position, unless one anchor's translation
        shows the point's reference centre clearly better (``pick``). Without anchors, the
        median step of its visible like-moving neighbours, else its own last step.
        """
        cfg = self.cfg
        nb = self.neighbours[hidden]
        alike = ok[nb] & (self.cost[hidden] <= cfg.cost_max)
        steps = self.step[hidden].copy()
        has = alike.any(axis=1)
        if has.any():
            steps[has] = masked_median(moved[nb[has]], alike[has])

        ref = self.ref_frame[hidden][:, None]
        anchor = alike & self.visible[ref, nb]
        fit = anchor.any(axis=1)
        self.anchored[:] = False
        self.anchored[hidden[fit]] = True
        if fit.any():
            group = hidden[fit]
            z = as_complex(self.positions[ref[fit], nb[fit]])
            w = as_complex(self.pos[nb[fit]] + moved[nb[fit]])
            a, z_mean, w_mean = fit_similarity(z, w, anchor[fit], cfg.similarity_prior)
            a = clip_zoom(a, cfg.max_zoom)
            target = a * (as_complex(self.ref_pos[group]) - z_mean) + w_mean
            nearest = anchor[fit] & (np.cumsum(anchor[fit], axis=1) <= cfg.pick_anchors)
            target = self.pick(group, target, nearest, z, w, image)
            steps[fit] = as_points(target) - self.pos[group]
        return steps

    def centre_residual(
        self, image: np.ndarray, points: np.ndarray, group: np.ndarray
    ) -> np.ndarray:
        """Residual (M,) of the ``glimpse_patch`` centre of the reference patches of points
        (M,) seen in float32 ``image`` (H, W) at (M, 2) (x, y) ``points``."""
        size, crop = self.cfg.glimpse_patch, (self.cfg.patch - self.cfg.glimpse_patch) // 2
        side = slice(crop, crop + size)
        ref = self.ref_templates[group].reshape(-1, self.cfg.patch, self.cfg.patch)
        templates = ref[:, side, side].reshape(len(group), -1)
        seen = patches_at(image, points, size, self.frame[group])
        _, residual = compare_patches(seen, templates, self.centre_weights)
        return residual

    def pick(
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
        cost = np.full(cand.shape, np.inf)
        cost[rows, cols] = self.centre_residual(image, as_points(cand[rows, cols]), group[rows])
        cost[:, 0] -= self.cfg.pick_margin
        return cand[np.arange(len(group)), np.argmin(cost, axis=1)]

    def glimpse(self, s: int, hidden: np.ndarray, image: np.ndarray) -> None:
        """Report hidden points (M,) as visible at ``s`` (without resuming tracking) when the
        centre of their reference patch is seen at their carried position; weak ones resume
        tracking when their surface shows there as plain as it was and a like-moving
        neighbour is tracked."""
        cfg = self.cfg
        hidden = hidden[inside_frame(self.pos[hidden], self.height, self.width)]
        weak = hidden[self.weak[hidden]]
        hidden = hidden[~self.weak[hidden]]
        if hidden.size:
            residual = self.centre_residual(image, self.pos[hidden], hidden)
            self.glimpsed[s, hidden] = residual < cfg.glimpse_max
        if weak.size:
            nb = self.neighbours[weak]
            support = (self.shown[nb] & (self.cost[weak] <= cfg.cost_max)).any(axis=1)
            seen = patches_at(image, self.pos[weak], cfg.patch, self.frame[weak])
            back = weak[support & self.plain(seen, self.templates[weak])]
            self.shown[back] = True

    def recover(self, s: int, hidden: np.ndarray, image: np.ndarray) -> None:
        """Track textured hidden points (M,) inside frame ``s`` straight from their reference
        frames (starting from the carried positions); those that pass the checks are visible
        again.

        One LK call for all: each point's reference tile and a tile of frame ``s`` around its
        carried position, both along the point's frame (canonical orientation), are laid side
        by side in two strips.
        """
        radius = self.cfg.tile_radius
        inside = inside_frame(self.pos[hidden], self.height, self.width)
        waited = self.hidden_for[hidden] - self.cfg.recover_often
        due = (waited < 0) | (waited % 2 == 0)
        hidden = hidden[inside & due & ~self.weak[hidden]]
        if not hidden.size:
            return
        side = 2 * radius + 1
        count = hidden.size
        frames = self.frame[hidden]
        tiles = patches_at(image, self.pos[hidden], side, frames)
        strip = _strip(tiles, side)
        ref_strip = _strip(self.ref_tiles[hidden], side)
        centre = np.arange(count)[:, None] * np.array([side, 0]) + radius
        p1, lk_ok, fb = self.lk(ref_strip, strip, centre.astype(np.float32), centre)
        offset = p1 - centre
        inside_tile = np.all(np.abs(offset) < radius - self.cfg.win_size, axis=1)
        found_at = as_points(as_complex(self.pos[hidden]) + frames * as_complex(offset))
        good, conf = self.accept(
            image, hidden, found_at, lk_ok & inside_tile, fb, self.ref_templates[hidden]
        )
        found = hidden[good]
        self.pos[found] = found_at[good]
        self.shown[found] = True
        self.confidence[s, found] = conf[good]
        self.templates[found] = self.ref_templates[found]

    def search(self, s: int, hidden: np.ndarray, image: np.ndarray) -> None:
        """Look for textured hidden points (M,) that no neighbour carries (their surface is
        hidden or out of the frame), every ``search_every`` frames from ``search_after``
        frames hidden on, within ``search_radius`` of their carried positions (moved into the
        frame: a surface that left comes back where it left), by their reference patches
        (``search_templates``); a place that also passes the step's checks makes a point
        visible again."""
        cfg = self.cfg
        waited = self.hidden_for[hidden] - cfg.search_after
        due = (waited >= 0) & (waited % cfg.search_every == 0)
        hidden = hidden[due & ~self.weak[hidden] & ~self.anchored[hidden]]
        if not hidden.size:
            return
        half = cfg.patch // 2
        high = np.array([self.width - 1 - half, self.height - 1 - half], np.float32)
        centres = np.clip(self.pos[hidden], half, high)
        found_at, score = search_templates(
            image, centres, self.frame[hidden], self.ref_templates[hidden],
            cfg.search_radius, cfg.patch,
        )  # fmt: skip
        good, conf = self.accept(
            image, hidden, found_at, score >= cfg.detect_min, np.zeros(len(hidden)),
            self.ref_templates[hidden],
        )  # fmt: skip
        found = hidden[good]
        self.pos[found] = found_at[good]
        self.shown[found] = True
        self.confidence[s, found] = conf[good]
        self.templates[found] = self.ref_templates[found]


def _strip(tiles: np.ndarray, side: int) -> np.ndarray:
    """(M, side * side) float tiles laid side by side, (side, M * side) uint8."""
    rows = tiles.reshape(-1, side, side).transpose(1, 0, 2).reshape(side, -1)
    return np.ascontiguousarray(np.clip(np.round(rows), 0, 255).astype(np.uint8))
