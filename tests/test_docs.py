"""The plain-zarr example in docs/store.md runs on a real store."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mosic.store_schema import FrameCodec, TrackStore
from tests.test_store import EXTRACTION, make_data, psnr, write

DOC = Path(__file__).parents[1] / "docs" / "store.md"


def test_plain_zarr_example_reads_a_store(tmp_path, monkeypatch):
    store = TrackStore.create(tmp_path / "tracks.zarr", EXTRACTION, FrameCodec("jpeg"))
    data = make_data()
    write(store, {"first": data, "second": make_data(1)})
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert "mosic" not in code.replace('"mosic_store_version"', "")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    assert namespace["frames"].shape == data.frames.shape
    assert psnr(namespace["frames"], data.frames) > 38
    assert namespace["positions"].shape == (9, 16, 2)
    np.testing.assert_allclose(namespace["positions"], data.positions[0], atol=1 / 64)
    np.testing.assert_array_equal(namespace["visible"], data.visible[0])
    assert namespace["keys"] == ["first", "second"]
