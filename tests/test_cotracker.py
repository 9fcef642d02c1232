"""The CoTracker3 backend against stand-in predictors that follow co-tracker's contract.

The stand-ins mirror ``cotracker/predictor.py``: video (B, T, 3, H, W) float32 in 0..255,
queries (B, N, 3) ``(t, x, y)`` pixels, a 6x6 support grid appended and stripped, tracks
(B, T, N, 2) ``(x, y)``, visibility (B, T, N) bool (offline vis > 0.9, online vis * conf > 0.6),
and an online predictor driven by ``is_first_step`` then chunks. Their model moves every query
by ``motion`` (x, y) pixels per frame since its query frame; ``motion`` is the one weight, so
tracks that move prove the checkpoint was loaded. They are reached the way real co-tracker is:
through a clone's ``hubconf.py`` (``--tracker-repo``) or an installed ``cotracker`` package.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from mosic.stages.queries import grid_points, query_frames, track_query_sets
from mosic.stages.trackers import build_tracker
from mosic.stages.trackers.cotracker import CoTrackerUnavailable
from mosic.store_schema import TrackStore, video_key

MOTION = (1.5, -0.75)  # x, y pixels per frame, the stand-in's weights
VIS_INSIDE, VIS_OUTSIDE, CONFIDENCE = 0.95, 0.5, 0.7
SUPPORT = 36
BUILDS: list[str] = []  # hub entries called, to see when weights load


class StandInModel(torch.nn.Module):
    """Moves each query by ``motion`` per frame since its query frame; returns
    ``(tracks (B, T, N, 2), vis (B, T, N), confidence (B, T, N), None)`` like CoTrackerThree*.

    Online (``is_online=True``) it keeps ``online_ind``, checks each chunk starts there (frames
    of the online test hold their own index) and returns every frame seen so far.
    """

    def __init__(self, window_len: int):
        super().__init__()
        self.motion = torch.nn.Parameter(torch.zeros(2))
        self.window_len = window_len
        self.chunks: list[list[int]] = []

    def init_video_online_processing(self) -> None:
        self.online_ind = 0

    def forward(self, video, queries, iters=4, is_online=False):
        b, t, c, h, w = video.shape
        assert video.dtype == torch.float32 and c == 3 and float(video.max()) <= 255
        assert queries.dtype == torch.float32 and queries.shape[0] == b and queries.shape[2] == 3
        first = 0
        if is_online:
            assert t <= self.window_len
            self.chunks.append(video[0, :, 0, 0, 0].long().tolist())
            first = self.online_ind
            self.online_ind += self.window_len // 2
        frame = torch.arange(first + t, dtype=torch.float32)[None, :, None, None]
        since = (frame - queries[:, None, :, :1]).clamp(min=0)  # (B, T, N, 1)
        tracks = queries[:, None, :, 1:] + since * self.motion
        x, y = tracks[..., 0], tracks[..., 1]
        inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
        vis = torch.where(inside, VIS_INSIDE, VIS_OUTSIDE)
        return tracks, vis, torch.full_like(vis, CONFIDENCE), None


def _support_grid(b: int, h: int, w: int) -> torch.Tensor:
    """(B, 36, 3) queries at frame 0 on a 6x6 grid inside the frame."""
    ys, xs = torch.meshgrid(torch.linspace(2, h - 3, 6), torch.linspace(2, w - 3, 6), indexing="ij")
    grid = torch.stack([torch.zeros(SUPPORT), xs.flatten(), ys.flatten()], dim=1)
    return grid[None].repeat(b, 1, 1)


class StandInPredictor(torch.nn.Module):
    """CoTrackerPredictor's contract (no resizing: the stand-in model works at input size)."""

    def __init__(self, checkpoint=None, offline=True, v2=False, window_len=60):
        super().__init__()
        assert checkpoint is None and offline and not v2
        self.support_grid_size = 6
        self.model = StandInModel(window_len)

    @torch.no_grad()
    def forward(self, video, queries=None, segm_mask=None, grid_size=0, grid_query_frame=0):
        b, t, _, h, w = video.shape
        assert queries is not None and grid_size == 0
        queries = torch.cat([queries, _support_grid(b, h, w)], dim=1)
        tracks, visibilities, *_ = self.model.forward(video=video, queries=queries, iters=6)
        tracks, visibilities = tracks[:, :, :-SUPPORT], visibilities[:, :, :-SUPPORT] > 0.9
        for i in range(b):
            queries_t = queries[i, : tracks.size(2), 0].long()
            arange = torch.arange(len(queries_t))
            tracks[i, queries_t, arange] = queries[i, : tracks.size(2), 1:]
            visibilities[i, queries_t, arange] = True
        return tracks, visibilities


class StandInOnlinePredictor(torch.nn.Module):
    """CoTrackerOnlinePredictor's contract: queries on the first step, then chunks."""

    def __init__(self, checkpoint=None, offline=False, v2=False, window_len=16):
        super().__init__()
        assert checkpoint is None and not v2
        self.model = StandInModel(window_len)
        self.step = window_len // 2

    @torch.no_grad()
    def forward(
        self, video_chunk, is_first_step=False, queries=None, grid_size=5, add_support_grid=False
    ):
        b, _, _, h, w = video_chunk.shape
        if is_first_step:
            self.model.init_video_online_processing()
            self.N = queries.shape[1]
            grid = _support_grid(b, h, w)
            self.queries = torch.cat([queries, grid], dim=1) if add_support_grid else queries
            return None, None
        tracks, visibilities, confidence, _ = self.model(
            video=video_chunk, queries=self.queries, iters=6, is_online=True
        )
        if add_support_grid:
            tracks, visibilities = tracks[:, :, : self.N], visibilities[:, :, : self.N]
            confidence = confidence[:, :, : self.N]
        return tracks, visibilities * confidence > 0.6


HUBCONF = """
from tests.test_cotracker import BUILDS, StandInOnlinePredictor, StandInPredictor


def cotracker3_offline(*, pretrained=True, **kwargs):
    assert not pretrained
    BUILDS.append("cotracker3_offline")
    return StandInPredictor(checkpoint=None, window_len=60)


def cotracker3_online(*, pretrained=True, **kwargs):
    assert not pretrained
    BUILDS.append("cotracker3_online")
    return StandInOnlinePredictor(checkpoint=None, window_len=16)
"""

PACKAGE = """
from tests.test_cotracker import StandInOnlinePredictor as CoTrackerOnlinePredictor
from tests.test_cotracker import StandInPredictor as CoTrackerPredictor
"""


@pytest.fixture
def repo(tmp_path):
    """A clone-like folder: hubconf.py whose entries build the stand-ins."""
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "hubconf.py").write_text(HUBCONF)
    BUILDS.clear()
    return tmp_path / "repo"


def save_checkpoint(path, wrap: bool = False) -> str:
    """A state dict of the stand-in model with ``MOTION`` as its weight (``{"model": ...}``
    as co-tracker's training checkpoints are, with ``wrap``)."""
    state = {"motion": torch.tensor(MOTION)}
    torch.save({"model": state} if wrap else state, path)
    return str(path)


def expected_tracks(queries: np.ndarray, num_frames: int) -> np.ndarray:
    """(T, N, 2) (x, y): each query moved by MOTION per frame since its frame, NaN before."""
    t = np.arange(num_frames, dtype=np.float32)[:, None, None]
    since = t - queries[None, :, :1]
    positions = queries[None, :, 1:] + since * np.asarray(MOTION, np.float32)
    return np.where(since >= 0, positions, np.nan).astype(np.float32)


QUERIES = np.array([[0, 5, 7], [0, 50, 20], [3, 20.5, 30.25], [3, 10, 1]], np.float32)


def test_offline_tracks_are_the_models_tracks_in_x_y(repo, tmp_path):
    tracker = build_tracker(
        "cotracker3-offline",
        checkpoint=save_checkpoint(tmp_path / "scaled_offline.pth"),
        repo=str(repo),
        device="cpu",
    )
    frames = np.random.default_rng(0).integers(0, 256, (12, 40, 56, 3), dtype=np.uint8)
    result = tracker.track(frames, QUERIES)

    expected = expected_tracks(QUERIES, 12)
    assert result.positions.shape == (12, 4, 2) and result.positions.dtype == np.float32
    np.testing.assert_allclose(result.positions, expected, atol=1e-5)
    inside = (expected[..., 0] <= 55) & (expected[..., 1] >= 0)  # x < W, y >= 0
    np.testing.assert_array_equal(result.visible, inside)
    assert not result.visible[7:, 1].any()  # x = 50 + 1.5 t leaves the 56-wide frame
    assert not result.visible[:3, 2:].any() and result.visible[3, 2:].all()
    assert result.confidence.dtype == np.float32
    np.testing.assert_allclose(result.confidence, np.where(np.isnan(expected[..., 0]), 0, 0.7))


def test_weights_load_on_first_track_only(repo, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "scaled_offline.pth")
    tracker = build_tracker("cotracker3-offline", checkpoint=checkpoint, repo=str(repo))
    params = tracker.params()
    assert BUILDS == []  # name, version and params need no weights (the coordinator's use)
    assert tracker.name == "cotracker3-offline" and tracker.version == "cotracker3"
    with open(checkpoint, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    assert params == {
        "variant": "offline",
        "checkpoint": "scaled_offline.pth",
        "checkpoint_sha256": sha,
        "dtype": "float32",
        "max_frames": 128,
    }
    frames = np.zeros((6, 40, 56, 3), np.uint8)
    tracker.track_batch([(frames, QUERIES), (frames, QUERIES[:2])])
    tracker.track(frames, QUERIES)
    assert BUILDS == ["cotracker3_offline"]


def test_installed_package_and_wrapped_checkpoint(tmp_path, monkeypatch):
    package = tmp_path / "site" / "cotracker"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "predictor.py").write_text(PACKAGE)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == "cotracker" or m.startswith("cotracker.")]:
        monkeypatch.delitem(sys.modules, name)
    checkpoint = save_checkpoint(tmp_path / "ckpt.pth", wrap=True)
    tracker = build_tracker("cotracker3-offline", checkpoint=checkpoint)
    frames = np.zeros((8, 40, 56, 3), np.uint8)
    result = tracker.track(frames, QUERIES)
    np.testing.assert_allclose(result.positions, expected_tracks(QUERIES, 8), atol=1e-5)


@pytest.mark.parametrize("num_frames", [5, 8, 9, 16, 17, 21, 24, 30])
def test_online_is_driven_in_chunks_from_its_first_step(repo, tmp_path, num_frames):
    tracker = build_tracker(
        "cotracker3-online",
        checkpoint=save_checkpoint(tmp_path / "scaled_online.pth"),
        repo=str(repo),
    )
    frames = np.broadcast_to(
        np.arange(num_frames, dtype=np.uint8)[:, None, None, None], (num_frames, 40, 56, 3)
    )  # every pixel of frame t is t: the stand-in sees which frames each chunk holds
    result = tracker.track(np.ascontiguousarray(frames), QUERIES)

    chunks = tracker._load().model.chunks
    starts = range(0, max(num_frames - 8, 1), 8)
    assert chunks == [list(range(s, min(s + 16, num_frames))) for s in starts]
    expected = expected_tracks(QUERIES, num_frames)
    np.testing.assert_allclose(result.positions, expected, atol=1e-5)
    # vis * conf = 0.95 * 0.7 > 0.6 inside the frame, 0.5 * 0.7 outside
    inside = (expected[..., 0] <= 55) & (expected[..., 1] >= 0)
    np.testing.assert_array_equal(result.visible, inside)


def test_missing_checkpoint_says_where_it_goes(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(CoTrackerUnavailable) as missing:
        build_tracker("cotracker3-offline", repo=str(repo))
    message = str(missing.value)
    assert "\n" not in message
    assert "--tracker-checkpoint" in message and "scaled_offline.pth" in message
    with pytest.raises(CoTrackerUnavailable, match="no checkpoint at"):
        build_tracker("cotracker3-online", checkpoint=str(tmp_path / "nope.pth"), repo=str(repo))

    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    save_checkpoint(tmp_path / "hub" / "checkpoints" / "scaled_online.pth")
    tracker = build_tracker("cotracker3-online", repo=str(repo))  # torch hub's cache
    assert tracker.params()["checkpoint"] == "scaled_online.pth"


def test_missing_code_says_how_to_install(tmp_path, monkeypatch):
    checkpoint = save_checkpoint(tmp_path / "scaled_offline.pth")
    monkeypatch.setitem(sys.modules, "cotracker", None)  # not importable
    with pytest.raises(CoTrackerUnavailable) as missing:
        build_tracker("cotracker3-offline", checkpoint=checkpoint)
    message = str(missing.value)
    assert "\n" not in message
    assert "pip install -e" in message and "--tracker-repo" in message
    with pytest.raises(CoTrackerUnavailable, match="no hubconf.py"):
        build_tracker("cotracker3-offline", checkpoint=checkpoint, repo=str(tmp_path))


def test_long_windows_and_out_of_memory_name_the_frames(repo, tmp_path, monkeypatch):
    checkpoint = save_checkpoint(tmp_path / "scaled_offline.pth")
    tracker = build_tracker("cotracker3-offline", checkpoint=checkpoint, repo=str(repo))
    tracker.max_frames = 10
    with pytest.raises(ValueError, match="window of 12 frames is over max_frames=10"):
        tracker.track(np.zeros((12, 40, 56, 3), np.uint8), QUERIES)

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(tracker._load().model.forward, "forward", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory on a window of 9 frames"):
        tracker.track(np.zeros((9, 40, 56, 3), np.uint8), QUERIES)


def test_settings_are_checked_and_lk_is_unchanged(repo, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "scaled_offline.pth")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        build_tracker("cotracker3-offline", checkpoint=checkpoint, repo=str(repo), dtype="bfloat16")
    with pytest.raises(ValueError, match="dtype"):
        build_tracker("cotracker3-offline", checkpoint=checkpoint, repo=str(repo), dtype="int8")
    assert build_tracker("lk").name == "lk"


def test_extract_tracks_stores_the_models_motion(repo, tmp_path):
    from mosic.cli import app

    runner = CliRunner()
    videos, store = tmp_path / "videos", tmp_path / "tracks.zarr"
    made = runner.invoke(app, ["synth-videos", str(videos), "--count", "1", "--frames", "20"])
    assert made.exit_code == 0, made.output
    checkpoint = save_checkpoint(tmp_path / "scaled_offline.pth")
    args = ["extract-tracks", str(videos), "--store", str(store), "--size", "64x48"]
    args += ["--grid", "4", "--query-every", "8", "--horizon", "9", "--workers", "0"]
    args += ["--tracker", "cotracker3-offline", "--tracker-repo", str(repo)]
    args += ["--tracker-checkpoint", checkpoint]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "done 1" in result.output
    # Sets at 0 and 8; CoTracker3's default window holds two: 9 + 8 = 17 frames of 20.
    assert "0.85 tracker frame-passes per stored frame" in result.output

    stored = TrackStore.open(store).read_video(video_key("synth_000.mp4"))
    positions = stored.positions  # (Q, horizon, N, 2)
    assert positions.shape == (2, 9, 16, 2)
    step = np.arange(9, dtype=np.float32)[:, None, None] * np.asarray(MOTION, np.float32)
    for q in range(2):
        np.testing.assert_allclose(positions[q], grid_points(48, 64, 4)[None] + step, atol=1e-4)
    np.testing.assert_allclose(stored.confidence, 0.7, atol=1e-3)  # stored quantised
    attrs = zarr.open_group(store, mode="r").attrs.asdict()
    assert "cotracker3-offline" in str(attrs) and "scaled_offline.pth" in str(attrs)
    assert attrs["extraction"]["window"] == 17


@pytest.mark.parametrize("variant", ["offline", "online"])
def test_multi_set_windows_give_each_set_its_own_tracks(repo, tmp_path, variant):
    tracker = build_tracker(
        f"cotracker3-{variant}",
        checkpoint=save_checkpoint(tmp_path / f"scaled_{variant}.pth"),
        repo=str(repo),
    )
    frames = np.random.default_rng(1).integers(0, 256, (40, 40, 56, 3), dtype=np.uint8)
    starts = query_frames(40, 4, 12)  # 0, 4, ..., 28: 8 sets
    points = grid_points(40, 56, 3)
    one = track_query_sets(tracker, frames, starts, points, 12, window=12)
    multi = track_query_sets(tracker, frames, starts, points, 12, window=24)  # 4 sets a window

    assert (one.tracked_frames, multi.tracked_frames) == (8 * 12, 24 + 24)
    step = np.arange(12, dtype=np.float32)[:, None, None] * np.asarray(MOTION, np.float32)
    for q in range(len(starts)):  # the stand-in's motion from each set's own frame
        np.testing.assert_allclose(multi.positions[q], points[None] + step, atol=1e-4)
    np.testing.assert_allclose(multi.positions, one.positions, atol=1e-5)
    np.testing.assert_array_equal(multi.visible, one.visible)
    np.testing.assert_array_equal(multi.confidence, one.confidence)


def test_overlapped_windows_return_what_one_by_one_returns(repo, tmp_path):
    tracker = build_tracker(
        "cotracker3-offline",
        checkpoint=save_checkpoint(tmp_path / "scaled_offline.pth"),
        repo=str(repo),
    )
    rng = np.random.default_rng(2)
    windows = [
        (rng.integers(0, 256, (t, 40, 56, 3), dtype=np.uint8), QUERIES[: n + 1])
        for t, n in [(12, 3), (5, 1), (9, 2), (16, 0)]
    ]
    together = tracker.track_batch(windows, horizon=4)
    for (frames, queries), result in zip(windows, together, strict=True):
        alone = tracker.track(frames, queries)
        assert result.positions.shape == (len(frames), len(queries), 2)  # every row: no horizon
        np.testing.assert_array_equal(result.positions, alone.positions)
        np.testing.assert_array_equal(result.visible, alone.visible)
        np.testing.assert_array_equal(result.confidence, alone.confidence)
        np.testing.assert_allclose(result.positions, expected_tracks(queries, len(frames)))
    assert tracker.track_batch([]) == []


def test_tracker_dtype_flag_reaches_the_tracker(repo, tmp_path):
    from mosic.cli import app

    videos = tmp_path / "videos"
    runner = CliRunner()
    runner.invoke(app, ["synth-videos", str(videos), "--count", "1", "--frames", "12"])
    args = ["extract-tracks", str(videos), "--workers", "0", "--tracker-dtype", "bfloat16"]
    lk = runner.invoke(app, [*args, "--store", str(tmp_path / "a.zarr")])
    assert lk.exit_code == 2 and "'lk' does not take the options given (dtype)" in lk.output
    args += ["--tracker", "cotracker3-offline", "--tracker-repo", str(repo)]
    args += ["--tracker-checkpoint", save_checkpoint(tmp_path / "scaled_offline.pth")]
    cpu = runner.invoke(app, [*args, "--store", str(tmp_path / "b.zarr")])
    assert cpu.exit_code == 2 and "dtype bfloat16 needs a CUDA device" in cpu.output
