"""Windows that hold several query sets: grouping, frame-passes, and the same tracks."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from mosic.cli import app
from mosic.pipeline.extract import ExtractConfig, open_store
from mosic.stages.queries import (
    default_window,
    frame_passes,
    grid_points,
    long_video_frame_passes,
    query_frames,
    track_query_sets,
    windows,
)
from mosic.stages.synthetic import make_video, write_video_file
from mosic.stages.trackers import build_tracker
from mosic.stages.trackers.base import TrackResult
from mosic.stages.trackers.cotracker import CoTrackerTracker
from mosic.store_schema import StoreError, TrackStore


def spans(starts: np.ndarray, horizon: int, groups: list[np.ndarray]) -> list[int]:
    return [int(starts[g[-1]] + horizon - starts[g[0]]) for g in groups]


@pytest.mark.parametrize("num_frames", [67, 68, 75, 120, 135, 300, 1000])
@pytest.mark.parametrize("window", [67, 75, 100, 123, 131, 500])
def test_windows_fit_cover_every_set_once_and_are_as_few_as_fit(num_frames, window):
    starts = query_frames(num_frames, 8, 67)
    groups = windows(starts, 67, window)
    assert np.array_equal(np.concatenate(groups), np.arange(len(starts)))
    assert all(span <= window for span in spans(starts, 67, groups))
    per_window = (window - 67) // 8 + 1  # sets one window can hold
    assert len(groups) == -(-len(starts) // per_window)
    sizes = [len(g) for g in groups]
    assert max(sizes) - min(sizes) <= 1  # even: no window much longer than the others


def test_frame_passes_of_the_defaults():
    # One set per window (the old default, --window 67 = --horizon): each frame ~8 times.
    assert frame_passes(10_000, 8, 67, 67) == pytest.approx(67 / 8, rel=0.01)
    for window in (67, 75, 123, 200):
        long = long_video_frame_passes(8, 67, window)
        assert frame_passes(100_000, 8, 67, window) == pytest.approx(long, rel=0.01)
    # The trackers' defaults on a long video: lk at most 2, CoTracker3 (two sets) 75 / 16.
    lk = default_window(build_tracker("lk").window_sets, 67, 8)
    assert frame_passes(10_000, 8, 67, lk) <= 2
    assert frame_passes(10_000, 8, 67, default_window(2, 67, 8)) == pytest.approx(75 / 16, 0.01)
    # A YouTube-VOS-length video (135 frames: sets at 0, 8, ..., 64): 9 x 67 frames before,
    # two windows of 5 and 4 sets (99 + 91 frames) with lk's window.
    assert frame_passes(135, 8, 67, 67) == pytest.approx(9 * 67 / 135)
    assert frame_passes(135, 8, 67, lk) == pytest.approx((99 + 91) / 135)
    assert default_window(8, 67, 8, most=100) == 100 and default_window(8, 67, 8, most=50) == 67
    # lk's default stays within 2 whatever the video's length.
    assert max(frame_passes(t, 8, 67, lk) for t in range(67, 3000)) <= 2


class RecordingTracker:
    """Returns, for query i of a window, positions (frame index in the video, i) so that the
    test can see which rows and columns went where; records each call's frames and horizon."""

    name, version, window_sets = "recording", "1", 1

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int | None]] = []

    def params(self) -> dict:
        return {}

    def track(self, frames, queries, horizon=None):
        raise AssertionError("the pipeline calls track_batch")

    def track_batch(self, videos, horizon=None):
        results = []
        for frames, queries in videos:
            first = int(frames[0, 0, 0, 0])  # each frame holds its own index
            self.calls.append((first, len(frames), horizon))
            t = np.arange(len(frames), dtype=np.float32)[:, None]
            column = np.arange(len(queries), dtype=np.float32)[None] % 7
            positions = np.stack(np.broadcast_arrays(first + t, column), -1)
            visible = t >= queries[None, :, 0]
            results.append(TrackResult(positions.astype(np.float32), visible))
        return results


def test_each_set_gets_its_own_rows_and_the_frames_tracked_are_counted():
    frames = np.broadcast_to(np.arange(100, dtype=np.uint8)[:, None, None, None], (100, 4, 4, 3))
    starts = query_frames(100, 8, 20)  # 0, 8, ..., 80: 11 sets
    points = np.zeros((3, 2), np.float32)
    tracker = RecordingTracker()
    tracks = track_query_sets(tracker, frames, starts, points, 20, window=44)

    assert [c[2] for c in tracker.calls] == [20] * len(tracker.calls)  # told the horizon
    assert [c[:2] for c in tracker.calls] == [(0, 44), (32, 44), (64, 36)]  # 4 + 4 + 3 sets
    assert tracks.tracked_frames == 44 + 44 + 36
    for q, start in enumerate(starts):  # set q's rows are frames start .. start + 19
        np.testing.assert_array_equal(tracks.positions[q, :, 0, 0], start + np.arange(20))
        assert tracks.visible[q].all()
    np.testing.assert_array_equal(tracks.positions[1, 0, :, 1], [3, 4, 5])  # its own columns


def test_lk_tracks_are_the_same_in_one_set_and_multi_set_windows():
    video = make_video(2, num_frames=60, height=96, width=128).frames
    starts = query_frames(60, 6, 20)
    points = grid_points(96, 128, 8)
    lk = build_tracker("lk")
    one = track_query_sets(lk, video, starts, points, 20, window=20)
    multi = track_query_sets(lk, video, starts, points, 20, window=60)

    assert (one.tracked_frames, multi.tracked_frames) == (7 * 20, 56)
    assert not one.visible.all()  # points get hidden and recovered: the hard part agrees too
    np.testing.assert_array_equal(multi.positions, one.positions)
    np.testing.assert_array_equal(multi.visible, one.visible)
    # NCC sums over more rows at once round differently in the last bit: 1e-7, no decision.
    np.testing.assert_allclose(multi.confidence, one.confidence, atol=1e-6)


def test_lk_stops_a_query_after_its_horizon():
    video = make_video(0, num_frames=30, height=64, width=96).frames
    queries = np.array([[0, 40, 30], [10, 40, 30]], np.float32)
    lk = build_tracker("lk")
    bounded = lk.track(video, queries, horizon=8)
    full = lk.track(video, queries)
    for q, start in enumerate((0, 10)):
        rows = slice(start, start + 8)
        np.testing.assert_array_equal(bounded.positions[rows, q], full.positions[rows, q])
        assert np.isnan(bounded.positions[start + 8 :, q]).all()
        assert not bounded.visible[start + 8 :, q].any()
    assert not np.isnan(full.positions[20:, 0]).any()


def test_extraction_reports_and_records_frame_passes(tmp_path):
    videos, store = tmp_path / "videos", tmp_path / "tracks.zarr"
    write_video_file(make_video(0, num_frames=40, height=48, width=64), videos / "a.mp4")
    args = ["extract-tracks", str(videos), "--store", str(store), "--size", "64x48"]
    args += ["--grid", "4", "--query-every", "4", "--horizon", "9", "--workers", "0"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # 8 sets (0, 4, ..., 28), lk's window of 8 sets = 9 + 7 * 4 = 37 frames: one window.
    assert "0.93 tracker frame-passes per stored frame" in result.output
    extraction = TrackStore.open(store).extraction
    assert extraction["window"] == 37
    assert extraction["frame_passes"] == pytest.approx(37 / 32, abs=1e-3)

    other = ExtractConfig(grid=4, query_every=4, horizon=9, size="64x48", window=9)
    with pytest.raises(StoreError, match="window differ"):  # its tracks would differ
        open_store(str(store), other)
    same = ExtractConfig(grid=4, query_every=4, horizon=9, size="64x48", window=37)
    assert open_store(str(store), same)[0].keys() == ["a"]  # the default, given explicitly


def test_window_over_the_trackers_limit_is_refused_before_any_video():
    tracker = build_tracker("lk")
    tracker.max_frames = 100  # as CoTracker3's max_frames
    with pytest.raises(ValueError, match="at most 100 frames per call"):
        ExtractConfig(window=110).window_for(tracker)
    assert ExtractConfig().window_for(tracker) == 100  # the default stays inside the limit
    assert ExtractConfig(window=90).window_for(tracker) == 90


def test_the_default_grid_is_the_trackers_and_recorded(tmp_path):
    # CoTracker3 seeds 32 x 32 (256 points in any crop), lk 16 x 16 (its speed on one core).
    assert (CoTrackerTracker.default_grid, build_tracker("lk").default_grid) == (32, 16)
    videos, store = tmp_path / "videos", tmp_path / "tracks.zarr"
    write_video_file(make_video(0, num_frames=20, height=48, width=64), videos / "a.mp4")
    args = ["extract-tracks", str(videos), "--store", str(store), "--size", "64x48"]
    args += ["--query-every", "4", "--horizon", "9", "--workers", "0"]  # no --grid
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    opened = TrackStore.open(store)
    assert opened.extraction["grid"] == 16
    assert opened.read_clip("a", 0, 2, 1)[1].shape == (2, 16 * 16, 2)
    explicit = ExtractConfig(grid=16, query_every=4, horizon=9, size="64x48")
    assert open_store(str(store), explicit)[0].keys() == ["a"]  # the default, given explicitly
