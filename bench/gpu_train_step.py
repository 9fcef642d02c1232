"""Training on one GPU: ViT-S/14 at 224 px, a global batch of 64 clips of 12 frames.

Part 1 times ``TrainStep`` (the step ``mosic train`` runs) alone, on generated tensors already
on the GPU: fp32 against bf16 autocast, PyTorch SDPA against xformers attention (when
installed), and bf16 with LoRA adapters (rank 16, needs peft) instead of the last 2 blocks.
Part 2 runs ``train`` itself on a store of generated frames with DataLoader workers and
reports the fraction of each step spent waiting for data. Prints a table naming the card and
writes ``<out>/gpu_train_step.json``. Needs CUDA; weights are random (timing only).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mosic.pipeline.train import train
from mosic.pipeline.train_config import TrainConfig
from mosic.pipeline.train_step import TrainStep, build_optimizer, build_student
from mosic.stages.model.backbone import patch_tokens
from mosic.stages.model.network import make_teacher
from mosic.stages.queries import grid_points, query_frames
from mosic.store_schema import TrackStore, VideoData, VideoMeta, encode_video

CLIPS, FRAMES, SIZE, GRID = 64, 12, 224, 16  # GRID x GRID = 256 tracks per clip, the default
STORE_GRID = 32  # extract-tracks' default grid, from which train() draws its 256 per clip


def timed_steps(cfg: TrainConfig, warmup: int, steps: int) -> dict:
    """Mean seconds of ``TrainStep`` on one fixed batch of generated tensors on the GPU."""
    device = torch.device(cfg.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    student = build_student(cfg).to(device)
    teacher = make_teacher(student)
    optimizer, scheduler = build_optimizer(student, cfg, total_steps=10**6)
    step = TrainStep(cfg, student, teacher, student, optimizer, scheduler, device)
    frames = torch.randint(0, 256, (CLIPS, FRAMES, 3, SIZE, SIZE), dtype=torch.uint8)
    start = torch.from_numpy(grid_points(SIZE, SIZE, GRID))  # (N, 2) (x, y)
    drift = torch.randn(CLIPS, 1, start.shape[0], 2).cumsum(0) * 2
    positions = (start + drift * torch.arange(FRAMES).view(1, FRAMES, 1, 1)).clamp(0, SIZE - 1)
    visible = torch.rand(CLIPS, FRAMES, start.shape[0]) > 0.1
    batch = [t.to(device) for t in (frames, positions.float(), visible)]
    for _ in range(warmup):
        step(*batch)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step(*batch)  # returns loss.item(): one sync per step, as in training
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    return {
        "precision": cfg.precision,
        "attention": cfg.attention,
        "step_s": seconds,
        "images_per_s": CLIPS * FRAMES / seconds,
        "clips_per_s": CLIPS / seconds,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
    }


def attention_agreement(cfg: TrainConfig) -> float:
    """Largest difference of xformers' patch features from SDPA's (same weights, fp32)."""
    torch.manual_seed(0)
    sdpa = build_student(replace(cfg, attention="sdpa")).cuda().eval()
    xformers = build_student(replace(cfg, attention="xformers")).cuda().eval()
    xformers.load_state_dict(sdpa.state_dict())
    images = torch.randn(8, 3, SIZE, SIZE, device="cuda")
    with torch.inference_mode():
        a = patch_tokens(sdpa.backbone, images)
        b = patch_tokens(xformers.backbone, images)
    return float((a - b).abs().max() / a.abs().max())


def write_store(path: Path, videos: int, frames: int, size: int) -> None:
    """A store of smooth moving gradients with straight-line tracks (no tracker needed)."""
    horizon, every = 67, 8
    store = TrackStore.create(
        path,
        {"tracker": {"name": "generated", "version": "1"}, "grid": STORE_GRID, "horizon": horizon,
         "query_every": every, "frame_stride": 1, "size": str(size)},
    )  # fmt: skip
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    starts = query_frames(frames, every, horizon)
    grid = grid_points(size, size, STORE_GRID)

    def one(v: int):
        rng = np.random.default_rng(v)
        velocity = rng.uniform(-1.5, 1.5, 2).astype(np.float32)
        phase = rng.uniform(0, 6.28, 3)
        t = np.arange(frames, dtype=np.float32).reshape(-1, 1, 1)
        channels = [
            127 + 120 * np.sin((xx - velocity[0] * t) / (17 + 5 * c) + (yy - velocity[1] * t) / 23
                               + phase[c])
            for c in range(3)
        ]  # fmt: skip
        video = np.stack(channels, axis=-1).astype(np.uint8)
        steps = np.arange(horizon, dtype=np.float32).reshape(1, -1, 1, 1)
        positions = np.broadcast_to(grid + velocity * steps, (len(starts), horizon, len(grid), 2))
        visible = ((positions >= 0) & (positions <= size - 1)).all(-1)
        meta = VideoMeta(f"generated/{v}", (size, size), 25.0, frames, 1)
        data = VideoData(meta, video, starts, positions.astype(np.float32), visible)
        return encode_video(f"v{v:05d}", data, store.frame_codec)

    with ThreadPoolExecutor(8) as pool:
        encoded = list(pool.map(one, range(videos)))
    for first in range(0, videos, 128):  # parts of 128 videos, as an extraction writes them
        writer = store.part_writer()
        for video in encoded[first : first + 128]:
            writer.append(video)
        store.add_to_index(writer.close())


def loader_run(cfg: TrainConfig, store: Path, out: Path, steps: int) -> dict:
    """``train`` from the store: clips/s and the data-wait fraction after the first step."""
    records: list[dict] = []
    run = replace(cfg, stores=(str(store),), output=str(out), max_steps=steps)
    train(run, on_step=records.append)
    timed = records[1:]
    return {
        "loader_workers": cfg.loader_workers,
        "steps": steps,
        "clips_per_s": sum(r["clips_per_s"] for r in timed) / len(timed),
        "data_wait_fraction": sum(r["data_wait_fraction"] for r in timed) / len(timed),
        "max_data_wait_fraction": max(r["data_wait_fraction"] for r in timed),
        "data_wait_per_step": [round(r["data_wait_fraction"], 3) for r in records],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--loader-workers", type=int, default=12)
    parser.add_argument("--loader-steps", type=int, default=24)
    parser.add_argument("--videos", type=int, default=256)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_train_step.py needs a CUDA GPU")
    card = torch.cuda.get_device_name()
    args.out.mkdir(parents=True, exist_ok=True)
    base = TrainConfig(
        stores=("unused",), backbone="dinov2-s14", batch_size=CLIPS, device="cuda",
        loader_workers=args.loader_workers, checkpoint_every=10**9, log_every=10**9,
    )  # fmt: skip
    attentions, agreement, xformers_note = ("sdpa",), None, "not installed"
    try:
        agreement = attention_agreement(replace(base, precision="fp32"))
        attentions = ("sdpa", "xformers")
    except (RuntimeError, NotImplementedError) as exc:  # missing, or built for another torch
        xformers_note = " ".join(str(exc).split())[:160]
    rows = [
        timed_steps(replace(base, precision=p, attention=a), warmup=3, steps=args.steps)
        for a in attentions
        for p in ("fp32", "bf16")
    ]
    lora = replace(base, precision="bf16", lora_rank=16)
    rows.append({**timed_steps(lora, warmup=3, steps=args.steps), "lora_rank": 16})
    work = Path(tempfile.mkdtemp(prefix="mosic-gpu-bench-"))
    try:
        started = time.perf_counter()
        write_store(work / "tracks.zarr", args.videos, frames=72, size=256)
        store_s = time.perf_counter() - started
        fastest = min((r for r in rows if "lora_rank" not in r), key=lambda r: r["step_s"])
        run_cfg = replace(base, precision=fastest["precision"], attention=fastest["attention"])
        loader = loader_run(run_cfg, work / "tracks.zarr", work / "run", args.loader_steps)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"training step on {card}: dinov2-s14 (random weights), {CLIPS} clips x {FRAMES} "
          f"frames at {SIZE} px, {GRID * GRID} tracks per clip")  # fmt: skip
    if agreement is None:
        print(f"  xformers not measured: {xformers_note}")
    else:
        print(f"  xformers against sdpa, fp32 features: max relative difference {agreement:.1e}")
    reference = rows[0]["step_s"]
    for r in rows:
        print(
            f"  {r['precision']:>4} {r['attention']:>8}"
            + (f" LoRA {r['lora_rank']:>2}" if "lora_rank" in r else " " * 8)
            + f": {1000 * r['step_s']:7.1f} ms/step, "
            f"{r['images_per_s']:8.0f} images/s, {r['peak_memory_gib']:5.1f} GiB peak, "
            f"{reference / r['step_s']:.2f}x fp32 sdpa"
        )
    print(
        f"  train() from a store ({args.videos} videos written in {store_s:.0f} s), "
        f"{fastest['precision']} {fastest['attention']}, {loader['loader_workers']} loader "
        f"workers: {loader['clips_per_s']:.1f} clips/s, waiting for data "
        f"{100 * loader['data_wait_fraction']:.1f} % of the step (max "
        f"{100 * loader['max_data_wait_fraction']:.1f} %)"
    )
    result = {"card": card, "torch": torch.__version__, "steps": rows, "train": loader}
    result["xformers_vs_sdpa_max_relative_difference"] = agreement
    result["xformers_note"] = None if agreement is not None else xformers_note
    (args.out / "gpu_train_step.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
