"""`mosic evaluate` end to end on CPU: generated scenes in the real VOC and DAVIS layouts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mosic.cli import app
from mosic.pipeline.evaluate import PROTOCOL_VERSION
from mosic.stages.model.backbone import create_backbone
from mosic.stages.synthetic import make_video


def write_palette_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tobytes())
    image.save(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """VOC 2012 and DAVIS 2017 layouts filled with generated scenes and their layer masks."""
    root = tmp_path_factory.mktemp("data")
    voc = root / "VOCdevkit" / "VOC2012"
    names = []
    for seed in range(4):
        video = make_video(seed, num_frames=12, height=64, width=64, num_foreground=2)
        for t in range(0, 12, 3):
            name = f"2007_{seed:03d}{t:03d}"
            names.append(name)
            (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
            Image.fromarray(video.frames[t]).save(voc / "JPEGImages" / f"{name}.jpg")
            mask = video.masks[t].copy()
            for folder in ("SegmentationClass", "SegmentationClassAug"):
                write_palette_png(voc / folder / f"{name}.png", mask)
        davis = root / "DAVIS"
        sequence = f"scene{seed}"
        for t in range(12):
            frame_name = f"{t:05d}"
            path = davis / "JPEGImages" / "480p" / sequence / f"{frame_name}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(video.frames[t]).save(path)
            annotation = davis / "Annotations" / "480p" / sequence / f"{frame_name}.png"
            write_palette_png(annotation, video.masks[t])
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for split, chosen in (("trainaug", names[:12]), ("train", names[:12]), ("val", names[12:])):
        (sets / f"{split}.txt").write_text("\n".join(chosen) + "\n")
    (root / "DAVIS" / "ImageSets" / "2017").mkdir(parents=True)
    (root / "DAVIS" / "ImageSets" / "2017" / "val.txt").write_text(
        "\n".join(f"scene{s}" for s in range(4)) + "\n"
    )
    torch.manual_seed(0)
    torch.save(create_backbone("vit-tiny-test").state_dict(), root / "tiny.pth")
    return root


RUNS = {
    "hummingbird": ["--dataset", "voc", "--memory-size", "2000"],
    "linear": ["--dataset", "voc", "--epochs", "2", "--batch", "4"],
    "overclustering": ["--dataset", "voc", "--clusters", "21,30"],
    "video": ["--dataset", "davis", "--video-mode", "clip"],
}


@pytest.mark.parametrize("benchmark", list(RUNS))
def test_each_benchmark_runs_and_writes_json(data, tmp_path, benchmark):
    root = data / ("DAVIS" if benchmark == "video" else "VOCdevkit")
    out = tmp_path / "result.json"
    args = ["evaluate", "--model", "vit-tiny-test", "--weights", str(data / "tiny.pth")]
    args += ["--benchmark", benchmark, "--data-root", str(root), "--input-size", "64"]
    result = CliRunner().invoke(app, [*args, *RUNS[benchmark], "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1 and f"{benchmark} on " in result.stdout
    assert_every_phase_reports_progress(result.stderr)
    saved = json.loads(out.read_text())
    metrics = saved["metrics"]
    scores = [v["miou"] for v in metrics["k"].values()] if "k" in metrics else [metrics["miou"]]
    assert all(0.0 < s <= 1.0 for s in scores)
    assert saved["total_s"] > 0
    protocol = saved["protocol"]
    assert protocol["version"] == PROTOCOL_VERSION and protocol["input_size"] == 64
    assert protocol["position_grid"] == [14, 14]  # vit-tiny-test's own grid, whatever the input
    assert protocol["eval_size"] == {"hummingbird": 64, "video": 64}.get(benchmark, 100)
    if benchmark == "video":
        assert protocol["classes_averaged"].startswith("ids present in each clip")
    else:
        assert protocol["classes_averaged"] == 21  # VOC, absent classes counted as 0
    if benchmark in ("overclustering", "video"):
        assert protocol["kmeans"]["backend"] == "faiss" and protocol["kmeans"]["faiss_version"]
        assert protocol["kmeans"]["iterations"] == {"overclustering": 100, "video": 50}[benchmark]
        assert protocol["kmeans"]["restarts"] == 5
    else:
        assert protocol["kmeans"] is None
        assert protocol["train_subset"] == "the whole training split"


PHASE_START = re.compile(r"^(?P<name>.+?): (?P<total>[\d,]+) (?P<unit>\w+)$|^(?P<step>.+) \.\.\.$")


def assert_every_phase_reports_progress(stderr: str) -> None:
    """Each phase announces itself and ends with its time; a counted phase reports its rate at
    the end and, when it has several steps, lines with rate and ETA on the way."""
    lines = stderr.splitlines()
    phases = [m for line in lines if (m := PHASE_START.match(line))]
    assert phases, stderr
    for m in phases:
        name = m["name"] or m["step"]
        done = [line for line in lines if line.startswith(f"{name}: done in ")]
        assert len(done) == 1, (name, stderr)
        if m["total"]:
            singular = m["unit"].removesuffix("s")
            assert re.search(rf"\([\d,.]+ ({m['unit']}/s|s/{singular})\)$", done[0]), done
            if int(m["total"].replace(",", "")) >= 10:
                assert any(re.search(rf"^{re.escape(name)}: [\d,]+/.*(/s|s/\w+), ETA \d", line)
                           for line in lines), (name, stderr)  # fmt: skip


def test_missing_dataset_and_wrong_pairing_are_one_line_errors(data, tmp_path):
    base = ["evaluate", "--model", "vit-tiny-test", "--benchmark", "linear", "--dataset", "voc"]
    missing = CliRunner().invoke(app, [*base, "--data-root", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "nowhere" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    wrong = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            "vit-tiny-test",
            "--benchmark",
            "video",
            "--dataset",
            "voc",
            "--data-root",
            str(data),
        ],
    )
    assert wrong.exit_code == 2 and "does not run on an image dataset" in wrong.output


def test_linear_lr_reaches_the_probe(data, tmp_path):
    args = ["evaluate", "--model", "vit-tiny-test", "--weights", str(data / "tiny.pth")]
    args += ["--benchmark", "linear", "--data-root", str(data / "VOCdevkit"), "--input-size", "64"]
    losses = {}
    for lr in ("0", "0.5", None):
        out = tmp_path / f"lr{lr}.json"
        given = ["--lr", lr] if lr else []
        result = CliRunner().invoke(app, [*args, *RUNS["linear"], *given, "--output", str(out)])
        assert result.exit_code == 0, result.output
        saved = json.loads(out.read_text())
        assert saved["request"]["lr"] == (float(lr) if lr else None)
        losses[lr] = saved["metrics"]["final_loss"]
    assert losses["0.5"] < losses["0"]  # a head that never moves keeps its initial loss
    assert losses["0"] != losses[None]  # lr 0 is not the protocol's 0.01


def test_kmeans_backend_is_chosen_and_recorded(data, tmp_path):
    args = ["evaluate", "--model", "vit-tiny-test", "--weights", str(data / "tiny.pth")]
    args += ["--benchmark", "overclustering", "--data-root", str(data / "VOCdevkit")]
    args += ["--input-size", "64", *RUNS["overclustering"]]
    scores = {}
    for backend in ("faiss", "torch"):
        out = tmp_path / f"{backend}.json"
        result = CliRunner().invoke(app, [*args, "--kmeans-backend", backend, "--output", str(out)])
        assert result.exit_code == 0, result.output
        saved = json.loads(out.read_text())
        assert saved["protocol"]["kmeans"]["backend"] == backend
        assert (
            saved["metrics"]["kmeans"]["init"]
            == {"faiss": "k random points", "torch": "k-means++"}[backend]
        )
        scores[backend] = saved["metrics"]["k"]["30"]["per_seed"]
    assert scores["faiss"] != scores["torch"]  # two implementations, two sets of local optima
    wrong = CliRunner().invoke(app, [*args, "--kmeans-backend", "sklearn"])
    assert wrong.exit_code == 2
    [line] = wrong.output.strip().splitlines()
    assert "--kmeans-backend 'sklearn': use one of faiss, torch" in line


def test_a_published_style_subset_file_reaches_the_loader(data, tmp_path):
    listed = ["2007_000000", "2007_001003", "2007_002006"]  # as file_sets/voc/1_div_128/*.txt
    subset = tmp_path / "trainaug_128_42.txt"
    subset.write_text("\n".join(listed) + "\n")
    args = ["evaluate", "--model", "vit-tiny-test", "--weights", str(data / "tiny.pth")]
    args += ["--benchmark", "hummingbird", "--data-root", str(data / "VOCdevkit")]
    args += ["--input-size", "64", *RUNS["hummingbird"], "--subset-file", str(subset)]
    out = tmp_path / "subset.json"
    result = CliRunner().invoke(app, [*args, "--output", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["protocol"]["train_subset"] == f"list file {subset}"
    # 3 images x 2 augmentation epochs x all 16 patches of a 64 px view (memory 2000 > 96)
    assert saved["metrics"]["bank_size"] == 3 * 2 * 16
    subset.write_text("2007_000000\n2099_999999\n")
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code == 2
    [line] = missing.output.strip().splitlines()
    assert f"{subset}: names 1 items not in voc/trainaug" in line and "'2099_999999'" in line
    both = CliRunner().invoke(app, [*args, "--fraction", "0.5"])
    assert both.exit_code == 2 and "give one" in both.output
