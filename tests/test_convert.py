"""Version 1 stores: refused with a message, converted by `mosic store convert`, and a
missing or damaged chunk never read as blank data."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from mosic.cli import app
from mosic.store_schema import CorruptVideo, TrackStore
from mosic.store_schema.v1 import V1Store, write_v1_store
from mosic.store_schema.validate import validate_store
from tests.test_store import EXTRACTION, make_data, psnr

VIDEOS = {"a": make_data(0, t=70), "b": make_data(1), "c": make_data(2, t=20)}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def v1(tmp_path):
    return write_v1_store(tmp_path / "old.zarr", EXTRACTION, VIDEOS)


def test_a_v1_store_is_refused_with_the_convert_command(v1):
    result = run("store", "info", v1)
    assert result.exit_code == 2
    assert (
        "a store of schema version 1; this mosic reads version 2: convert it with `mosic "
        f"store convert {v1} NEW.zarr`" in result.output
    )
    assert run("store", "validate", v1).exit_code == 1


@pytest.mark.parametrize("codec", ["raw", "jpeg"])
def test_convert_copies_every_video(v1, tmp_path, codec):
    new = tmp_path / "new.zarr"
    result = run("store", "convert", v1, new, "--frame-codec", codec, "--videos-per-part", 2)
    assert result.exit_code == 0, result.output
    assert "converted 3 videos (120 frames)" in result.output
    store = TrackStore.open(new)
    assert validate_store(store, deep=True).ok
    assert store.keys() == ["a", "b", "c"] and len(store.part_names()) == 2
    for key, data in VIDEOS.items():
        back = store.read_video(key)
        if codec == "raw":
            np.testing.assert_array_equal(back.frames, data.frames)
        else:
            assert psnr(back.frames, data.frames) > 38
        np.testing.assert_allclose(back.positions, data.positions, atol=1 / 64)
        np.testing.assert_array_equal(back.visible, data.visible)
        assert back.meta == data.meta
    info = json.loads(run("store", "info", new, "--json").output)
    assert info["frames"] == 120 and info["frame_codec"]["name"] == codec


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("videos/a/frames/c/1/0/0/0", "frames: shard 1 (rows 64-) missing"),
        ("videos/a/visible/c/0/0/0", "visible: shard 0 (rows 0-) missing"),
        ("videos/a/positions/c/0/0/0/0", "positions: shard 0 (rows 0-) missing"),
    ],
)
def test_a_missing_v1_chunk_is_named_never_read_as_blank(v1, tmp_path, damage, reason):
    (v1 / damage).unlink()
    with pytest.raises(CorruptVideo, match=re.escape(reason)):
        V1Store.open(v1).read_video("a")
    result = run("store", "convert", v1, tmp_path / "new.zarr")
    assert result.exit_code == 0, result.output
    assert "converted 2 videos" in result.output and "1 unreadable" in result.output
    assert f"a: {reason}" in result.output.replace("\n", " ") or reason in result.output
    store = TrackStore.open(tmp_path / "new.zarr")
    assert store.keys() == ["b", "c"]
    (failure,) = store.failures()
    assert (failure.key, failure.stage, failure.reason) == ("a", "convert", reason)
