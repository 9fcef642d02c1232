"""Track handling from the store to the objective's input: a point keeps its object.

A store whose frames paint each object of a generated scene in its own flat colour, with the
generator's exact tracks, is read back through ``ClipDataset`` (the real read path and
augmentation: crop, resize, flip). At every later clip frame a visible point must still be on
the colour of its own object; the same check on deliberately broken tracks (the objective's
``corrupt_tracks`` ablations: axes swapped, tracks one frame late, another clip's tracks)
fails, so a bug of that kind anywhere in the path fails this test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mosic.pipeline.trajbench import write_ground_truth_store
from mosic.stages.data.augment import AugmentConfig
from mosic.stages.data.clips import ClipConfig, ClipDataset
from mosic.stages.drift_videos import drift_scene, render
from mosic.stages.objective import corrupt_tracks

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)


@pytest.fixture(scope="module")
def label_store(tmp_path_factory):
    """Two scenes whose frames are their object-id maps painted with ``PALETTE``."""
    path = tmp_path_factory.mktemp("labels") / "gt.zarr"
    videos = []
    for seed in (1, 4):
        scene = drift_scene(seed, num_frames=24, num_objects=3)
        labels = render(scene, np.random.default_rng(0)).objects
        videos.append((f"scene{seed}", PALETTE[labels], scene))
    extract = {"grid": 16, "query_every": 4, "horizon": 16, "size": "128x96"}
    return write_ground_truth_store(videos, path, extract, log=lambda _: None)


def label_agreement(frames, positions, visible) -> float:
    """Among points visible at frame 0 and a later frame, the fraction whose pixel at the later
    frame has the label (nearest palette colour) of their pixel at frame 0.

    frames: (B, F, 3, S, S) uint8; positions: (B, F, N, 2); visible: (B, F, N).
    """
    b, f, _, size, _ = frames.shape
    pixels = frames.permute(0, 1, 3, 4, 2).float()  # (B, F, S, S, 3)
    distance = (pixels[..., None, :] - torch.from_numpy(PALETTE).float()).norm(dim=-1)
    label = distance.argmin(-1)  # (B, F, S, S)
    xy = positions.round().long().clamp(0, size - 1)
    index = (xy[..., 1] * size + xy[..., 0]).flatten(2)  # (B, F, N)
    seen = label.flatten(2).gather(2, index)
    first = seen[:, :1].expand_as(seen)
    pairs = visible & visible[:, :1]
    pairs[:, 0] = False
    return float((seen == first)[pairs].float().mean())


def test_a_point_stays_on_its_object_through_the_read_path(label_store):
    config = ClipConfig(clip_frames=4, clip_step=5, augment=AugmentConfig(64))
    dataset = ClipDataset([label_store], config, seed=0)
    items = [dataset[(epoch, i)] for epoch in range(4) for i in range(len(dataset))]
    frames = torch.stack([item["frames"] for item in items])
    positions = torch.stack([item["positions"] for item in items])
    visible = torch.stack([item["visible"] for item in items])
    assert int((visible[:, 1:] & visible[:, :1]).sum()) > 500

    assert label_agreement(frames, positions, visible) > 0.95
    for broken in ("swap_xy", "shift_frame", "other_clip"):
        wrong, seen = corrupt_tracks(positions, visible, broken)
        assert label_agreement(frames, wrong, seen) < 0.85, broken
    still = positions[:, :1].expand_as(positions)
    assert label_agreement(frames, still, visible) < 0.85  # no tracks at all
