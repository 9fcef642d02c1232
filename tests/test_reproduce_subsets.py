"""Hummingbird's published training lists in ``mosic reproduce``: used when the data root
holds them, else mosic's seeded draw of the same fraction, said at the start and recorded in
the result."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mosic.pipeline.reproduce import Locations, Reproduction
from mosic.pipeline.reproduce_config import load_rows
from mosic.stages.synthetic import make_video
from mosic.stages.synthetic_datasets import write_voc

LIST = "file_sets/voc/1_div_128/trainaug_128_42.txt"


def test_published_lists_are_used_when_present_and_a_labelled_draw_otherwise(tmp_path):
    names = [f"scene{i}" for i in range(4)]
    videos = [make_video(100 + i, num_frames=8, height=64, width=64) for i in range(4)]
    write_voc(videos, tmp_path / "data", names, every=4, train_videos=3)  # 6 train, 2 val
    row = {
        "table": "Hummingbird (mIoU)",
        "row": "tiny",
        "backbone": "vit-tiny-test",
        "weights": "random-init",
        "evaluate": [
            {
                "column": "VOC 1/2",
                "benchmark": "hummingbird",
                "dataset": "voc",
                "data": "VOCdevkit",
                "options": {
                    "input_size": 64,
                    "memory_size": 1000,
                    "subset_file": LIST,
                    "fraction": 0.5,
                },  # fmt: skip
            }
        ],
    }
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(row))
    rows = load_rows([config])
    locations = Locations(data_root=tmp_path / "data")
    log: list[str] = []
    reproduction = Reproduction(rows, locations, tmp_path / "work", log=log.append)
    assert reproduction.missing() == []  # a missing list does not stop the reproduction...
    reproduction.run()
    listed = tmp_path / "data" / LIST
    assert any(  # ...it is said at the start
        line.startswith(f"note: tiny / VOC 1/2: {listed} not found") and "open-hummingbird" in line
        for line in log
    )
    result = json.loads(next((tmp_path / "work" / "results").rglob("*.json")).read_text())
    assert result["protocol"]["train_subset"] == (
        f"mosic's seeded draw (fraction 0.5, seed 0), fallback: the published list {listed} "
        "was not found"
    )
    listed.parent.mkdir(parents=True)
    listed.write_text("scene0_00000\nscene2_00004\n")
    log.clear()
    Reproduction(rows, locations, tmp_path / "work", log=log.append).run()
    assert not any(line.startswith("note:") for line in log)
    result = json.loads(next((tmp_path / "work" / "results").rglob("*.json")).read_text())
    assert result["protocol"]["train_subset"] == f"list file {listed}"
    assert result["request"]["fraction"] == 1.0
    assert result["metrics"]["bank_size"] == 2 * 2 * 16  # 2 listed images, 2 epochs, 16 patches


def test_the_paper_configs_name_the_published_list_for_voc_1_128():
    rows = load_rows([Path(__file__).parents[1] / "configs" / "paper" / "hummingbird"])
    columns = [e for r in rows for e in r.evaluations if e.column == "VOC 1/128"]
    assert columns and all(e.options["subset_file"] == LIST for e in columns)
    assert all(e.options["fraction"] == 1 / 128 for e in columns)  # the labelled fallback
