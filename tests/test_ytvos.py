"""YouTube-VOS as TimeT evaluates it, on fake data in the real layout: object ids mapped to
meta.json categories, TimeT's val1 split built from the official train split, the official
first-appearance-only valid masks refused."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mosic.cli import app
from mosic.stages.evaluation.datasets import IGNORE, DatasetError, open_dataset
from mosic.stages.evaluation.video_segmentation import evaluate_video
from tests.test_eval_clustering import SHADE, LabelFeatures

SIZE = 64
# video -> object id -> (category, top-left block of its 16 x 16 square)
VIDEOS = {
    "0a1b2c3d4e": {1: ("person", (0, 0)), 2: ("zebra", (2, 2))},
    "1f2e3d4c5b": {1: ("zebra", (0, 2)), 2: ("person", (2, 0))},  # ids swapped
    "2a3b4c5d6e": {1: ("person", (1, 1))},
}
SHADES = {"person": 1, "zebra": 2}  # the image value of a category: shade x SHADE


def write_png(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (768 - 9))
    image.save(path)


def official_train(root: Path, videos: dict = VIDEOS, frames: int = 3) -> Path:
    """The official train split's layout: every stored frame (every 5th) with a mask of every
    object; meta.json with each object's category and frames."""
    train = root / "train"
    meta: dict = {"videos": {}}
    for vid, objects in videos.items():
        ids = np.zeros((SIZE, SIZE), dtype=np.int64)
        for obj, (_, (row, col)) in objects.items():
            ids[row * 16 : row * 16 + 16, col * 16 : col * 16 + 16] = obj
        picture = np.zeros((SIZE, SIZE), dtype=np.uint8)
        for obj, (category, _) in objects.items():
            picture[ids == obj] = SHADES[category] * SHADE  # a category looks the same anywhere
        names = [f"{5 * t:05d}" for t in range(frames)]
        for name in names:
            path = train / "JPEGImages" / vid / f"{name}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.repeat(picture[..., None], 3, -1)).save(path, quality=100)
            write_png(train / "Annotations" / vid / f"{name}.png", ids)
        meta["videos"][vid] = {
            "objects": {str(o): {"category": c, "frames": names} for o, (c, _) in objects.items()}
        }
    (train / "meta.json").write_text(json.dumps(meta))
    return train


def test_ids_become_categories_and_dataset_mode_scores_a_shared_category_as_one_class(tmp_path):
    official_train(tmp_path)
    data = open_dataset("ytvos", tmp_path, "train")
    assert data.categories == ["person", "zebra"]  # sorted names -> 1, 2 (TimeT's numbering)
    second = data[1]  # 1f2e3d4c5b: id 1 is a zebra, id 2 a person
    assert second.masks[0, 0, 32] == 2 and second.masks[0, 32, 0] == 1
    assert data.objects(1) == {1: "zebra", 2: "person"}
    features = LabelFeatures(3)
    by_category = evaluate_video(data, features, mode="dataset", input_size=SIZE)
    assert by_category["miou"] > 0.9  # person is one class across the videos (corners lost)
    raw = open_dataset("ytvos", tmp_path, "train", labels="object")
    assert raw[1].masks[0, 0, 32] == 1
    by_id = evaluate_video(raw, features, mode="dataset", input_size=SIZE)
    assert by_id["miou"] < 0.8  # "id 1" is a person here and a zebra there


def test_ytvos_split_builds_timets_val1_from_the_official_train_split(tmp_path):
    videos = {f"{i:010x}": {1: ("person", (i % 3, 0))} for i in range(10)}
    official_train(tmp_path, videos, frames=2)
    result = CliRunner().invoke(
        app, ["ytvos-split", str(tmp_path / "train"), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "train1: 8 videos" in result.stdout and "val1: 2 videos" in result.stdout
    expected = sorted(videos)
    random.Random(1).shuffle(expected)  # TimeT: shuffle, first 80 % train1, the rest val1
    val1 = open_dataset("ytvos", tmp_path, "val1")
    assert val1.videos == sorted(expected[8:])
    assert sorted(p.name for p in (tmp_path / "train1" / "JPEGImages").iterdir()) == sorted(
        expected[:8]
    )
    assert (tmp_path / "val1" / "Annotations" / expected[8]).is_symlink()
    assert val1[0].annotated.all()
    again = CliRunner().invoke(
        app, ["ytvos-split", str(tmp_path / "train"), "--out", str(tmp_path)]
    )
    assert again.exit_code == 2 and "exists" in again.stderr
    assert len(again.output.strip().splitlines()) == 1


def official_valid(root: Path, categories: bool) -> None:
    """The official valid split's layout: a mask only where an object first appears."""
    valid = root / "valid"
    meta: dict = {"videos": {"0a1b2c3d4e": {"objects": {}}}}
    for t, name in enumerate(("00000", "00005", "00010")):
        path = valid / "JPEGImages" / "0a1b2c3d4e" / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (SIZE, SIZE)).save(path)
        if t != 1:
            write_png(valid / "Annotations" / "0a1b2c3d4e" / f"{name}.png", np.full((4, 4), t))
    objects = meta["videos"]["0a1b2c3d4e"]["objects"]
    objects["1"] = {"frames": ["00000", "00005", "00010"]}
    objects["2"] = {"frames": ["00010"]}
    if categories:
        objects["1"]["category"], objects["2"]["category"] = "person", "hand"
    (valid / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("categories", [False, True])
def test_first_appearance_masks_of_the_valid_split_are_refused(tmp_path, categories):
    official_valid(tmp_path, categories)
    with pytest.raises(DatasetError) as err:
        open_dataset("ytvos", tmp_path, "valid")
    message = str(err.value)
    assert "\n" not in message and "first appear" in message
    assert "mosic ytvos-split" in message and "val1" in message


def test_evaluate_refuses_the_valid_split_in_one_line(tmp_path):
    official_valid(tmp_path, categories=False)
    args = ["evaluate", "--model", "vit-tiny-test", "--benchmark", "video", "--dataset", "ytvos"]
    args += ["--data-root", str(tmp_path), "--val-split", "valid"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: ") and "names no object categories" in line


def test_ids_missing_from_meta_json_are_ignored(tmp_path):
    train = official_train(tmp_path, {"0a1b2c3d4e": {1: ("person", (0, 0))}}, frames=1)
    ids = np.zeros((SIZE, SIZE), dtype=np.int64)
    ids[:4, :4], ids[-4:, -4:] = 7, 255  # an id meta.json does not list; DAVIS-style void
    write_png(train / "Annotations" / "0a1b2c3d4e" / "00000.png", ids)
    mask = open_dataset("ytvos", tmp_path, "train")[0].masks[0]
    assert mask[0, 0] == IGNORE and mask[-1, -1] == IGNORE and mask[10, 10] == 0


def test_malformed_layouts_are_one_line_errors(tmp_path):
    train = official_train(tmp_path, frames=1)
    meta = train / "meta.json"
    meta.write_text('{"videos": {"0a1b2c3d4e": {"objects": ')
    with pytest.raises(DatasetError, match="not a YouTube-VOS meta.json.*youtube-vos.org"):
        open_dataset("ytvos", tmp_path, "train")
    meta.write_text(json.dumps({"videos": {"0a1b2c3d4e": {"objects": {}}}}))
    with pytest.raises(DatasetError, match="1f2e3d4c5b: a video meta.json does not list"):
        open_dataset("ytvos", tmp_path, "train")
    meta.unlink()
    with pytest.raises(DatasetError, match="missing meta.json"):
        open_dataset("ytvos", tmp_path, "train")
