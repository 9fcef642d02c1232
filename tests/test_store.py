"""The store on disk: round trips, plain zarr, versioning, the index's commit point, parts,
checksums and validation, keys."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import zarr

from mosic.store_schema import (
    CorruptVideo,
    Failure,
    FrameCodec,
    StoreError,
    TrackStore,
    VideoData,
    VideoMeta,
    VideoRecord,
    encode_video,
    video_key,
)
from mosic.store_schema.errors import DamagedData
from mosic.store_schema.validate import validate_store

EXTRACTION = {"tracker": {"name": "lk", "version": "1"}, "grid": 4, "query_every": 8, "horizon": 9}


def smooth_frames(rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
    """Natural-ish frames (smooth gradients that move), which JPEG keeps at high PSNR."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6, 3)
    frames = [
        np.stack([127 + 100 * np.sin(x / 9 + y / 13 + k / 5 + p) for p in phase], -1)
        for k in range(t)
    ]
    return np.clip(frames, 0, 255).astype(np.uint8)


def make_data(seed: int = 0, t: int = 30, h: int = 24, w: int = 32) -> VideoData:
    rng = np.random.default_rng(seed)
    starts = np.arange(0, t - 9 + 1, 8, dtype=np.int32)
    q = len(starts)
    positions = rng.uniform(0, [w - 1, h - 1], size=(q, 9, 16, 2)).astype(np.float32)
    return VideoData(
        meta=VideoMeta("in/a.mp4", (480, 640), 30.0, t, 1),
        frames=smooth_frames(rng, t, h, w),
        query_frames=starts,
        positions=positions,
        visible=rng.random((q, 9, 16)) > 0.3,
        confidence=rng.random((q, 9, 16)).astype(np.float32),
    )


def write(store: TrackStore, videos: dict[str, VideoData]) -> list[VideoRecord]:
    """Write videos into one part and index them."""
    writer = store.part_writer()
    for key, data in videos.items():
        writer.append(encode_video(key, data, store.frame_codec))
    records = writer.close()
    store.add_to_index(records)
    return records


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


@pytest.fixture
def store(tmp_path):
    return TrackStore.create(tmp_path / "s.zarr", EXTRACTION, FrameCodec("raw"))


@pytest.mark.parametrize("codec", ["raw", "jpeg"])
def test_round_trip_through_store_api_and_plain_zarr(tmp_path, codec):
    store = TrackStore.create(tmp_path / "s.zarr", EXTRACTION, FrameCodec(codec, 90))
    data, other = make_data(), make_data(1, t=20)
    a, b = write(store, {"a": data, "b": other})
    assert (a.part, a.frame_start, a.track_start) == (b.part, 0, 0)
    assert (b.frame_start, b.track_start) == (30, 3)
    back = TrackStore.open(store.path).read_video("b")
    if codec == "raw":
        np.testing.assert_array_equal(back.frames, other.frames)
    else:
        assert psnr(back.frames, other.frames) > 38
    np.testing.assert_array_equal(back.query_frames, other.query_frames)
    np.testing.assert_array_equal(back.visible, other.visible)
    np.testing.assert_allclose(back.positions, other.positions, atol=1 / 64)  # float16
    np.testing.assert_allclose(back.confidence, other.confidence, atol=1e-3)
    assert back.meta == other.meta

    plain = zarr.open_group(store.path, mode="r")  # what docs/store.md shows, with no mosic
    assert plain.attrs["mosic_store_version"] == 2
    count = plain["index"].attrs["count"]
    assert list(plain["index/key"][:count]) == ["a", "b"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: variable-length bytes have no v3 spec yet
        part = plain[f"parts/{b.part}"]
        element = part["frames"][b.frame_start + 3 : b.frame_start + 4][0]  # a slice keeps NULs
        tracks = part["tracks"][b.track_start + 1]
    if codec == "raw":
        frame = np.frombuffer(element, np.uint8).reshape(24, 32, 3)
        np.testing.assert_array_equal(frame, other.frames[3])
    else:
        assert element[:2] == b"\xff\xd8"  # a JPEG file
    np.testing.assert_allclose(tracks[0], other.positions[1, ..., 0], atol=1 / 64)
    np.testing.assert_array_equal(tracks[2] == 1, other.visible[1])


def test_read_clip_takes_exactly_the_clip_frames_and_tracks(store):
    data = make_data(t=40)
    write(store, {"x": make_data(3), "a": data})
    frames, positions, visible = store.read_clip("a", query_set=2, num_frames=3, step=4)
    start = int(data.query_frames[2])
    np.testing.assert_array_equal(frames, data.frames[start : start + 9 : 4])
    np.testing.assert_allclose(positions, data.positions[2, 0:9:4], atol=1 / 64)
    np.testing.assert_array_equal(visible, data.visible[2, 0:9:4])
    with pytest.raises(StoreError, match="no 3x5 clip"):
        store.read_clip("a", query_set=0, num_frames=3, step=5)


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (99, "store schema version 99, this mosic reads version 2; re-extract"),
        ("1", "a store of schema version 1; this mosic reads version 2: convert it with `mosic "),
        (1, "a store of schema version 1; this mosic reads version 2: convert it"),
        (None, "not a mosic store \\(no mosic_store_version in its zarr.json\\)"),
    ],
)
def test_other_schema_versions_are_refused_with_a_clear_message(store, version, message):
    store.root.attrs["mosic_store_version"] = version
    with pytest.raises(StoreError, match=message) as error:
        TrackStore.open(store.path)
    assert "'" not in str(error.value).split("version")[1][:6]  # never version '1'


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a mosic store"):
        TrackStore.open(tmp_path)


def test_reopening_with_other_settings_is_refused(store):
    TrackStore.open_for_extraction(store.path, EXTRACTION, FrameCodec("raw"))
    with pytest.raises(StoreError, match="grid differ"):
        TrackStore.open_for_extraction(store.path, {**EXTRACTION, "grid": 8}, FrameCodec("raw"))
    with pytest.raises(StoreError, match="frame_codec differ"):
        TrackStore.open_for_extraction(store.path, EXTRACTION, FrameCodec("jpeg"))


def test_index_rows_and_totals_become_visible_only_with_the_count(store):
    store.add_to_index([VideoRecord("a", 30, 24, 32, 3, "p", 0, 0, 100)])
    # A coordinator killed after writing rows but before the count: the row stays invisible.
    store.index.group["key"][1] = "ghost"
    assert store.keys() == ["a"]
    store.add_to_index(
        [VideoRecord("b", 40, 24, 32, 4, "p", 30, 3, 50), VideoRecord("a", 31, 24, 32, 3, "q")]
    )
    assert [r.key for r in store.records()] == ["a", "b"]
    assert store.records()[0] == VideoRecord("a", 31, 24, 32, 3, "q")
    totals = TrackStore.open(store.path).index.totals
    assert totals == {"videos": 2, "frames": 71, "query_sets": 7, "bytes": 50}


def test_index_grows_past_one_chunk(store, monkeypatch):
    monkeypatch.setattr("mosic.store_schema.layout.INDEX_CHUNK", 4)
    records = [VideoRecord(f"v{i}", i + 10, 8, 8, 1, "p", i, i, 1) for i in range(11)]
    store.add_to_index(records[:5])
    store.add_to_index(records[5:])
    assert TrackStore.open(store.path).records() == records


def test_an_unfinished_part_is_invisible_noted_and_removed(store):
    write(store, {"a": make_data()})
    writer = store.part_writer()  # killed before close: no group zarr.json
    writer.append(encode_video("b", make_data(1), store.frame_codec))
    finished = store.part_writer()  # finished, but the coordinator died before indexing it
    finished.append(encode_video("c", make_data(2), store.frame_codec))
    finished.close()
    assert store.keys() == ["a"]
    with pytest.raises(StoreError, match="no video 'b'"):
        store.read_video("b")
    report = validate_store(store)
    assert report.ok and report.videos == 1
    assert any("half-written" in note for note in report.notes)
    assert any("1 videos not yet indexed" in note for note in report.notes)
    assert store.remove_unfinished_parts() == [writer.name]
    assert list(store.finished_parts()) == sorted(p for p in store.part_names())
    assert [r.key for r in store.finished_parts()[finished.name]] == ["c"]


def test_store_info_reads_no_part(store, tmp_path):
    from typer.testing import CliRunner

    from mosic.cli import app

    write(store, {"a": make_data(), "b": make_data(1)})
    shutil.rmtree(store.path / "parts")  # info must not need them
    result = CliRunner().invoke(app, ["store", "info", str(store.path), "--json"])
    info = json.loads(result.output)
    assert (info["videos"], info["frames"], info["query_sets"]) == (2, 60, 6)
    assert info["bytes"] > 2 * 30 * 24 * 32  # recorded at write time
    assert info["frame_codec"] == {"name": "raw", "quality": None}


def _damage(store: TrackStore, array: str, how: str) -> None:
    (part,) = store.part_names()
    path = next((store.path / "parts" / part / array).glob("c.*"))
    data = bytearray(path.read_bytes())
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # flip one bit inside the first chunk
        data[40] ^= 0x10
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["delete", "truncate", "flip"])
@pytest.mark.parametrize("array", ["frames", "tracks"])
def test_damaged_data_is_an_error_naming_the_video_never_garbage(tmp_path, array, how):
    store = TrackStore.create(tmp_path / "s.zarr", EXTRACTION, FrameCodec("jpeg"))
    write(store, {"a": make_data(), "b": make_data(1)})
    assert validate_store(store, deep=True).ok
    _damage(store, array, how)
    store = TrackStore.open(store.path)
    with pytest.raises(CorruptVideo, match="video 'a': .*(missing|checksum|truncated)") as e:
        store.read_clip("a", 0, 3, 4)
    assert "\n" not in str(e.value)
    report = validate_store(store, deep=True)
    assert not report.ok and all(p.startswith(("a:", "b:")) for p in report.problems)
    assert any(p.startswith("a:") for p in report.problems), report.problems


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


def test_validate_command_names_the_video_and_exits_1(tmp_path):
    from typer.testing import CliRunner

    from mosic.cli import app

    store = TrackStore.create(tmp_path / "s.zarr", EXTRACTION, FrameCodec("jpeg"))
    write(store, {"a": make_data(), "b": make_data(1)})
    runner = CliRunner()
    assert runner.invoke(app, ["store", "validate", str(store.path)]).exit_code == 0
    _damage(store, "frames", "flip")
    shallow = runner.invoke(app, ["store", "validate", str(store.path)])
    assert shallow.exit_code == 0  # frames are decoded only with --deep
    deep = runner.invoke(app, ["store", "validate", "--deep", str(store.path)])
    assert deep.exit_code == 1
    assert "problem: a: " in deep.output and "frames/c.0 row 0: checksum mismatch" in deep.output
    missing = runner.invoke(app, ["store", "validate", str(tmp_path / "nothing.zarr")])
    assert missing.exit_code == 1 and "not a mosic store" in missing.output


@pytest.mark.parametrize("name", ["jpeg", "raw"])
def test_a_frame_of_another_size_is_damaged_data_not_a_reshaped_frame(name):
    """A chunk whose frame is not the size the index records is refused with its place named,
    never decoded into (or broadcast over) the clip's buffer."""
    codec = FrameCodec(name)
    ramp = np.linspace(0, 255, 48, dtype=np.float32)[None, :, None] + np.zeros((32, 1, 3))
    frame = ramp.astype(np.uint8)
    body = codec.encode(frame)[:-4]  # the checked body: CRC32C removed
    out = np.zeros((32, 48, 3), np.uint8)
    assert codec.decode(body, 32, 48, "frames row 3", out) is out
    assert np.abs(out.astype(int) - frame).mean() < (2 if name == "jpeg" else 1e-9)
    for height, width in [(48, 32), (16, 48)] if name == "jpeg" else [(16, 48)]:
        with pytest.raises(DamagedData, match=r"^frames row 3: .*expected"):
            codec.decode(body, height, width, "frames row 3")
