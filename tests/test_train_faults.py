"""Training killed for real: SIGKILL at random moments (one of them mid-checkpoint), and a rank
of a torchrun job; ``--resume auto`` continues to the run an uninterrupted process gives."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

from mosic.pipeline.checkpoint import list_checkpoints, load_checkpoint

STEPS = 20
# 4 steps an epoch (8 videos, 2 clips a batch): checkpoints mid-epoch and at epoch ends; two
# DataLoader workers (their seeding must resume exactly) and patch masking (the torch RNG).
SETTINGS = ["--backbone", "vit-tiny-test", "--unfreeze-blocks", 1, "--prototypes", 8,
            "--batch-size", 2, "--workers", 2, "--log-every", 1, "--device", "cpu",
            "--clip-frames", 3, "--clip-step", 6, "--input-size", 64,
            "--mask-ratio", 0.3, "--max-steps", STEPS, "--checkpoint-every", 2]  # fmt: skip


def launch(store: Path, out: Path, log: Path, *extra) -> subprocess.Popen:
    """``mosic train ... --resume auto`` (as a job script that is requeued would run it), its
    output into ``log``."""
    command = [sys.executable, "-m", "mosic", "train", "--store", store, "--output", out]
    command += [*SETTINGS, "--resume", "auto", *extra]
    with log.open("w") as sink:
        return subprocess.Popen([str(c) for c in command], stdout=sink, stderr=subprocess.STDOUT)


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.01)


def steps_logged(out: Path) -> int:
    """The newest step in metrics.jsonl (0 when none)."""
    found = re.findall(r'"step": (\d+)', (out / "metrics.jsonl").read_text())
    return int(found[-1]) if found else 0


def training_started(log: Path) -> bool:
    return "training vit-tiny-test" in log.read_text()


def resume_step(out: Path) -> int:
    """The step a ``--resume auto`` of ``out`` starts from (its newest checkpoint's)."""
    found = list_checkpoints(out)
    return load_checkpoint(found[-1])["step"] if found else 0


def kill_at_random(run: subprocess.Popen, out: Path, log: Path, rng: random.Random, base: int):
    """SIGKILL a few steps after the run resumed from step ``base``, at a random moment."""
    wait_for(lambda: training_started(log), run, "a start")  # metrics.jsonl cut to ``base``
    goal = base + rng.randint(3, 5)  # past a new checkpoint, then somewhere in a step
    wait_for(lambda: steps_logged(out) >= goal, run, f"step {goal}")
    time.sleep(rng.uniform(0.0, 0.15))
    assert run.poll() is None
    run.kill()
    run.wait()


def kill_while_writing_a_checkpoint(run: subprocess.Popen, out: Path, log: Path) -> Path:
    """Freeze the run at random moments until it is caught with a checkpoint half written (its
    ``.partial`` file exists while it is stopped), then SIGKILL it. Returns the partial file."""
    wait_for(lambda: training_started(log), run, "a start")
    process, rng = psutil.Process(run.pid), random.Random(3)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert run.poll() is None, "the run ended before a checkpoint write was caught"
        os.kill(run.pid, signal.SIGSTOP)
        while process.status() != psutil.STATUS_STOPPED:
            time.sleep(0.0005)
        partial = sorted((out / "checkpoints").glob("*.partial"))
        if partial:
            run.kill()
            run.wait()
            return partial[0]
        os.kill(run.pid, signal.SIGCONT)
        time.sleep(rng.uniform(0.0, 0.004))
    raise AssertionError("no checkpoint write caught")


def assert_same_state(a, b, where: str = "") -> None:
    """Bitwise equality of two loaded checkpoints (tensors, optimizer state, RNG, numbers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_sigkill_three_times_then_resume_gives_the_uninterrupted_run(train_store, tmp_path):
    reference = tmp_path / "reference"
    straight = launch(train_store, reference, tmp_path / "reference.log")
    out = tmp_path / "killed"
    rng = random.Random(16)
    logs = [tmp_path / f"run{i}.log" for i in range(4)]

    run = launch(train_store, out, logs[0])
    partial = kill_while_writing_a_checkpoint(run, out, logs[0])
    written = int(re.search(r"(\d{8})", partial.name)[1])
    assert not (out / "checkpoints" / f"checkpoint-{written:08d}.pt").exists()
    kept = [load_checkpoint(path)["step"] for path in list_checkpoints(out)]
    assert kept == [s for s in (written - 4, written - 2) if s > 0]  # whole, and older

    for i in (1, 2):
        base = resume_step(out)
        run = launch(train_store, out, logs[i])
        kill_at_random(run, out, logs[i], rng, base)
    assert f"removed {partial}: a checkpoint a stopped run did not finish writing" in (
        logs[1].read_text()
    )
    before = list_checkpoints(out)[-1]
    step = load_checkpoint(before)["step"]
    print(f"killed while writing checkpoint {written}, then twice; resuming from step {step}")
    assert 0 < step < STEPS  # the kills landed mid-run

    run = launch(train_store, out, logs[3])
    assert run.wait(timeout=900) == 0, logs[3].read_text()
    assert f"resuming from step {step} of {STEPS}: {before}" in logs[3].read_text()
    assert straight.wait(timeout=900) == 0, (tmp_path / "reference.log").read_text()
    final, expected = (load_checkpoint(list_checkpoints(p)[-1]) for p in (out, reference))
    assert final["step"] == expected["step"] == STEPS
    del final["config"]["output"], expected["config"]["output"]
    assert_same_state(final, expected)
    records = (out / "metrics.jsonl").read_text().splitlines()
    assert [int(re.search(r'"step": (\d+)', r)[1]) for r in records] == list(range(1, STEPS + 1))


def test_a_rank_killed_under_torchrun_stops_the_other_with_one_line(train_store, tmp_path):
    """torchrun with 2 gloo ranks: SIGKILL rank 1 mid-run; rank 0 exits at once with one line
    (no hang), and the job, started again, resumes from the last checkpoint."""
    out, steps = tmp_path / "ddp", 12
    settings = [*SETTINGS, "--batch-size", 4, "--workers", 0, "--max-steps", steps]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", 2, "-m", "mosic", "train", "--store", train_store]
    command += ["--output", out, *settings, "--resume", "auto"]
    command = [str(c) for c in command]
    log = tmp_path / "ddp.log"
    with log.open("w") as sink:
        job = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    wait_for(lambda: (out / "metrics.jsonl").is_file() and steps_logged(out) >= 3, job, "step 3")
    ranks = {
        int(p.environ().get("RANK", -1)): p
        for p in psutil.Process(job.pid).children(recursive=True)
    }
    ranks[1].kill()
    killed = time.monotonic()
    job.wait(timeout=300)
    print(f"torchrun exited {time.monotonic() - killed:.1f} s after rank 1 was killed")
    assert job.returncode != 0
    text = log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, text[-4000:]
    [line] = errors
    assert re.fullmatch(
        r"error: rank 0: (stopped by SIGTERM|lost contact with another rank \(.+\)); last good "
        r"checkpoint: \S+checkpoint-\d{8}\.pt; continue with --resume auto",
        line,
    ), line
    last = list_checkpoints(out)[-1]
    assert str(last) in line
    assert not psutil.pid_exists(ranks[0].pid) or ranks[0].status() == psutil.STATUS_ZOMBIE

    step = load_checkpoint(last)["step"]
    with log.open("w") as sink:
        again = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, timeout=900)
    text = log.read_text()
    assert again.returncode == 0, text
    assert f"resuming from step {step} of {steps}: {last}" in text
    assert load_checkpoint(list_checkpoints(out)[-1])["step"] == steps


def test_sigterm_is_one_line_naming_the_last_checkpoint(train_store, tmp_path):
    out, log = tmp_path / "run", tmp_path / "run.log"
    run = launch(train_store, out, log, "--workers", 0)
    wait_for(lambda: list_checkpoints(out), run, "a checkpoint")
    run.terminate()
    assert run.wait(timeout=120) == 2
    [line] = [line for line in log.read_text().splitlines() if line.startswith("error: ")]
    assert re.fullmatch(
        rf"error: stopped by SIGTERM; last good checkpoint: {out}/checkpoints/"
        r"checkpoint-\d{8}\.pt; continue with --resume auto",
        line,
    ), line


def test_a_rank_stopping_for_a_fault_is_not_killed_before_its_report(tmp_path):
    """torchrun follows one rank's failure with SIGTERM to the others: a rank that already left
    training with an error must still print its line (SIGTERM ignored from then on); outside a
    distributed job the previous SIGTERM handling comes back."""
    program = f"""
import os, signal, torch.distributed as dist
from mosic.pipeline.faults import stop_on_sigterm
if {{join}}:
    dist.init_process_group("gloo", init_method="file://{tmp_path}/rendezvous", rank=0,
                            world_size=1)
try:
    with stop_on_sigterm():
        raise RuntimeError("gloo: Connection closed by peer")
except RuntimeError:
    os.kill(os.getpid(), signal.SIGTERM)
    print("error: reported", flush=True)
"""
    ran = {}
    for join in (True, False):
        ran[join] = subprocess.run(
            [sys.executable, "-c", program.format(join=join)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert ran[True].returncode == 0 and ran[True].stdout == "error: reported\n", ran[True]
    assert ran[False].returncode == -signal.SIGTERM and not ran[False].stdout
