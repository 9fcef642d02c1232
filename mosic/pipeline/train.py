"""Stage two: train MoSiC from track stores (no tracker runs here).

One process, or one process per GPU under ``torchrun`` (DistributedDataParallel; gloo on CPU,
nccl on GPU). Rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from rich.console import Console
from rich.text import Text
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mosic.pipeline.checkpoint import CheckpointError, list_checkpoints, save_checkpoint
from mosic.pipeline.faults import Stopped, lost_rank, stop_on_sigterm
from mosic.pipeline.job import Distributed, join_job
from mosic.pipeline.run_config import show_changes
from mosic.pipeline.run_folder import METRICS, Start, find_start, prepare_folder
from mosic.pipeline.train_config import TrainConfig
from mosic.pipeline.train_eval import TrainEvaluator
from mosic.pipeline.train_step import (
    NonFiniteLoss,
    TrainStep,
    build_optimizer,
    build_student,
)
from mosic.stages.data.clips import ClipDataset, CorruptClips
from mosic.stages.data.sampler import ClipBatchSampler, EpochBatches
from mosic.stages.model.backbone import check_resumable_grid
from mosic.stages.model.network import MoSiCNetwork, make_teacher
from mosic.stages.objective import StepStats
from mosic.store_schema import StoreError


class TrainingError(Exception):
    """Training cannot go on; str() is one line (the last good checkpoint is kept)."""


# Rank 0's lines: paths and reasons printed as they are (no markup, no wrapping).
_out = Console(markup=False, highlight=False, soft_wrap=True)
_err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


@dataclass
class TrainResult:
    """What a finished run reports."""

    steps: int
    final_checkpoint: Path
    losses: list[float]
    student: MoSiCNetwork


def train(
    cfg: TrainConfig,
    resume: str | Path | None = None,
    on_step: Callable[[dict], None] | None = None,
    allow_changes: tuple[str, ...] = (),
) -> TrainResult:
    """Train from ``cfg.stores`` into the run folder ``cfg.output``; returns the final state.

    ``resume``: None (a new run: the folder must hold none), ``"auto"`` (the folder's newest
    checkpoint that loads, else step 0) or a checkpoint's path. A resume refuses settings that
    differ from the checkpoint's unless they are operational or named in ``allow_changes``
    (see ``run_folder``); a finished run returns at once. SIGTERM, and under torchrun the loss
    of another rank, end training with a one-line TrainingError (the last checkpoint is kept).
    """
    try:
        with stop_on_sigterm():
            return _train(cfg, resume, on_step, allow_changes)
    except Stopped:
        raise TrainingError(_stopped(cfg, "stopped by SIGTERM")) from None
    except RuntimeError as exc:
        reason = lost_rank(exc)
        if reason is None:
            raise
        raise TrainingError(_stopped(cfg, f"lost contact with another rank ({reason})")) from None


def _stopped(cfg: TrainConfig, reason: str) -> str:
    """``rank 1: <reason>; last good checkpoint: <path>; continue with --resume auto``."""
    rank = f"rank {dist.get_rank()}: " if dist.is_initialized() else ""
    found = list_checkpoints(cfg.output)
    where = f"last good checkpoint: {found[-1]}" if found else "no checkpoint yet"
    return f"{rank}{reason}; {where}; continue with --resume auto"


def _train(
    cfg: TrainConfig,
    resume: str | Path | None,
    on_step: Callable[[dict], None] | None,
    allow_changes: tuple[str, ...],
) -> TrainResult:
    device, job = join_job(cfg.device, cfg.loader_workers)
    if cfg.batch_size % job.world_size:
        raise TrainingError(
            f"--batch-size {cfg.batch_size} does not split over {job.world_size} ranks"
        )
    evaluator = TrainEvaluator(cfg.evaluation, device)  # checks the eval data before any work
    start = find_start(cfg, resume, allow_changes)
    torch.manual_seed(cfg.seed)

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
    if start.state is not None:
        _restore(start, student, teacher, optimizer, scheduler, device)
    step = start.step
    if job.main:
        for line in start.warnings:
            _warn(line)
    if step >= total_steps:
        if job.main:
            _say(
                f"{cfg.output}: the run is finished (step {step} of {total_steps}); to train "
                "longer, raise --max-steps or --epochs and add --allow-change max_steps (or "
                "epochs)"
            )
        return TrainResult(step, start.checkpoint, [], student)
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
    if job.world_size > 1:  # every rank has read the run folder before rank 0 writes to it
        _same_start(step, device)
    if job.main:
        for line in prepare_folder(cfg, start):
            _say(line)
        if step == 0 and not cfg.weights and not cfg.pretrained:
            _warn(
                f"the backbone ({cfg.backbone}) starts from random weights: no --weights and "
                "no --pretrained"
            )
    log = _Logger(cfg, job, dataset, start, total_steps) if job.main else None
    losses: list[float] = []
    last_good = start.checkpoint

    corrupt = CorruptClips(dataset, cfg.max_corrupt_fraction, _warn)
    waited = time.perf_counter()
    for batch in _one_line_store_errors(loader):
        corrupt.add(batch["corrupt"], batch["corrupt_video"])
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
        record["corrupt_clips"] = corrupt.total
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
            last_good = _save(cfg, job, student, teacher, optimizer, scheduler, step, start)
        waited = time.perf_counter()
        if step >= total_steps:
            break
    if log:
        log.close()
    if job.world_size > 1:
        dist.barrier()
    return TrainResult(step, last_good, losses, student)


def _same_start(step: int, device: torch.device) -> None:
    """Every rank starts from the same step (they read the run folder each)."""
    span = torch.tensor([step, -step], device=device)
    dist.all_reduce(span, op=dist.ReduceOp.MAX)
    if span[0] != -span[1]:
        raise TrainingError(
            f"the ranks would start from steps {-int(span[1])} to {int(span[0])}: every rank "
            "must see the same --output folder (a filesystem all nodes share)"
        )


def _say(line: str) -> None:
    _out.print(line)


def _warn(line: str) -> None:
    _err.print(Text.assemble(("warning: ", "yellow"), line))


def _one_line_store_errors(loader: DataLoader):
    """The loader's batches; a store error (raised here or in a loader worker, which wraps it
    in its traceback) becomes a TrainingError of one line."""
    try:
        yield from loader
    except StoreError as exc:
        last = str(exc).strip().splitlines()[-1]
        raise TrainingError(last.split("StoreError: ", 1)[-1]) from None


def _record(step, epoch, loss, scheduler, stats: StepStats, data_wait, started, cfg) -> dict:
    seconds = time.perf_counter() - started
    return {
        "step": step,
        "epoch": epoch,
        "loss": loss,
        "lr_backbone": scheduler.get_last_lr()[0],
        "lr_head": scheduler.get_last_lr()[-1],
        "points_per_clip": stats.points_per_clip,
        "visible_fraction": stats.visible_fraction,
        "cluster_usage": stats.cluster_usage,
        "sinkhorn_marginal_error": stats.marginal_error,
        "data_wait_fraction": data_wait / max(seconds, 1e-9),
        "clips_per_s": cfg.batch_size / max(seconds, 1e-9),
    }


def _save(cfg, job, student, teacher, optimizer, scheduler, step, start: Start) -> Path | None:
    if not job.main:
        return None
    state = {
        "format": "mosic-checkpoint-1",
        "step": step,
        "config": cfg.to_dict(),
        "changes": start.changes,
        "student": student.state_dict(),
        "teacher": teacher.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
    }
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    return save_checkpoint(state, cfg.output, step, cfg.keep_checkpoints)


def _restore(start: Start, student, teacher, optimizer, scheduler, device) -> None:
    """Load a checkpoint's state; the learning rates, weight decay and schedule stay those of
    the settings (they differ from the checkpoint's after ``--allow-change``): the schedule of
    the new total, at the checkpoint's step."""
    state = start.state
    planned = [(group["initial_lr"], group["weight_decay"]) for group in optimizer.param_groups]
    check_resumable_grid(student.backbone, state["student"], "backbone.", start.checkpoint)
    try:
        student.load_state_dict(state["student"])
        teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError) as exc:
        first = " ".join(str(exc).split())[:160]
        raise CheckpointError(
            f"{start.checkpoint}: does not fit the model of these settings ({first})"
        ) from None
    scheduler.load_state_dict(state["scheduler"])
    for group, (lr, decay), factor in zip(
        optimizer.param_groups, planned, scheduler.lr_lambdas, strict=True
    ):
        group["initial_lr"], group["weight_decay"] = lr, decay
        group["lr"] = lr * factor(scheduler.last_epoch)
    scheduler.base_lrs = [lr for lr, _ in planned]
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and device.type == "cuda":
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])


class _Logger:
    """Rank 0's logs: a progress bar, TensorBoard scalars and a JSONL file."""

    def __init__(
        self, cfg: TrainConfig, job: Distributed, dataset: ClipDataset, start: Start, total: int
    ):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        from torch.utils.tensorboard import SummaryWriter

        out = Path(cfg.output)
        console = _out
        console.print(
            f"training {cfg.backbone} on {len(dataset)} videos ({dataset.skipped} too short for "
            f"a {cfg.clip.clip_frames}x{cfg.clip.clip_step} clip, skipped), {job.world_size} "
            f"process(es), {total} steps -> {out}"
        )
        if start.checkpoint:
            changed = start.changes[-1] if start.changes else None
            note = ""
            if changed and changed["step"] == start.step:
                note = f" (changed: {show_changes(changed['changed'])})"
            console.print(f"resuming from step {start.step} of {total}{note}: {start.checkpoint}")
        self.jsonl = (out / METRICS).open("a")
        # A resumed run's TensorBoard hides what a killed run logged past the checkpoint.
        self.tensorboard = SummaryWriter(str(out / "tensorboard"), purge_step=start.step + 1)
        self.every = cfg.log_every
        self.progress = Progress(
            TextColumn("step {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]:.4f} lr {task.fields[lr]:.2e}"),
            TextColumn("{task.fields[clips]:.1f} clips/s"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(
            "train", total=total, completed=start.step, loss=float("nan"), lr=0.0, clips=0.0
        )
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
