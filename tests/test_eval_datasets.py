"""Evaluation dataset loaders on tiny fakes written in the real on-disk layouts."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mosic.stages.evaluation.datasets import (
    DATASETS,
    IGNORE,
    DatasetError,
    open_dataset,
    subset,
)

H, W = 6, 8


def write_jpg(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (W, H), (value, value, value)).save(path)


def write_png(path: Path, labels: np.ndarray, palette: bool) -> None:
    """A label PNG: a palette PNG whose colours differ from the indices (as VOC's, DAVIS's and
    YouTube-VOS's are), or an 8-bit grey one (SegmentationClassAug, ADE20K, stuffthingmaps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = labels.astype(np.uint8)
    im = Image.frombytes("P" if palette else "L", (W, H), raw.tobytes())
    if palette:
        colours = np.zeros((256, 3), dtype=np.uint8)
        colours[:, 0] = 255 - np.arange(256)  # index i -> red 255 - i: RGB is not the label
        colours[:, 2] = 7
        im.putpalette(colours.tobytes())
    im.save(path)


def labels(*values: int) -> np.ndarray:
    """(H, W) labels: the columns cycle through ``values``."""
    return np.resize(np.array(values), W)[None, :].repeat(H, axis=0)


def one_line(err: pytest.ExceptionInfo[DatasetError]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# --- Pascal VOC ------------------------------------------------------------------------------


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    base = tmp_path / "VOCdevkit" / "VOC2012"
    names = ["2007_000032", "2007_000039", "2008_000002"]
    for name in names:
        write_jpg(base / "JPEGImages" / f"{name}.jpg")
        write_png(base / "SegmentationClassAug" / f"{name}.png", labels(0, 5, 255), palette=False)
    for name in names[:2]:
        write_png(base / "SegmentationClass" / f"{name}.png", labels(0, 15, 20, 255), palette=True)
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "trainaug.txt").write_text("\n".join(names) + "\n")
    (sets / "val.txt").write_text("\n".join(names[:2]) + "\n")
    return tmp_path / "VOCdevkit"


def test_voc_val_reads_palette_indices(voc: Path) -> None:
    ds = open_dataset("voc", voc, "val")
    assert (len(ds), ds.num_classes, ds.class_names[15]) == (2, 21, "person")
    sample = ds[0]
    assert sample.name == "2007_000032"
    assert sample.image.shape == (H, W, 3) and sample.image.dtype == np.uint8
    assert sample.mask.dtype == np.int64
    assert sample.mask[0, :4].tolist() == [0, 15, 20, IGNORE]  # indices, not red levels
    with Image.open(voc / "VOC2012" / "SegmentationClass" / "2007_000032.png") as png:
        assert png.mode == "P" and png.convert("RGB").getpixel((1, 0)) == (240, 0, 7)


def test_voc_rejects_rgb_masks(voc: Path) -> None:
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(voc / "VOC2012" / "SegmentationClass" / "2007_000032.png")
    with pytest.raises(DatasetError) as err:
        open_dataset("voc", voc, "val")[0]
    assert "RGB mask" in one_line(err)


def test_voc_trainaug_reads_segmentation_class_aug(voc: Path) -> None:
    ds = open_dataset("voc", voc / "VOC2012", "trainaug")  # the VOC2012 folder as root too
    assert len(ds) == 3
    assert ds[0].mask[0, :3].tolist() == [0, 5, IGNORE]
    assert [s.name for s in (ds[i] for i in range(3))] == sorted(s.name for s in ds)


def test_voc_options(voc: Path, tmp_path: Path) -> None:
    assert len(open_dataset("voc", voc, "trainaug", max_items=2)) == 2
    listed = tmp_path / "few.txt"
    listed.write_text("2008_000002\n")
    only = open_dataset("voc", voc, "trainaug", subset_file=listed)
    assert [only[0].name] == ["2008_000002"]
    listed.write_text("2012_999999\n")
    with pytest.raises(DatasetError, match="2012_999999"):
        open_dataset("voc", voc, "trainaug", subset_file=listed)


def test_voc_errors(voc: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        open_dataset("voc", tmp_path / "nowhere", "val")
    assert "JPEGImages" in one_line(err) and "Pascal VOC 2012" in one_line(err)

    (voc / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").write_text("2099_000001\n")
    with pytest.raises(DatasetError) as err:
        open_dataset("voc", voc, "val")
    assert "2099_000001.jpg" in one_line(err)

    shutil.rmtree(voc / "VOC2012" / "SegmentationClassAug")
    with pytest.raises(DatasetError) as err:
        open_dataset("voc", voc, "trainaug")
    assert "SegmentationClassAug" in one_line(err) and "SBD" in one_line(err)

    with pytest.raises(ValueError, match="trainaug"):
        open_dataset("voc", voc, "test")


# --- ADE20K ----------------------------------------------------------------------------------


def test_ade20k(tmp_path: Path) -> None:
    root = tmp_path / "ADEChallengeData2016"
    for i in (2, 1):
        write_jpg(root / "images" / "validation" / f"ADE_val_0000000{i}.jpg")
        write_png(
            root / "annotations" / "validation" / f"ADE_val_0000000{i}.png",
            labels(0, 1, 150),
            palette=False,
        )
    ds = open_dataset("ade20k", root, "val")
    # As the references: 151 classes, "other" (0) kept in the list but its pixels ignored.
    assert (len(ds), ds.num_classes, ds.class_names[:2]) == (2, 151, ("other", "wall"))
    sample = ds[0]
    assert sample.name == "ADE_val_00000001"
    assert sample.mask[0, :3].tolist() == [IGNORE, 1, 150]

    with pytest.raises(DatasetError) as err:
        open_dataset("ade20k", root, "train")
    assert "images/training" in one_line(err) and "ADEChallengeData2016" in one_line(err)
    shutil.rmtree(root / "annotations")
    with pytest.raises(DatasetError, match="annotations/validation"):
        open_dataset("ade20k", root, "val")


# --- COCO-Stuff ------------------------------------------------------------------------------


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    root = tmp_path / "cocostuff"
    # fine labels: 0 person, 2 car, 101 ceiling-other, 181 wood, 255 unlabelled
    for name in ("000000000285", "000000000139"):
        write_jpg(root / "images" / "val2017" / f"{name}.jpg")
        write_png(
            root / "annotations" / "val2017" / f"{name}.png",
            labels(0, 2, 101, 181, 255),
            palette=False,
        )
    return root


def test_coco_things_and_stuff(coco: Path) -> None:
    things = open_dataset("coco-things", coco, "val")
    stuff = open_dataset("coco-stuff", coco, "val")
    assert (len(things), things.num_classes, things.class_names[9]) == (2, 12, "person")
    assert (stuff.num_classes, stuff.class_names[0], stuff.class_names[12]) == (
        15,
        "ceiling",
        "solid",
    )
    assert things[0].name == "000000000139"
    assert things[0].mask[0, :5].tolist() == [9, 11, IGNORE, IGNORE, IGNORE]
    assert stuff[0].mask[0, :5].tolist() == [IGNORE, IGNORE, 0, 12, IGNORE]


def test_coco_subset_file_and_errors(coco: Path, tmp_path: Path) -> None:
    listed = tmp_path / "coco_10pct.txt"
    listed.write_text("000000000285.jpg\n")
    ds = open_dataset("coco-stuff", coco, "val", subset_file=listed)
    assert [ds[0].name] == ["000000000285"]
    with pytest.raises(DatasetError) as err:
        open_dataset("coco-things", coco, "train")
    assert "images/train2017" in one_line(err) and "stuffthingmaps" in one_line(err)
    (coco / "annotations" / "val2017" / "000000000139.png").unlink()
    with pytest.raises(DatasetError, match="000000000139.png"):
        open_dataset("coco-things", coco, "val")


# --- DAVIS -----------------------------------------------------------------------------------


@pytest.fixture
def davis(tmp_path: Path) -> Path:
    root = tmp_path / "DAVIS"
    for seq in ("bear", "blackswan"):
        for t in range(3):
            write_jpg(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", value=40 * t)
            write_png(
                root / "Annotations" / "480p" / seq / f"{t:05d}.png",
                labels(0, 1, 2, 255),
                palette=True,
            )
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("bear\nblackswan\n")
    return root


def test_davis(davis: Path) -> None:
    ds = open_dataset("davis", davis, "val")
    assert len(ds) == 2
    clip = ds[1]
    assert clip.name == "blackswan"
    assert clip.frames.shape == (3, H, W, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (3, H, W) and clip.masks.dtype == np.int64
    assert clip.masks[2, 0, :4].tolist() == [0, 1, 2, IGNORE]
    assert clip.annotated.tolist() == [True, True, True]
    assert open_dataset("davis", davis, "val", max_frames=2, max_items=1)[0].frames.shape[0] == 2


def test_davis_errors(davis: Path) -> None:
    (davis / "ImageSets" / "2017" / "val.txt").write_text("bear\nkite-surf\n")
    with pytest.raises(DatasetError) as err:
        open_dataset("davis", davis, "val")
    assert "kite-surf" in one_line(err) and "davischallenge" in one_line(err)
    shutil.rmtree(davis / "Annotations")
    with pytest.raises(DatasetError, match="Annotations/480p"):
        open_dataset("davis", davis, "val")


# --- YouTube-VOS: tests/test_ytvos.py --------------------------------------------------------


# --- registry and subsets --------------------------------------------------------------------


def test_registry() -> None:
    assert set(DATASETS) == {"voc", "ade20k", "coco-things", "coco-stuff", "davis", "ytvos"}
    with pytest.raises(ValueError, match="coco-things"):
        open_dataset("cityscapes", ".", "val")


class Numbers:
    """A stand-in dataset whose item i is i."""

    name = "numbers"
    num_classes = 3

    def __len__(self) -> int:
        return 1000

    def __getitem__(self, i: int) -> int:
        return i


def test_subset_is_deterministic(voc: Path) -> None:
    data = Numbers()
    a, b, c = subset(data, 1 / 8, 42), subset(data, 1 / 8, 42), subset(data, 1 / 8, 43)
    assert len(a) == 125 and a.num_classes == 3
    assert [a[i] for i in range(len(a))] == [b[i] for i in range(len(b))]
    assert [a[i] for i in range(len(a))] != [c[i] for i in range(len(c))]
    assert len(set(a[i] for i in range(len(a)))) == 125
    assert len(subset(data, 1 / 128, 0)) == 8
    tiny = subset(open_dataset("voc", voc, "trainaug"), 1 / 128, 0)
    assert len(tiny) == 1 and tiny[0].mask.shape == (H, W)
    assert pickle.loads(pickle.dumps(tiny))[0].name == tiny[0].name
    with pytest.raises(ValueError):
        subset(data, 0, 0)


def test_voc_flat_hummingbird_layout(voc: Path, tmp_path: Path) -> None:
    flat = tmp_path / "VOCSegmentation"
    shutil.copytree(voc / "VOC2012" / "JPEGImages", flat / "images")
    shutil.copytree(voc / "VOC2012" / "SegmentationClass", flat / "SegmentationClass")
    shutil.copytree(voc / "VOC2012" / "ImageSets" / "Segmentation", flat / "sets")
    ds = open_dataset("voc", flat, "val")
    assert len(ds) == 2 and ds[1].mask[0, 1] == 15
