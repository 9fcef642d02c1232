"""The plain-zarr example in docs/store.md runs on a real store."""

from __future__ import annotations

import re
from pathlib import Path

from mosic.store_schema import TrackStore
from tests.test_store import EXTRACTION, make_data

DOC = Path(__file__).parents[1] / "docs" / "store.md"


def test_plain_zarr_example_reads_a_store(tmp_path, monkeypatch):
    store = TrackStore.create(tmp_path / "tracks.zarr", EXTRACTION)
    data = make_data()
    store.add_to_index([store.write_video("first", data)])
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert "mosic" not in code.replace('"mosic_store_version"', "")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    assert namespace["frames"].shape == data.frames.shape
    assert namespace["positions"].shape == (9, 16, 2)
    assert list(namespace["keys"]) == ["first"]
