"""The trajectory benchmark's data, starting backbone and track-consistency column.

Used by ``mosic reproduce`` for rows whose ``generate:`` section has ``kind: drift`` (the mini
reproduction, docs/reproduce.md) and by ``mosic demo``. Data (``write_drift_data``), under the
reproduction's data root:

- ``videos/train<i>/``: the training videos (frame folders), tracked by stage one;
- ``stills.npy``: still frames of other videos, (M, H, W, 3) uint8, for the starting backbone;
- ``DAVIS/``: the held-out videos (every ``davis_every``-th frame) with *category* masks, for
  video object segmentation with dataset-level k-means (one cluster per category);
- ``VOCdevkit/``: held-out frames with category labels, for the linear probe;
- ``consistency.npz``: clips of held-out videos with the ground-truth tracks of a grid of
  points queried at each clip's first frame, for ``consistency_result``.

Seeds: video ``i`` of the training set is ``drift_scene(base + i)``, of the held-out set
``base + 10_000 + i``, of the stills ``base + 20_000 + i``, with ``base = data_seed *
1_000_000``: development runs use another ``data_seed`` than the reported table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mosic.pipeline.pretrain_stills import StillsConfig, pretrain_on_stills
from mosic.pipeline.reproduce_config import Generate
from mosic.stages.data.augment import AugmentConfig
from mosic.stages.drift_videos import DriftScene, DriftVideo, drift_scene, render
from mosic.stages.evaluation.features import DenseFeatures
from mosic.stages.evaluation.models import load_eval_backbone
from mosic.stages.evaluation.track_consistency import track_consistency
from mosic.stages.model.backbone import create_backbone
from mosic.stages.queries import grid_points, query_frames
from mosic.stages.synthetic import write_frame_folder
from mosic.stages.synthetic_datasets import write_davis, write_voc
from mosic.store_schema import FrameCodec, TrackStore, VideoData, VideoMeta, video_key

HELD_OUT, STILLS = 10_000, 20_000  # seed offsets of the held-out videos and of the stills
STILLS_EVERY = 4  # a still frame every 4 frames of a stills video
# Consistency clips: 4 frames 5 apart (a training clip's spacing) from frames 0, 16 and 32,
# tracks of a 12 x 12 grid queried at the first frame.
CONSISTENCY_STARTS, CONSISTENCY_FRAMES, CONSISTENCY_STEP, CONSISTENCY_GRID = (0, 16, 32), 4, 5, 12


def video_seed(spec: Generate, split: str, i: int) -> int:
    """The generator seed of video ``i`` of ``split`` ("train", "held-out" or "stills")."""
    offset = {"train": 0, "held-out": HELD_OUT, "stills": STILLS}[split]
    return spec.data_seed * 1_000_000 + offset + i


def _scene(spec: Generate, split: str, i: int) -> DriftScene:
    return drift_scene(
        video_seed(spec, split, i), num_frames=spec.frames, height=spec.height, width=spec.width
    )


def training_scene(spec: Generate, i: int) -> DriftScene:
    """The scene of training video ``i`` (``videos/train<i>``): its exact tracks."""
    return _scene(spec, "train", i)


def drift_video(spec: Generate, split: str, i: int) -> DriftVideo:
    """Video ``i`` of ``split`` ("train", "held-out" or "stills"), rendered: frames (T, H, W, 3)
    uint8, category masks (T, H, W) and the scene (its exact tracks)."""
    seed = video_seed(spec, split, i)
    return render(_scene(spec, split, i), np.random.default_rng((seed, 1)))


def write_drift_data(spec: Generate, root: Path, log: Callable[[str], None] = print) -> None:
    """Render and write every part of the benchmark's data under ``root`` (module docstring)."""
    log(
        f"generate: {spec.train_videos} training, {spec.eval_videos} held-out and "
        f"{spec.pretrain_videos} stills videos (drifting categories) -> {root}"
    )
    for i in range(spec.train_videos):
        write_frame_folder(drift_video(spec, "train", i), root / "videos" / f"train{i:03d}")
    stills = [
        drift_video(spec, "stills", i).frames[::STILLS_EVERY] for i in range(spec.pretrain_videos)
    ]
    if stills:
        np.save(root / "stills.npy", np.concatenate(stills))
    held_out = [drift_video(spec, "held-out", i) for i in range(spec.eval_videos)]
    names = [f"scene{i:03d}" for i in range(spec.eval_videos)]
    d = spec.davis_videos
    write_davis([v.every(spec.davis_every) for v in held_out[:d]], root / "DAVIS", names[:d])
    write_voc(held_out, root, names, spec.voc_every, spec.voc_train_videos)
    clips = {}
    for name, video in zip(names[:d], held_out[:d], strict=True):
        points = grid_points(spec.height, spec.width, CONSISTENCY_GRID)
        for start in CONSISTENCY_STARTS:
            frames = start + CONSISTENCY_STEP * np.arange(CONSISTENCY_FRAMES)
            if frames[-1] >= spec.frames:
                continue
            queries = np.concatenate([np.full((len(points), 1), start), points], axis=1)
            positions, visible = video.ground_truth(queries.astype(np.float32))
            key = f"{name}_{start:05d}"
            clips |= {f"{key}/frames": video.frames[frames], f"{key}/positions":
                      positions[frames], f"{key}/visible": visible[frames]}  # fmt: skip
    np.savez(root / "consistency.npz", **clips)


def consistency_clips(path: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The clips of ``consistency.npz``: (frames (F, H, W, 3) uint8, positions (F, N, 2),
    visible (F, N)) each."""
    with np.load(path) as data:
        keys = sorted({name.rsplit("/", 1)[0] for name in data.files})
        return [(data[f"{k}/frames"], data[f"{k}/positions"], data[f"{k}/visible"]) for k in keys]


def consistency_result(request: dict) -> dict:
    """The track-consistency column: ``request`` names ``model``, ``weights``, ``data`` (a
    ``consistency.npz``) and ``input_size``. Returns ``{"request", "metrics"}`` (metrics:
    ``track_consistency``'s)."""
    backbone = load_eval_backbone(request["model"], request["weights"])
    clips = consistency_clips(Path(request["data"]))
    metrics = track_consistency(DenseFeatures(backbone), clips, request["input_size"])
    return {"request": request, "metrics": metrics}


def start_weights_path(folder: Path, backbone: str, start: dict, data: dict) -> Path:
    """Where the starting backbone of these settings lives (the name hashes the settings and the
    data's, so a change of either builds another one)."""
    text = json.dumps({"start": start, "data": data}, sort_keys=True)
    return folder / f"{backbone}-stills-{hashlib.sha1(text.encode()).hexdigest()[:10]}.pth"


def build_start_weights(
    path: Path,
    backbone: str,
    start: dict,
    stills: Path,
    init_size: int,
    log: Callable[[str], None] = print,
) -> Path:
    """Pretrain ``backbone`` on the still frames ``stills`` (``stills.npy``) with the settings
    ``start`` (``StillsConfig`` fields, ``augment`` a mapping, and ``seed``); saves to ``path``."""
    settings = dict(start)
    seed = int(settings.pop("seed", 0))
    if "head_hidden" in settings:
        settings["head_hidden"] = tuple(settings["head_hidden"])
    if "augment" in settings:
        augment = settings["augment"]
        settings["augment"] = AugmentConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()}
        )
    config = StillsConfig(**settings)
    torch.manual_seed(seed)
    init = path.with_name(f"{path.stem}-init.pth")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(create_backbone(backbone, img_size=init_size).state_dict(), init)
    log(f"start model: {config.steps} steps on {stills} -> {path}")
    losses = pretrain_on_stills(np.load(stills), backbone, init, config, path, seed, log)
    record = {"config": asdict(config), "seed": seed, "losses": losses}
    path.with_suffix(".json").write_text(json.dumps(record))
    init.unlink()
    return path


def ground_truth_tracks(
    scene: DriftScene, grid: int, every: int, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The generator's exact tracks of ``scene`` laid out as stage one stores a tracker's: a
    ``grid`` x ``grid`` set of points queried every ``every`` frames, each followed for
    ``horizon`` frames. Returns query frames (Q,) int32, positions (Q, horizon, N, 2) float32
    and visible (Q, horizon, N) bool."""
    starts = query_frames(scene.num_frames, every, horizon)
    points = grid_points(scene.height, scene.width, grid)
    positions = np.empty((len(starts), horizon, len(points), 2), np.float32)
    visible = np.empty((len(starts), horizon, len(points)), bool)
    for q, start in enumerate(starts):
        queries = np.concatenate([np.full((len(points), 1), start), points], axis=1)
        p, v = scene.ground_truth(queries.astype(np.float32))
        positions[q], visible[q] = p[start : start + horizon], v[start : start + horizon]
    return starts, positions, visible


def write_ground_truth_store(
    videos: Iterable[tuple[str, np.ndarray, DriftScene]],
    path: Path,
    extract: dict,
    log: Callable[[str], None] = print,
    codec: FrameCodec | None = None,
) -> Path:
    """A track store holding the generator's exact tracks instead of a tracker's (the
    tracker-free diagnostic row). videos: (name, frames (T, H, W, 3) uint8, scene) each;
    ``extract``: ``grid``, ``query_every`` and ``horizon`` as for stage one, and ``size``
    (the frames' own); ``codec``: the frames' (default: the store's default)."""
    grid, every = int(extract["grid"]), int(extract["query_every"])
    horizon = int(extract["horizon"])
    attrs = {"tracker": {"name": "ground-truth", "version": 1}, "grid": grid,
             "query_every": every, "horizon": horizon, "size": extract["size"],
             "frame_stride": 1}  # fmt: skip
    store = TrackStore.open_for_extraction(path, attrs, codec)
    data = {}
    for name, frames, scene in videos:
        if frames.shape[:3] != (scene.num_frames, scene.height, scene.width):
            raise ValueError(f"{name}: frames {frames.shape[:3]} are not the scene's")
        starts, positions, visible = ground_truth_tracks(scene, grid, every, horizon)
        meta = VideoMeta(name, (scene.height, scene.width), None, len(frames), 1)
        data[video_key(name)] = VideoData(meta, frames, starts, positions, visible)
    records = store.write_part(data)
    log(f"ground-truth tracks: {len(records)} videos -> {path}")
    return path


def training_videos(spec: Generate, videos: Path) -> Iterator[tuple[str, np.ndarray, DriftScene]]:
    """(name, frames as written, scene) of every training video under ``videos``."""
    from PIL import Image

    for i in range(spec.train_videos):
        folder = videos / f"train{i:03d}"
        frames = np.stack([np.asarray(Image.open(f).convert("RGB"))
                           for f in sorted(folder.glob("*.jpg"))])  # fmt: skip
        yield folder.name, frames, _scene(spec, "train", i)
