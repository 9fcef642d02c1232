"""The trajectory benchmark end to end, small: training on correct tracks must make a point's
features more consistent along its ground-truth track (the margin over other points) than the
start model and than training without tracks (static points), as the full benchmark measured
on every seed (docs/reproduce.md: +0.8 and +2.3 points; x/y-swapped tracks were only 0.3 below
correct ones there, so they are not asserted).

Slow (several minutes on 2 cores): ``pytest -m slow``. CI runs the smaller check of the same
property, ``tests/test_track_handling.py`` (the read path keeps each point on its object and
the broken variants do not).
"""

from __future__ import annotations

import pytest
import yaml

from mosic.pipeline.reproduce import Locations, Reproduction
from mosic.pipeline.reproduce_config import load_rows
from tests.test_reproduce import CONFIGS

pytestmark = pytest.mark.slow


def test_correct_tracks_beat_static_points_on_track_consistency(tmp_path):
    paths = []
    for name in ("a-start", "b-mosic", "c-no-tracks"):
        data = yaml.safe_load((CONFIGS / "mini" / f"{name}.yaml").read_text())
        data["seeds"] = [0]
        data["generate"] |= {"train_videos": 12, "eval_videos": 4, "davis_videos": 4,
                             "voc_train_videos": 2, "pretrain_videos": 8}  # fmt: skip
        data["start"] |= {"steps": 300}
        data["evaluate"] = [e for e in data["evaluate"] if e["benchmark"] == "track-consistency"]
        path = tmp_path / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data))
        paths.append(path)
    rows = load_rows(paths)
    reproduction = Reproduction(rows, Locations(), tmp_path / "work", log=lambda _: None)
    reproduction.run()
    margin = {row.id: reproduction.scores(row, row.evaluations[1])[0] for row in rows}
    assert margin["b-mosic"] > margin["a-start"]
    assert margin["b-mosic"] > margin["c-no-tracks"] + 1
