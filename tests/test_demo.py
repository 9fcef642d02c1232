"""``mosic demo`` end to end on cut-down rows of the trajectory benchmark: the report holds the
figures of the run that wrote it, and the pictures the issue asks for (cluster maps of at least
4 held-out frames, 192 px high, for every row beside the frame and its ground truth)."""

from __future__ import annotations

import json

from PIL import Image

from mosic.cli import app
from mosic.pipeline.demo import DemoConfig, run_demo
from tests.test_reproduce import tiny_rows

ROWS = ("a-start", "b-mosic", "c-no-tracks", "d-swap-xy")


def run_cli(args: list[str]) -> None:
    assert not app(args, standalone_mode=False), args


def test_the_demo_report_shows_every_row_with_the_run_s_own_figures(tmp_path):
    tiny_rows(tmp_path, ROWS)
    out = tmp_path / "demo"
    cfg = DemoConfig(configs=tmp_path / "configs", rows=ROWS)
    report = run_demo(out, cfg, run_cli).read_text()

    lines = report.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("| Method |")))
    table = lines[first + 2 : lines.index("", first)]  # the main table, without its header
    names = {
        "a-start": "start model (image-level warm-up on stills)",
        "b-mosic": "MoSiC",
        "c-no-tracks": "MoSiC without tracks (static points)",
        "d-swap-xy": "MoSiC, corrupted tracks (x and y swapped)",
    }
    assert [line.split("|")[1].strip() for line in table] == list(names.values())
    for line, row_id in zip(table, names, strict=True):
        result = out / "work" / "results" / row_id / "seed0"
        video = json.loads((result / "video-object-segmentation-categories.json").read_text())
        assert line.split("|")[2].strip() == f"{100 * video['metrics']['miou']:.1f}", line

    tracking = json.loads((out / "results.json").read_text())["tracking"]
    assert 0 <= tracking["average_jaccard"] <= 1
    assert f"| {tracking['average_jaccard']:.3f} | " in report

    maps = Image.open(out / "clusters.png")
    panel_width = round(cfg.panel_height * 128 / 96)  # the generated frames are 128 x 96
    assert maps.size == (panel_width * (2 + len(ROWS)), 28 + cfg.panel_height * cfg.frames_shown)
    for picture in ("tracks.png", "loss.png"):
        assert min(Image.open(out / picture).size) > 100
