"""Prediction pictures (``mosic evaluate --save-visuals N``): the colouring, the layout, and the
pictures each benchmark writes on generated data in the real VOC and DAVIS layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mosic.cli import app
from mosic.stages.evaluation.datasets.base import IGNORE
from mosic.stages.evaluation.overclustering import evaluate_overclustering
from mosic.stages.evaluation.video_segmentation import evaluate_video
from mosic.stages.evaluation.visuals import (
    IGNORE_COLOUR,
    TITLE_HEIGHT,
    Visual,
    colorize,
    compose,
    palette,
    resize_labels,
)
from mosic.stages.model.backbone import create_backbone
from mosic.stages.synthetic import make_video
from mosic.stages.synthetic_datasets import write_davis, write_voc
from tests.test_eval_clustering import LabelFeatures, fake_segmentation, fake_videos
from tests.test_evaluate_cli import RUNS  # the same small runs of each benchmark

HEIGHT, WIDTH = 48, 64  # of the generated images: the panels keep it


class Collect(list):
    """A visual sink keeping what it receives."""

    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def __call__(self, visual: Visual) -> None:
        self.append(visual)


def panels(path: Path) -> list[np.ndarray]:
    """The four (H, W, 3) panels of a picture, below its title strip."""
    with Image.open(path) as im:
        picture = np.array(im.convert("RGB"))
    return [picture[TITLE_HEIGHT:, i * WIDTH : (i + 1) * WIDTH] for i in range(4)]


def coloured(raw: np.ndarray) -> np.ndarray:
    """A VOC / DAVIS label PNG's values (255 = void) in the VOC colours, void in grey."""
    out = palette(256)[raw]
    out[raw == 255] = IGNORE_COLOUR
    return out


def add_void_border(path: Path) -> None:
    """Mark the top two rows of a palette PNG void (255), as VOC's object borders are."""
    with Image.open(path) as im:
        raw, colours = np.array(im), im.getpalette()
    raw[:2] = 255
    image = Image.fromarray(raw, mode="P")
    image.putpalette(colours)
    image.save(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3 generated videos as DAVIS, and as VOC (videos 0-1 train, video 2 val, every 2nd frame);
    the first val image and first frame carry a void border."""
    root = tmp_path_factory.mktemp("visuals")
    videos = [
        make_video(s, num_frames=6, height=HEIGHT, width=WIDTH, num_foreground=2) for s in range(3)
    ]
    names = [f"scene{s}" for s in range(3)]
    voc = write_voc(videos, root, names, every=2, train_videos=2)
    write_davis(videos, root / "DAVIS", names)
    add_void_border(voc / "VOC2012" / "SegmentationClass" / "scene2_00000.png")
    add_void_border(root / "DAVIS" / "Annotations" / "480p" / "scene0" / "00000.png")
    torch.manual_seed(0)
    torch.save(create_backbone("vit-tiny-test").state_dict(), root / "tiny.pth")
    return root


# What the first two pictures show: (image, mask) files.
VOC_ITEMS = [("scene2_00000", "scene2_00000"), ("scene2_00002", "scene2_00002")]
DAVIS_ITEMS = [("scene0/00000", "scene0/00000"), ("scene1/00000", "scene1/00000")]


def evaluate(data: Path, benchmark: str, out: Path, *extra: str) -> dict:
    root = data / ("DAVIS" if benchmark == "video" else "VOCdevkit")
    args = ["evaluate", "--model", "vit-tiny-test", "--weights", str(data / "tiny.pth")]
    args += ["--benchmark", benchmark, "--data-root", str(root), "--input-size", "64"]
    result = CliRunner().invoke(app, [*args, *RUNS[benchmark], "--output", str(out), *extra])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def scores(metrics: dict) -> dict:
    """The metrics without the wall times."""
    return {
        k: scores(v) if isinstance(v, dict) else v
        for k, v in metrics.items()
        if not k.endswith("_s")
    }


@pytest.mark.parametrize("benchmark", list(RUNS))
def test_save_visuals_writes_the_data_of_the_first_images(data, tmp_path, benchmark):
    saved = evaluate(data, benchmark, tmp_path / "result.json", "--save-visuals", "2")
    written = sorted((tmp_path / "result_visuals").glob("*.png"))
    assert len(written) == 2
    assert saved["visuals"] == [str(p) for p in written]
    video = benchmark == "video"
    for path, (image_name, mask_name) in zip(
        written, DAVIS_ITEMS if video else VOC_ITEMS, strict=True
    ):
        assert path.name.endswith(f"_{image_name.replace('/', '_')}.png")
        with Image.open(path) as im:
            assert im.size == (4 * WIDTH, TITLE_HEIGHT + HEIGHT)
        if video:
            image_path = data / "DAVIS" / "JPEGImages" / "480p" / f"{image_name}.jpg"
            mask_path = data / "DAVIS" / "Annotations" / "480p" / f"{mask_name}.png"
        else:
            voc = data / "VOCdevkit" / "VOC2012"
            image_path = voc / "JPEGImages" / f"{image_name}.jpg"
            mask_path = voc / "SegmentationClass" / f"{mask_name}.png"
        image, truth, prediction, clusters = panels(path)
        with Image.open(image_path) as im:
            np.testing.assert_array_equal(image, np.array(im.convert("RGB")))
        with Image.open(mask_path) as im:
            raw = np.array(im)
        np.testing.assert_array_equal(truth, coloured(raw))
        assert len(np.unique(truth.reshape(-1, 3), axis=0)) >= 3  # void, background, objects
        known = {tuple(c) for c in palette(31)} | {IGNORE_COLOUR}
        for panel in (prediction, clusters):
            assert {tuple(c) for c in np.unique(panel.reshape(-1, 3), axis=0)} <= known


@pytest.mark.parametrize("benchmark", list(RUNS))
def test_save_visuals_leaves_the_scores_unchanged(data, tmp_path, benchmark):
    plain = evaluate(data, benchmark, tmp_path / "plain.json")
    drawn = evaluate(data, benchmark, tmp_path / "drawn.json", "--save-visuals", "1")
    assert plain["visuals"] == [] and len(drawn["visuals"]) == 1
    assert scores(plain["metrics"]) == scores(drawn["metrics"])
    assert not (tmp_path / "plain_visuals").exists()


def test_visuals_dir_option(data, tmp_path):
    folder = tmp_path / "pictures"
    saved = evaluate(
        data, "linear", tmp_path / "r.json", "--save-visuals", "3", "--visuals-dir", str(folder)
    )
    assert [Path(p).parent for p in saved["visuals"]] == [folder] * 3  # the whole val split


def test_colorize_uses_the_voc_colours_and_greys_out_ignored_pixels():
    mask = np.array([[0, 1, 2], [IGNORE, 15, 0]])
    expected = [
        [(0, 0, 0), (128, 0, 0), (0, 128, 0)],
        [IGNORE_COLOUR, (192, 128, 128), (0, 0, 0)],  # 15: VOC's person
    ]
    np.testing.assert_array_equal(colorize(mask), np.array(expected, dtype=np.uint8))
    assert tuple(palette(256)[255]) == (224, 224, 192)  # VOC's void colour
    assert len({tuple(c) for c in palette(512)}) == 512


def test_compose_lays_out_four_panels_and_resizes_labels_nearest():
    image = np.full((4, 6, 3), 7, dtype=np.uint8)
    truth = np.array([[0, 1, 1, 1, 1, IGNORE]] * 4)
    prediction = np.array([[0, 1], [2, 3]])
    clusters = np.arange(3)[None]
    picture = np.array(compose(Visual("x", image, truth, prediction, clusters)))
    assert picture.shape == (TITLE_HEIGHT + 4, 4 * 6, 3)
    body = picture[TITLE_HEIGHT:]
    np.testing.assert_array_equal(body[:, :6], image)
    np.testing.assert_array_equal(body[:, 6:12], colorize(truth))
    np.testing.assert_array_equal(
        body[:, 12:18], colorize(np.kron(prediction, np.ones((2, 3), dtype=np.int64)))
    )
    np.testing.assert_array_equal(body[:, 18:], colorize(np.array([[0, 0, 1, 1, 2, 2]] * 4)))
    np.testing.assert_array_equal(resize_labels(np.array([[5, 6]]), 1, 3), [[5, 5, 6]])


def test_overclustering_pictures_show_the_matched_first_k():
    dataset = fake_segmentation()
    sink = Collect(2)
    evaluate_overclustering(
        dataset,
        LabelFeatures(4),
        ks=(4, 7),
        seeds=(0, 1),
        input_size=64,
        mask_size=64,
        visuals=sink,
    )
    assert [v.name for v in sink] == ["img0", "img1"]
    for visual, sample in zip(sink, dataset.samples[:2], strict=True):
        valid = sample.mask != IGNORE
        np.testing.assert_array_equal(visual.prediction[valid], sample.mask[valid])  # mIoU 1
        assert visual.clusters.shape == (8, 8) and visual.clusters.max() < 4  # K = 4, raw


@pytest.mark.parametrize("mode", ["frame", "clip", "dataset"])
def test_video_pictures_spread_over_the_clips_and_match_the_truth(mode):
    videos = fake_videos()
    sink = Collect(3)
    evaluate_video(videos, LabelFeatures(3), mode=mode, input_size=64, visuals=sink)
    # 2 clips of 3 annotated frames: 2 frames a clip, evenly spaced, until 3.
    assert [v.name for v in sink] == ["clip0_00000", "clip0_00002", "clip1_00000"]
    for visual in sink:
        clip = videos.clips[int(visual.name[4])]
        t = int(visual.name[-5:])
        np.testing.assert_array_equal(visual.image, clip.frames[t])
        np.testing.assert_array_equal(visual.truth, clip.masks[t])
        predicted = resize_labels(visual.prediction, *visual.truth.shape)
        assert (predicted == visual.truth).mean() > 0.95  # as the mIoU: corners may differ
