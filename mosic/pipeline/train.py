"""Stage two: train MoSiC from track stores (no tracker runs here).

One process, or one process per GPU under ``torchrun`` (DistributedDataParallel; gloo on CPU,
nccl on GPU). Rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mosic.pipeline.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mosic.pipeline.train_config import TrainConfig
from mosic.pipeline.train_eval import TrainEvaluator
from mosic.pipeline.train_step import (
    NonFiniteLoss,
    TrainStep,
    build_optimizer,
    build_student,
)
from mosic.stages.data.clips import ClipDataset
from mosic.stages.data.sampler import ClipBatchSampler, EpochBatches
from mosic.stages.model.backbone import check_resumable_grid
from mosic.stages.model.network import MoSiCNetwork, make_teacher
from mosic.stages.objective import StepStats


class TrainingError(Exception):
    """Training cannot go on; str() is one line (the last good checkpoint is kept)."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process logs and writes checkpoints."""
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the torchrun job if there is one (env RANK / WORLD_SIZE), else a single process."""
    if "RANK" not in os.environ or dist.is_initialized():
        return Distributed()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]))


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainResult:
    """What a finished run reports."""

    steps: int
    final_checkpoint: Path
    losses: list[float]
    student: MoSiCNetwork


def train(
    cfg: TrainConfig,
    resume: Path | None = None,
    on_step: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train from ``cfg.stores``; resume from a checkpoint if given. Returns the final state."""
    device = pick_device(cfg.device)
    job = init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", job.local_rank)
        torch.cuda.set_device(device)
    if cfg.batch_size % job.world_size:
        raise TrainingError(
            f"--batch-size {cfg.batch_size} does not split over {job.world_size} ranks"
        )
    evaluator = TrainEvaluator(cfg.evaluation, device)  # checks the eval data before any work
    torch.manual_seed(cfg.seed)
    if device.type == "cpu":  # leave a core to each DataLoader worker
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - cfg.loader_workers))

    dataset = ClipDataset(list(cfg.stores), cfg.clip, seed=cfg.seed)
    student = build_student(cfg).to(device)
    teacher = make_teacher(student)
    per_rank = cfg.batch_size // job.world_size
    steps_per_epoch = len(dataset) // cfg.batch_size
    if steps_per_epoch == 0:
        raise TrainingError(
            f"{len(dataset)} usable videos make no batch of {cfg.batch_size} clips; "
            "lower --batch-size or add videos"
        )
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    optimizer, scheduler = build_optimizer(student, cfg, total_steps)
    step = 0
    if resume is not None:
        step = _restore(resume, cfg, student, teacher, optimizer, scheduler, device)

    sampler = ClipBatchSampler(
        dataset,
        per_rank,
        rank=job.rank,
        world_size=job.world_size,
        seed=cfg.seed,
        store_weights=list(cfg.store_weights) if cfg.store_weights else None,
        start_batch=step % steps_per_epoch,
    )
    epochs = range(step // steps_per_epoch, (total_steps - 1) // steps_per_epoch + 1)
    loader = DataLoader(
        dataset,
        batch_sampler=EpochBatches(sampler, epochs),  # one stream: no stall at an epoch's end
        num_workers=cfg.loader_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed),  # leaves the global RNG alone
    )
    model = DistributedDataParallel(student) if job.world_size > 1 else student
    try:
        train_step = TrainStep(cfg, student, teacher, model, optimizer, scheduler, device)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    log = _Logger(cfg, job, dataset, total_steps) if job.main else None
    losses: list[float] = []
    last_good = resume

    waited = time.perf_counter()
    for batch in loader:
        data_wait = time.perf_counter() - waited
        epoch = step // steps_per_epoch
        frames = batch["frames"].to(device, non_blocking=True)
        positions = batch["positions"].to(device, non_blocking=True)
        visible = batch["visible"].to(device, non_blocking=True)
        try:
            loss, stats = train_step(frames, positions, visible)
        except NonFiniteLoss as exc:
            where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint yet"
            raise TrainingError(f"{exc} at step {step + 1}; stopped ({where})") from None
        step += 1
        losses.append(loss)
        record = _record(step, epoch, loss, scheduler, stats, data_wait, waited, cfg)
        if evaluator.due(step):  # rank 0 evaluates while the others wait
            if job.main:
                record.update(evaluator(student.backbone, step))
            if job.world_size > 1:
                dist.barrier()
        if log:
            log.step(record)
        if on_step:
            on_step(record)
        if step % cfg.checkpoint_every == 0 or step == total_steps:
            last_good = _save(cfg, job, student, teacher, optimizer, scheduler, step)
        waited = time.perf_counter()
        if step >= total_steps:
            break
    if log:
        log.close()
    if job.world_size > 1:
        dist.barrier()
    return TrainResult(step, last_good, losses, student)


def _record(step, epoch, loss, scheduler, stats: StepStats, data_wait, started, cfg) -> dict:
    seconds = time.perf_counter() - started
    return {
        "step": step,
        "epoch": epoch,
        "loss": loss,
        "lr_backbone": scheduler.get_last_lr()[0],
        "lr_head": scheduler.get_last_lr()[-1],
        "visible_fraction": stats.visible_fraction,
        "cluster_usage": stats.cluster_usage,
        "sinkhorn_marginal_error": stats.marginal_error,
        "data_wait_fraction": data_wait / max(seconds, 1e-9),
        "clips_per_s": cfg.batch_size / max(seconds, 1e-9),
    }


def _save(cfg, job, student, teacher, optimizer, scheduler, step) -> Path | None:
    if not job.main:
        return None
    state = {
        "format": "mosic-checkpoint-1",
        "step": step,
        "config": cfg.to_dict(),
        "student": student.state_dict(),
        "teacher": teacher.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
    }
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    return save_checkpoint(state, cfg.output, step, cfg.keep_checkpoints)


def _restore(path, cfg, student, teacher, optimizer, scheduler, device) -> int:
    state = load_checkpoint(path)
    saved = state.get("config", {})
    if saved.get("backbone") != cfg.backbone or saved.get("prototypes") != cfg.prototypes:
        raise CheckpointError(
            f"{path}: trained with backbone {saved.get('backbone')!r} and "
            f"{saved.get('prototypes')} prototypes, not {cfg.backbone!r} and {cfg.prototypes}"
        )
    if saved.get("lora_rank", 0) != cfg.lora_rank:
        raise CheckpointError(
            f"{path}: trained with --lora-rank {saved.get('lora_rank', 0)}, not {cfg.lora_rank}"
        )
    check_resumable_grid(student.backbone, state["student"], "backbone.", path)
    student.load_state_dict(state["student"])
    teacher.load_state_dict(state["teacher"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and device.type == "cuda":
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"])


class _Logger:
    """Rank 0's logs: a progress bar, TensorBoard scalars and a JSONL file."""

    def __init__(self, cfg: TrainConfig, job: Distributed, dataset: ClipDataset, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        from torch.utils.tensorboard import SummaryWriter

        out = Path(cfg.output)
        out.mkdir(parents=True, exist_ok=True)
        console = Console(highlight=False)
        console.print(
            f"training {cfg.backbone} on {len(dataset)} videos ({dataset.skipped} too short for "
            f"a {cfg.clip.clip_frames}x{cfg.clip.clip_step} clip, skipped), {job.world_size} "
            f"process(es), {total} steps -> {out}"
        )
        self.jsonl = (out / "metrics.jsonl").open("a")
        self.tensorboard = SummaryWriter(str(out / "tensorboard"))
        self.every = cfg.log_every
        self.progress = Progress(
            TextColumn("step {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]:.4f} lr {task.fields[lr]:.2e}"),
            TextColumn("{task.fields[clips]:.1f} clips/s"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task("train", total=total, loss=0.0, lr=0.0, clips=0.0)
        self.progress.start()

    def step(self, record: dict) -> None:
        """Log one step's record; TensorBoard gets every ``log_every``-th and every evaluation."""
        self.jsonl.write(json.dumps(record) + "\n")
        due = record["step"] % self.every == 0
        for name, value in record.items():
            if name not in ("step", "epoch") and (due or name.startswith("eval/")):
                self.tensorboard.add_scalar(name, value, record["step"])
        if due or any(name.startswith("eval/") for name in record):
            self.jsonl.flush()
        self.progress.update(
            self.task,
            completed=record["step"],
            loss=record["loss"],
            lr=record["lr_head"],
            clips=record["clips_per_s"],
        )

    def close(self) -> None:
        self.progress.stop()
        self.jsonl.close()
        self.tensorboard.close()
