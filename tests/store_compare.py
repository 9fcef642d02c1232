"""Comparing two stores' content (test helper)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mosic.store_schema import TrackStore


def store_content(path: Path) -> tuple[dict, set]:
    """{key: (frames, positions, visible)} of every indexed video, and the failed sources."""
    store = TrackStore.open(path)
    videos = {}
    for key in store.keys():
        data = store.read_video(key)
        videos[key] = (data.frames, data.positions, data.visible)
    failures = {(Path(f.source).name, f.stage) for f in store.failures()}
    return videos, failures


def assert_same_content(a: Path, b: Path) -> None:
    """Same video set, same frames, tracks equal within float tolerance, same failures."""
    videos_a, failures_a = store_content(a)
    videos_b, failures_b = store_content(b)
    assert sorted(videos_a) == sorted(videos_b)
    assert failures_a == failures_b
    for key, (frames, positions, visible) in videos_a.items():
        np.testing.assert_array_equal(frames, videos_b[key][0])
        np.testing.assert_allclose(positions, videos_b[key][1], atol=1e-3, equal_nan=True)
        np.testing.assert_array_equal(visible, videos_b[key][2])
    assert len(store_content(a)[0]) == len(TrackStore.open(a).records())
