"""The store on disk: round trips, versioning, the index's commit point, validation, keys."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from mosic.store_schema import (
    Failure,
    StoreError,
    TrackStore,
    VideoData,
    VideoMeta,
    VideoRecord,
    video_key,
)
from mosic.store_schema.validate import validate_store

EXTRACTION = {"tracker": {"name": "lk", "version": "1"}, "grid": 4, "query_every": 8, "horizon": 9}


def make_data(seed: int = 0, t: int = 30, h: int = 24, w: int = 32) -> VideoData:
    rng = np.random.default_rng(seed)
    starts = np.arange(0, t - 9 + 1, 8, dtype=np.int32)
    q = len(starts)
    positions = rng.uniform(0, [w - 1, h - 1], size=(q, 9, 16, 2)).astype(np.float32)
    return VideoData(
        meta=VideoMeta("in/a.mp4", (480, 640), 30.0, t, 1),
        frames=rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8),
        query_frames=starts,
        positions=positions,
        visible=rng.random((q, 9, 16)) > 0.3,
        confidence=rng.random((q, 9, 16)).astype(np.float32),
    )


@pytest.fixture
def store(tmp_path):
    return TrackStore.create(tmp_path / "s.zarr", EXTRACTION)


def test_round_trip_through_store_api_and_plain_zarr(store):
    data = make_data()
    record = store.write_video("a", data)
    store.add_to_index([record])
    back = TrackStore.open(store.path).read_video("a")
    np.testing.assert_array_equal(back.frames, data.frames)
    np.testing.assert_array_equal(back.query_frames, data.query_frames)
    np.testing.assert_array_equal(back.visible, data.visible)
    # float16 positions: at most 1/64 px of error below 32 px.
    np.testing.assert_allclose(back.positions, data.positions, atol=1 / 64)
    np.testing.assert_allclose(back.confidence, data.confidence, atol=1e-3)
    assert back.meta == data.meta

    plain = zarr.open_group(store.path, mode="r")
    assert plain.attrs["mosic_store_version"] == 1
    count = plain["index"].attrs["count"]
    assert list(plain["index/key"][:count]) == ["a"]
    video = plain["videos/a"]
    np.testing.assert_array_equal(video["frames"][:], data.frames)
    np.testing.assert_array_equal(video["positions"][:], back.positions.astype(np.float16))
    assert video.attrs["complete"] is True


def test_read_clip_takes_exactly_the_clip_frames_and_tracks(store):
    data = make_data(t=40)
    store.add_to_index([store.write_video("a", data)])
    frames, positions, visible = store.read_clip("a", query_set=2, num_frames=3, step=4)
    start = int(data.query_frames[2])
    np.testing.assert_array_equal(frames, data.frames[start : start + 9 : 4])
    np.testing.assert_allclose(positions, data.positions[2, 0:9:4], atol=1 / 64)
    np.testing.assert_array_equal(visible, data.visible[2, 0:9:4])
    with pytest.raises(StoreError, match="no 3x5 clip"):
        store.read_clip("a", query_set=0, num_frames=3, step=5)


def test_other_schema_version_is_refused_with_a_clear_message(store):
    store.root.attrs["mosic_store_version"] = 99
    with pytest.raises(StoreError, match="schema version 99.*reads version 1"):
        TrackStore.open(store.path)


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a mosic store"):
        TrackStore.open(tmp_path)


def test_reopening_with_other_settings_is_refused(store):
    TrackStore.open_for_extraction(store.path, EXTRACTION)
    with pytest.raises(StoreError, match="grid differ"):
        TrackStore.open_for_extraction(store.path, {**EXTRACTION, "grid": 8})


def test_index_rows_become_visible_only_with_the_count(store):
    store.add_to_index([VideoRecord("a", 30, 24, 32, 3)])
    # A coordinator killed after writing rows but before the count: the row stays invisible.
    index = store.root["index"]
    index["key"][1] = "ghost"
    assert store.keys() == ["a"]
    store.add_to_index([VideoRecord("b", 40, 24, 32, 4), VideoRecord("a", 31, 24, 32, 3)])
    assert store.records() == [VideoRecord("a", 31, 24, 32, 3), VideoRecord("b", 40, 24, 32, 4)]


def test_index_grows_past_one_chunk(store, monkeypatch):
    monkeypatch.setattr("mosic.store_schema.layout.INDEX_CHUNK", 4)
    records = [VideoRecord(f"v{i}", i + 10, 8, 8, 1) for i in range(11)]
    store.add_to_index(records[:5])
    store.add_to_index(records[5:])
    assert TrackStore.open(store.path).records() == records


def test_incomplete_video_is_invisible_and_only_noted(store):
    store.add_to_index([store.write_video("a", make_data())])
    store.write_video("b", make_data(1))
    store.root["videos/b"].attrs["complete"] = False  # as if killed before the marker
    assert not store.is_complete("b")
    with pytest.raises(StoreError, match="no complete video"):
        store.read_video("b")
    report = validate_store(store)
    assert report.ok and report.videos == 1
    assert any("videos/b: incomplete" in note for note in report.notes)


def test_validate_finds_wrong_shapes_and_bad_positions(store):
    data = make_data()
    store.add_to_index([store.write_video("a", data)])
    assert validate_store(store, deep=True).ok
    video = store.root["videos/a"]
    bad = data.positions.copy()
    bad[0, 1, 2] = [1000.0, 5.0]
    visible = data.visible.copy()
    visible[0, 1, 2] = True
    video["positions"][:] = bad.astype(np.float16)
    video["visible"][:] = visible
    report = validate_store(store)
    assert report.problems == ["a/positions: visible points outside the frame"]
    del video["visible"]
    video.create_array("visible", shape=(1, 9, 16), dtype=bool)
    assert "a/visible: bool(1, 9, 16), expected bool(3, 9, 16)" in validate_store(store).problems


def test_validate_finds_a_corrupt_chunk_when_deep(store):
    store.add_to_index([store.write_video("a", make_data())])
    shard = next((store.path / "videos/a/frames/c").rglob("*"))
    while shard.is_dir():
        shard = next(shard.iterdir())
    shard.write_bytes(b"\x00garbage" * 10)
    report = validate_store(store, deep=True)
    assert len(report.problems) == 1 and "unreadable" in report.problems[0]


def test_failures_table_records_and_forgets(store):
    store.update_failures([Failure("x", "in/x.mp4", "decode", "not a video")], [])
    store.update_failures([Failure("y", "in/y", "decode", "no frames")], [])
    store.update_failures([], ["x"])
    assert TrackStore.open(store.path).failures() == [Failure("y", "in/y", "decode", "no frames")]
    json.dumps(store.root["failures"].attrs["failures"])  # plain JSON, nothing pickled


@pytest.mark.parametrize(
    "name",
    ["bear", "car-turn_2.mp4", "my clip.mp4", "vidéo ☃", "../../etc/passwd", "a/b/c.avi", ".."],
)
def test_video_keys_are_safe_path_components(name):
    key = video_key(name)
    assert key and "/" not in key and not key.startswith(".")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in key)
    assert ".." not in key.split("/")


def test_video_keys_keep_clean_names_and_separate_unclean_ones():
    assert video_key("bear") == "bear"
    assert video_key("car-turn_2.mp4") == "car-turn_2"
    assert video_key("my clip") != video_key("my_clip")
    assert video_key("a/b") != video_key("a_b")
    assert len(video_key("x" * 500)) <= 109
