"""The CPU tracker (``lk``) on generated videos: accuracy per condition, and speed on one core.

Accuracy: TAP-Vid metrics of ``lk`` on each suite of ``mosic.stages.tracking_suites`` (the
plain scene, each condition alone, all of them together) over the held-out seeds, with the
extraction's query protocol (a 16 x 16 grid every 8 frames, 67-frame horizon). Baseline of the
same run: bare pyramidal LK (OpenCV, forward-backward check only, no re-detection), on the same
videos.

Speed: video frames per CPU second (all threads of the process counted: a one-core figure) with
one OpenCV thread, on 341 x 256 videos (what extraction's default size, shorter side 256, makes
of a 4:3 video), with the extraction's query sets and lk's default window, at 16 x 16 and
32 x 32 grids, beside bare pyramidal LK on the same windows and points (the ratio is what
holds on a noisy machine). Prints tables and writes
``<out>/tracker_accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from mosic.stages.queries import grid_points, query_frames, track_query_sets
from mosic.stages.trackers import build_tracker
from mosic.stages.trackers.base import TrackResult
from mosic.stages.tracking_suites import (
    DEV_SEEDS,
    HELD_OUT_SEEDS,
    KEYS,
    SUITES,
    Protocol,
    mean_scores,
    score_video,
    suite_video,
)


class BareLK:
    """Pyramidal LK with a forward-backward check and nothing else (the baseline): a point
    failing the check is hidden for good."""

    name, version, window_sets = "bare-lk", "1", 8

    def track_batch(
        self, videos: list[tuple[np.ndarray, np.ndarray]], horizon: int | None = None
    ) -> list[TrackResult]:
        """``track`` on each (frames, queries) pair."""
        return [self.track(frames, queries, horizon) for frames, queries in videos]

    def track(
        self, frames: np.ndarray, queries: np.ndarray, horizon: int | None = None
    ) -> TrackResult:
        """Track (N, 3) queries ``(t, x, y)`` through (T, H, W, 3) uint8 frames, each for
        ``horizon`` frames (None: to the end)."""
        num_frames, n = len(frames), len(queries)
        start = np.round(queries[:, 0]).astype(int)
        end = start + (horizon or num_frames)
        positions = np.full((num_frames, n, 2), np.nan, np.float32)
        visible = np.zeros((num_frames, n), bool)
        pos = queries[:, 1:3].astype(np.float32).copy()
        alive = np.zeros(n, bool)
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        args = {"winSize": (5, 5), "maxLevel": 2}
        for s in range(start.min(), num_frames):
            alive |= start == s
            alive &= s < end
            active = (start <= s) & (s < end)
            positions[s, active], visible[s, active] = pos[active], alive[active]
            track = np.flatnonzero(alive)
            if s + 1 == num_frames or not track.size:
                continue
            p0 = pos[track].reshape(-1, 1, 2)
            p1, st1, _ = cv2.calcOpticalFlowPyrLK(gray[s], gray[s + 1], p0, None, **args)
            back, st2, _ = cv2.calcOpticalFlowPyrLK(gray[s + 1], gray[s], p1, None, **args)
            fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
            good = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb < 0.5)
            pos[track] = p1.reshape(-1, 2)
            alive[track[~good]] = False
        return TrackResult(positions, visible, None)


def accuracy(suites: list[str], seeds: tuple[int, ...]) -> dict:
    """Mean metrics of ``lk`` and the baseline per suite, {suite: {tracker: {key: value}}}."""
    trackers = {"lk": build_tracker("lk"), "bare-lk": BareLK()}
    result = {}
    for suite in suites:
        videos = [suite_video(suite, seed) for seed in seeds]
        result[suite] = {
            name: mean_scores([score_video(tracker, video) for video in videos])
            for name, tracker in trackers.items()
        }
        lk = result[suite]["lk"]
        print(f"  {suite:<12} " + "  ".join(f"{k} {lk[k]:.3f}" for k in KEYS), flush=True)
    return result


def speed(seeds: tuple[int, ...], grids: tuple[int, ...], suites: tuple[str, ...]) -> dict:
    """Video frames per CPU second of ``lk`` and of the baseline at each grid."""
    protocol = Protocol(height=256, width=341)
    videos = [suite_video(suite, seed, protocol).frames for suite in suites for seed in seeds]
    frames = sum(len(v) for v in videos)
    trackers = {"lk": build_tracker("lk"), "bare-lk": BareLK()}
    result = {}
    for grid in grids:
        for name, tracker in trackers.items():
            started = time.process_time()
            for video in videos:
                t, h, w = video.shape[:3]
                track_query_sets(
                    tracker,
                    video,
                    query_frames(t, protocol.query_every, protocol.horizon),
                    grid_points(h, w, grid),
                    protocol.horizon,
                    protocol.window,
                )
            result[f"{name}_grid{grid}_frames_per_s"] = frames / (time.process_time() - started)
        ratio = result[f"lk_grid{grid}_frames_per_s"] / result[f"bare-lk_grid{grid}_frames_per_s"]
        result[f"lk_over_bare_grid{grid}"] = ratio
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--seeds", choices=("held-out", "dev"), default="held-out")
    parser.add_argument("--videos", type=int, default=0, help="first N seeds only (0: all)")
    parser.add_argument("--suites", default=",".join(SUITES), help="comma-separated")
    parser.add_argument("--speed-videos", type=int, default=3)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    seeds = HELD_OUT_SEEDS if args.seeds == "held-out" else DEV_SEEDS
    seeds = seeds[: args.videos] if args.videos else seeds
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    for suite in suites:
        if suite not in SUITES:
            parser.error(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    print(f"lk accuracy, {args.seeds} seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} videos per suite)")
    result = {"seeds": list(seeds), "accuracy": accuracy(suites, seeds)}
    print(f"  {'suite':<12} {'AJ lk':>7} {'AJ bare':>8} {'ratio':>6}")
    for suite, scores in result["accuracy"].items():
        lk, bare = scores["lk"]["average_jaccard"], scores["bare-lk"]["average_jaccard"]
        print(f"  {suite:<12} {lk:7.3f} {bare:8.3f} {lk / bare:6.2f}")
    speed_seeds = HELD_OUT_SEEDS[: args.speed_videos]
    result["speed"] = speed(speed_seeds, (16, 32), ("easy", "all"))
    print(f"lk speed, one core, 341x256, {2 * len(speed_seeds)} videos (easy and all)")
    for grid in (16, 32):
        fps = result["speed"][f"lk_grid{grid}_frames_per_s"]
        bare = result["speed"][f"bare-lk_grid{grid}_frames_per_s"]
        print(
            f"  grid {grid}x{grid}: lk {fps:6.1f} frames/s, bare LK {bare:6.1f} frames/s "
            f"(ratio {fps / bare:.3f}); goal >= 30"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracker_accuracy.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
