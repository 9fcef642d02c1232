"""bench/gpu_stage_one.py runs unchanged on a GPU: its CPU smoke path, here, with a stand-in
co-tracker clone (the stand-in predictors of tests/test_cotracker.py behind a hubconf.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cotracker import HUBCONF

ROOT = Path(__file__).resolve().parents[1]


def bench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the stand-in imports tests.test_cotracker
    command = [sys.executable, str(ROOT / "bench" / "gpu_stage_one.py"), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_smoke_run_measures_every_setting(tmp_path):
    clone = tmp_path / "co-tracker"
    clone.mkdir()
    (clone / "hubconf.py").write_text(HUBCONF)
    run = bench("--smoke", "--cotracker", str(clone), "--out", str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "out" / "gpu_stage_one.json").read_text())
    rows = result["rows"]
    assert [(r["size"], r["window"], r["workers"]) for r in rows] == [
        ("48", 13, 1), ("48", 9, 1), ("48", 13, 2), ("32", 13, 1)
    ]  # fmt: skip
    assert all("error" not in r and r["frames_per_s"] > 0 for r in rows), rows
    # 24-frame videos, sets at 0, 4, 8, 12 for 9 frames: the default two sets a window (13
    # frames) 2 x 13 / 24; one set a window 4 x 9 / 24.
    assert rows[0]["frame_passes"] == pytest.approx(26 / 24)
    assert rows[1]["frame_passes"] == pytest.approx(36 / 24)
    assert rows[2]["videos"] >= 4  # both workers measured, each on its own videos
    assert "YouTube-VOS train" in result["estimate"]["default"]["gpu_hours"]
    assert "GPU-hours at the default setting's rate" in run.stdout


def test_missing_clone_is_one_line(tmp_path):
    run = bench("--cotracker", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "no co-tracker clone at" in run.stderr
