"""`mosic extract-tracks` end to end: real videos, real store, re-runs and bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mosic.cli import app
from mosic.stages.queries import grid_points, query_frames, track_query_sets
from mosic.stages.synthetic import make_video, write_frame_folder, write_video_file
from mosic.stages.trackers import build_tracker
from mosic.stages.video_io import SizeSpec, VideoSource, read_video
from mosic.store_schema import TrackStore, video_key
from mosic.store_schema.validate import validate_store

SETTINGS = ["--grid", "4", "--query-every", "8", "--horizon", "9", "--workers", "0"]
FAST = [*SETTINGS, "--size", "128x96"]


def run(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Two good videos (an mp4 and a frame folder) and a zoo of bad ones."""
    src = tmp_path_factory.mktemp("videos")
    write_video_file(make_video(0, num_frames=30, height=96, width=128), src / "clip one.mp4")
    write_frame_folder(make_video(1, num_frames=26, height=96, width=128), src / "vidéo")
    (src / "not_a_video.mp4").write_bytes(os.urandom(2000))
    write_video_file(make_video(2, num_frames=5, height=96, width=128), src / "short.mp4")
    (src / "empty").mkdir()
    return src


def test_extract_writes_valid_store_and_records_failures(videos, tmp_path):
    store_path = tmp_path / "tracks.zarr"
    result = run("extract-tracks", videos, "--store", store_path, *FAST)
    assert result.exit_code == 0, result.output
    assert "done 2, skipped 0 (already complete), failed 3 of 5" in result.output

    store = TrackStore.open(store_path)
    assert sorted(store.keys()) == sorted([video_key("clip one.mp4"), video_key("vidéo")])
    assert validate_store(store).ok
    reasons = {f.source.rsplit("/", 1)[-1]: (f.stage, f.reason) for f in store.failures()}
    assert set(reasons) == {"not_a_video.mp4", "short.mp4", "empty"}
    assert "one clip needs 9" in reasons["short.mp4"][1]
    assert all("\n" not in r for _, r in reasons.values())

    info = json.loads(run("store", "info", store_path, "--json").output)
    assert info["videos"] == 2 and info["failures"] == 3
    assert info["frames"] == 30 + 26
    assert info["extraction"]["tracker"]["name"] == "lk"
    assert run("store", "validate", store_path).exit_code == 0


def test_stored_tracks_are_the_trackers_tracks_in_x_y(videos, tmp_path):
    store_path = tmp_path / "tracks.zarr"
    run("extract-tracks", videos, "--store", store_path, *FAST, "--frame-codec", "raw")
    source = VideoSource(videos / "clip one.mp4", "clip one.mp4")
    video = read_video(source, SizeSpec.parse("128x96"))
    t, h, w, _ = video.frames.shape
    starts = query_frames(t, 8, 9)
    window = TrackStore.open(store_path).extraction["window"]
    assert window == 9 + 7 * 8  # lk's default: 8 query sets per window
    lk = build_tracker("lk")
    expected = track_query_sets(lk, video.frames, starts, grid_points(h, w, 4), 9, window)

    stored = TrackStore.open(store_path).read_video(video_key("clip one.mp4"))
    np.testing.assert_array_equal(stored.frames, video.frames)  # --frame-codec raw: lossless
    np.testing.assert_array_equal(stored.query_frames, starts)
    np.testing.assert_allclose(stored.positions, expected.positions, atol=0.07)
    np.testing.assert_array_equal(stored.visible, expected.visible)
    # Query points are the grid cell centres, (x, y): x spans the width (128), y the height (96).
    np.testing.assert_allclose(stored.positions[0, 0], grid_points(96, 128, 4), atol=1e-2)
    assert stored.meta.original_size == (96, 128) and stored.meta.decoded_frames == 30


def test_rerun_skips_complete_videos_and_overwrite_redoes_them(videos, tmp_path):
    store_path = tmp_path / "tracks.zarr"
    run("extract-tracks", videos, "--store", store_path, *FAST)
    parts = sorted((store_path / "parts").iterdir())
    before = [p.stat().st_mtime_ns for p in parts]
    again = run("extract-tracks", videos, "--store", store_path, *FAST)
    assert "done 0, skipped 2" in again.output
    assert [p.stat().st_mtime_ns for p in sorted((store_path / "parts").iterdir())] == before
    over = run("extract-tracks", videos, "--store", store_path, *FAST, "--overwrite")
    assert "done 2, skipped 0" in over.output
    assert len(TrackStore.open(store_path).keys()) == 2


def test_interrupted_run_is_completed_without_redoing_finished_videos(videos, tmp_path):
    store_path = tmp_path / "tracks.zarr"
    run("extract-tracks", videos, "--store", store_path, *FAST, "--batch-videos", "1")
    # As if killed: both parts finished, neither indexed; then one of them half-written.
    store = TrackStore.open(store_path, mode="r+")
    empty = {"videos": 0, "frames": 0, "query_sets": 0, "bytes": 0}
    store.index.group.attrs.update({"count": 0, "totals": empty})
    result = run("extract-tracks", videos, "--store", store_path, *FAST)
    assert "done 0, skipped 2" in result.output  # indexed, not redone
    part = TrackStore.open(store_path).records()[1].part
    store.index.group.attrs.update({"count": 0, "totals": empty})
    (store_path / "parts" / part / "zarr.json").unlink()
    result = run("extract-tracks", videos, "--store", store_path, *FAST)
    assert "done 1, skipped 1" in result.output, result.output
    store = TrackStore.open(store_path)
    assert sorted(store.keys()) == sorted([video_key("clip one.mp4"), video_key("vidéo")])
    assert validate_store(store).ok
    assert len(store.part_names()) == 2  # the half-written part was removed


def test_other_settings_on_an_existing_store_are_refused(videos, tmp_path):
    store_path = tmp_path / "tracks.zarr"
    run("extract-tracks", videos, "--store", store_path, *FAST)
    result = run("extract-tracks", videos, "--store", store_path, *SETTINGS, "--size", "200")
    assert result.exit_code == 2
    assert "extracted with other settings (size differ)" in result.output


def test_exit_codes_strict_and_all_failed(videos, tmp_path):
    assert (
        run("extract-tracks", videos, "--store", tmp_path / "a", *FAST, "--strict").exit_code == 1
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mp4").write_bytes(b"nope")
    assert run("extract-tracks", bad, "--store", tmp_path / "b", *FAST).exit_code == 1
    missing = run("extract-tracks", tmp_path / "missing", "--store", tmp_path / "c")
    assert missing.exit_code == 2 and "missing" in missing.output


def test_same_key_from_two_sources_fails_the_second(tmp_path):
    src = tmp_path / "src"
    write_video_file(make_video(0, num_frames=12, height=96, width=128), src / "bear.mp4")
    write_frame_folder(make_video(1, num_frames=12, height=96, width=128), src / "bear")
    result = run("extract-tracks", src, "--store", tmp_path / "s", *FAST)
    assert "done 1" in result.output and "same store key 'bear'" in result.output


def test_visualize_writes_pictures_of_a_readable_size(videos, tmp_path):
    store_path = tmp_path / "tracks.zarr"
    run("extract-tracks", videos, "--store", store_path, *FAST, "--horizon", "24")
    key = video_key("clip one.mp4")
    for name in ("t.gif", "t.png", "t.mp4"):
        result = run("visualize", "tracks", store_path, key, "-o", tmp_path / name)
        assert result.exit_code == 0, result.output
        assert (tmp_path / name).stat().st_size > 1000
    assert "(12 frames" in result.output  # not all 24: about 12 by default
    with Image.open(tmp_path / "t.png") as sheet:
        assert sheet.size == (4 * 256, 3 * 192)  # 4 x 3 frames drawn at twice the size
    missing = run("visualize", "tracks", store_path, "clip_one", "-o", tmp_path / "x.gif")
    assert missing.exit_code == 2
    assert f"no video 'clip_one' among its 2 videos; close: {key}" in missing.output
    too_far = run(
        "visualize", "tracks", store_path, key, "--query-set", "99", "-o", tmp_path / "x.gif"
    )
    assert too_far.exit_code == 2 and "no query set 99; it has 1 (0 to 0)" in too_far.output
