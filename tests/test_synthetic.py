"""Synthetic videos: the ground truth agrees with the pixels."""

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from mosic.stages.queries import grid_points
from mosic.stages.synthetic import (
    SHAPE_CLASSES,
    make_video,
    write_frame_folder,
    write_video_file,
)
from mosic.stages.synthetic_datasets import write_voc


@pytest.fixture(scope="module")
def video():
    return make_video(3, noise=0.0)


def _grid_queries(height: int, width: int, frame: int, grid: int = 16) -> np.ndarray:
    points = grid_points(height, width, grid)
    return np.concatenate([np.full((len(points), 1), frame), points], 1).astype(np.float32)


def _sample(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear RGB samples (M, 3) of an (H, W, 3) image at (M, 2) (x, y) points."""
    mx = np.ascontiguousarray(points[None, :, 0], np.float32)
    my = np.ascontiguousarray(points[None, :, 1], np.float32)
    return cv2.remap(image.astype(np.float32), mx, my, cv2.INTER_LINEAR)[0]


def test_shapes_and_determinism(video) -> None:
    T, H, W = video.masks.shape
    assert video.frames.shape == (T, H, W, 3) and video.frames.dtype == np.uint8
    assert video.masks.dtype == np.uint8
    again = make_video(3, noise=0.0)
    assert np.array_equal(again.frames, video.frames)
    assert not np.array_equal(make_video(4, noise=0.0).frames, video.frames)


def test_colour_follows_ground_truth(video) -> None:
    """The colour under a visible ground-truth point stays the colour at its query."""
    _, H, W = video.masks.shape
    queries = _grid_queries(H, W, 10)
    positions, visible = video.ground_truth(queries)
    reference = _sample(video.frames[10], queries[:, 1:])
    errors = []
    for s in range(10, len(video.frames)):
        on = visible[s]
        errors.append(np.abs(_sample(video.frames[s], positions[s, on]) - reference[on]))
    errors = np.concatenate(errors)
    assert np.median(errors) < 2.0
    # A half-pixel shift of every track would show: compare with shifted positions.
    shifted = []
    for s in range(11, len(video.frames)):
        on = visible[s]
        shifted.append(np.abs(_sample(video.frames[s], positions[s, on] + 0.5) - reference[on]))
    assert np.median(errors) < 0.5 * np.median(np.concatenate(shifted))


def test_no_half_pixel_bias(video) -> None:
    """A small patch found by template matching in the next frame sits on the ground truth."""
    _, H, W = video.masks.shape
    ys, xs = np.mgrid[12 : H - 12 : 8, 12 : W - 12 : 8]
    queries = np.stack([np.full(xs.size, 20), xs.ravel(), ys.ravel()], 1).astype(np.float32)
    positions, visible = video.ground_truth(queries)
    offsets = []
    for i, (x, y) in enumerate(zip(xs.ravel(), ys.ravel(), strict=True)):
        if not visible[21, i] or np.ptp(video.masks[20, y - 7 : y + 8, x - 7 : x + 8]):
            continue  # stay away from layer edges
        template = video.frames[20, y - 5 : y + 6, x - 5 : x + 6]
        cx, cy = np.round(positions[21, i]).astype(int)
        window = video.frames[21, cy - 9 : cy + 10, cx - 9 : cx + 10]
        if window.shape[:2] != (19, 19):
            continue
        scores = cv2.matchTemplate(window, template, cv2.TM_SQDIFF)
        _, _, (bx, by), _ = cv2.minMaxLoc(scores)
        if not (0 < bx < scores.shape[1] - 1 and 0 < by < scores.shape[0] - 1):
            continue
        left, mid, right = scores[by, bx - 1 : bx + 2]
        up, down = scores[by - 1, bx], scores[by + 1, bx]
        dx = 0.5 * (left - right) / (left - 2 * mid + right)
        dy = 0.5 * (up - down) / (up - 2 * mid + down)
        offsets.append(np.array([cx - 4 + bx + dx, cy - 4 + by + dy]) - positions[21, i])
    offsets = np.array(offsets)
    assert len(offsets) > 30
    assert np.all(np.abs(np.median(offsets, axis=0)) < 0.1)
    assert np.median(np.linalg.norm(offsets, axis=1)) < 0.25


def test_masks_agree_with_visibility(video) -> None:
    """A query on pixel centres is visible where the mask shows its own layer."""
    T, H, W = video.masks.shape
    ys, xs = np.mgrid[0:H:4, 0:W:4]
    queries = np.stack([np.zeros(xs.size), xs.ravel(), ys.ravel()], 1).astype(np.float32)
    layer = video.masks[0, ys.ravel(), xs.ravel()]
    positions, visible = video.ground_truth(queries)
    agree = []
    for s in range(0, T, 7):
        on = visible[s]
        px = np.round(positions[s, on]).astype(int)
        agree.append(video.masks[s, px[:, 1], px[:, 0]] == layer[on])
    assert np.mean(np.concatenate(agree)) > 0.97
    assert np.array_equal(video.masks[0, ys, xs].ravel(), layer)


def test_motion_occlusion_and_reappearance(video) -> None:
    T, H, W = video.masks.shape
    positions, visible = video.ground_truth(_grid_queries(H, W, 0))
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=-1)
    assert 0.5 < np.nanmax(steps) <= 4.0  # realistic per-frame motion
    inside = (positions[..., 0] >= 0) & (positions[..., 0] <= W - 1)
    inside &= (positions[..., 1] >= 0) & (positions[..., 1] <= H - 1)
    occluded = inside & ~visible
    assert occluded.mean() > 0.03
    hidden_then_back = (~visible[:-1] & visible[1:] & inside[:-1]).sum()
    assert hidden_then_back > 50
    layers = video.transforms.shape[1]
    assert set(np.unique(video.masks)) == set(range(layers))
    rotation = np.degrees(
        np.arctan2(video.transforms[:, 1:-1, 1, 0], video.transforms[:, 1:-1, 0, 0])
    )
    assert np.ptp(rotation, axis=0).max() > 10  # foreground shapes rotate
    scale = np.hypot(video.transforms[:, :, 0, 0], video.transforms[:, :, 1, 0])
    assert np.ptp(scale) > 0.05  # and change size


def test_voc_labels_name_shape_kinds_not_stacking_order(tmp_path) -> None:
    videos = [make_video(seed, num_frames=4, height=48, width=64) for seed in range(6)]
    kinds = [video.kinds for video in videos]
    assert all(k[0] == "background" and k[-1] == "bar" for k in kinds)
    assert {kind for k in kinds for kind in k[1:-1]} == {"ellipse", "polygon"}
    root = write_voc(videos, tmp_path, [f"v{i}" for i in range(6)], every=2, train_videos=4)
    labels = root / "VOC2012" / "SegmentationClass"
    bar = SHAPE_CLASSES.index("bar")
    for i, video in enumerate(videos):
        saved = np.asarray(Image.open(labels / f"v{i}_00002.png"))
        bar_layer = len(video.kinds) - 1
        assert set(np.unique(saved[video.masks[2] == bar_layer])) == {bar}
        for layer, kind in enumerate(video.kinds):
            on = video.masks[2] == layer
            assert np.all(saved[on] == SHAPE_CLASSES.index(kind))


def test_queries_before_their_frame_are_nan(video) -> None:
    positions, visible = video.ground_truth(np.array([[5.0, 40.0, 30.0]], np.float32))
    assert np.isnan(positions[:5]).all() and not visible[:5].any()
    assert np.allclose(positions[5, 0], [40.0, 30.0], atol=1e-4) and visible[5, 0]


def test_write_frame_folder(tmp_path) -> None:
    video = make_video(0, num_frames=6, height=64, width=80)
    folder = write_frame_folder(video, tmp_path / "JPEGImages")
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"{i:05d}.jpg" for i in range(6)]
    image = np.asarray(Image.open(files[2]))
    assert image.shape == (64, 80, 3)
    assert np.abs(image.astype(int) - video.frames[2]).mean() < 6


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_write_video_file(tmp_path, suffix) -> None:
    video = make_video(0, num_frames=9, height=64, width=80)
    path = write_video_file(video, tmp_path / f"clip{suffix}", fps=24)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 9
    assert frames[0].shape == (64, 80, 3)
    assert np.abs(frames[4].astype(int) - video.frames[4]).mean() < 10


# --- Conditions (synthetic_conditions): each property is there, and the ground truth holds ---

SIZE = {"num_frames": 48, "height": 96, "width": 128}


def _conditioned(*names: str, seed: int = 7):
    from mosic.stages.synthetic_conditions import conditions_named

    return make_video(seed, **SIZE, conditions=conditions_named(",".join(names)))


def _object_layers(video) -> np.ndarray:
    return np.flatnonzero(np.array(video.roles) == "object")


def test_conditions_named_and_independent_streams() -> None:
    from mosic.stages.synthetic_conditions import HARD, conditions_named

    assert conditions_named("all") == HARD and conditions_named("") == ()
    with pytest.raises(ValueError, match="did you mean 'rotation'"):
        conditions_named("rotaton")
    plain = make_video(7, **SIZE)
    lit = _conditioned("lighting")
    # A condition draws from its own stream: the plain scene's motion is unchanged.
    assert np.array_equal(plain.transforms, lit.transforms)
    assert np.array_equal(plain.masks, lit.masks)
    # Order of the names does not matter.
    a = make_video(7, **SIZE, conditions=conditions_named("objects,rotation"))
    b = make_video(7, **SIZE, conditions=conditions_named("rotation,objects"))
    assert np.array_equal(a.frames, b.frames)


def test_all_conditions_ground_truth_agrees_with_masks() -> None:
    """Independent objects, exits, rotation, lighting, noise, blur and low texture together:
    a visible ground-truth point lies on its own layer."""
    video = _conditioned("all")
    T, H, W = video.masks.shape
    assert len(_object_layers(video)) >= 3 + 1  # the plain scene's shapes and 3-5 more
    ys, xs = np.mgrid[0:H:4, 0:W:4]
    queries = np.stack([np.zeros(xs.size), xs.ravel(), ys.ravel()], 1).astype(np.float32)
    layer = video.masks[0, ys.ravel(), xs.ravel()]
    positions, visible = video.ground_truth(queries)
    agree = []
    for s in range(0, T, 5):
        on = visible[s]
        px = np.clip(np.round(positions[s, on]).astype(int), 0, [W - 1, H - 1])
        agree.append(video.masks[s, px[:, 1], px[:, 0]] == layer[on])
    assert np.mean(np.concatenate(agree)) > 0.95


def test_exits_leave_and_reenter() -> None:
    video = make_video(7, num_frames=96, height=96, width=128, conditions=_names("objects,exits"))
    _, H, W = video.masks.shape
    positions, visible = video.ground_truth(_grid_queries(H, W, 0))
    inside = (positions[..., 0] >= 0) & (positions[..., 0] <= W - 1)
    inside &= (positions[..., 1] >= 0) & (positions[..., 1] <= H - 1)
    left_then_back = ~inside[1:-1].all(axis=0) & inside[-1] & inside[0]
    assert left_then_back.sum() >= 5
    assert (visible[-1] & left_then_back).any()


def _names(names: str):
    from mosic.stages.synthetic_conditions import conditions_named

    return conditions_named(names)


def test_rotation_turns_objects_fast() -> None:
    video = _conditioned("objects", "rotation")
    objects = _object_layers(video)
    angle = np.degrees(
        np.unwrap(
            np.arctan2(video.transforms[:, objects, 1, 0], video.transforms[:, objects, 0, 0]),
            axis=0,
        )
    )
    rate = np.abs(angle[-1] - angle[0]) / (len(angle) - 1)
    assert np.all((rate > 1.5) & (rate < 4.5))


def test_lighting_noise_blur_low_texture_change_pixels_only() -> None:
    plain = make_video(7, **SIZE)
    lit = _conditioned("lighting")
    brightness = lit.frames.reshape(len(lit.frames), -1).mean(axis=1)
    contrast = lit.frames.reshape(len(lit.frames), -1).std(axis=1)
    assert np.ptp(brightness) > 10 and contrast.max() / contrast.min() > 1.15
    noisy = _conditioned("noise")
    diff = noisy.frames.astype(np.float32) - plain.frames
    assert np.array_equal(noisy.transforms, plain.transforms) and 2.5 < diff.std() < 8
    blurred = _conditioned("blur")
    sharpness = [
        np.abs(np.diff(v.frames.astype(np.float32), axis=2)).mean() for v in (plain, blurred)
    ]
    assert np.array_equal(blurred.transforms, plain.transforms)
    assert sharpness[1] < 0.99 * sharpness[0]
    flat = _conditioned("low-texture")
    local_std = [
        cv2.blur(v.frames[0, ..., 1].astype(np.float32) ** 2, (9, 9))
        - cv2.blur(v.frames[0, ..., 1].astype(np.float32), (9, 9)) ** 2
        for v in (plain, flat)
    ]
    plain_share = [np.mean(np.sqrt(np.clip(s, 0, None)) < 4.0) for s in local_std]
    assert plain_share[1] > plain_share[0] + 0.15


def test_scene_cut_hides_everything_before_it() -> None:
    video = _conditioned("scene-cut")
    T, H, W = video.masks.shape
    cut = T // 2
    positions, visible = video.ground_truth(_grid_queries(H, W, 0))
    assert visible[cut - 1].mean() > 0.5 and not visible[cut:].any()
    after, seen = video.ground_truth(_grid_queries(H, W, cut))
    assert seen[cut:].mean() > 0.5 and np.isnan(after[:cut]).all()


def test_synth_videos_cli_conditions(tmp_path) -> None:
    from typer.testing import CliRunner

    from mosic.cli import app

    args = ["synth-videos", str(tmp_path), "--count", "1", "--frames", "6", "--size", "64x48"]
    result = CliRunner().invoke(app, [*args, "--kind", "frames", "--conditions", "all"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "synth_000").glob("*.jpg"))) == 6
    result = CliRunner().invoke(app, [*args, "--conditions", "rotaton"])
    assert result.exit_code != 0
    assert "did you mean 'rotation'" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
