"""Stage one on one GPU: CoTracker3 through the whole extraction (decode, track, write).

CoTracker3 is built from a local co-tracker clone (``--cotracker``; docs/benchmarks.md says how
to get one onto a GPU machine) with random weights: the same computation as the real ones. For
each setting (storage size, window, worker processes on the GPU, dtype) it runs
``run_extraction`` on generated videos (640x360 mp4, 135 frames: YouTube-VOS length) and
reports, in the steady state (from the end of each worker's first video to the end of its
last): frames/s per GPU, the tracker's frame-passes per stored frame, the GPU busy fraction
sampled with NVML (nvidia-ml-py) every 0.1 s, peak GPU memory, and the share of each worker's
time spent inside the tracker. Then the GPU-hours that YouTube-VOS train and Kinetics-400 would
take at the default setting's rate. ``--smoke`` runs the same code on the CPU at tiny sizes
(the test suite does, with a stand-in clone). Prints a table and writes
``<out>/gpu_stage_one.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

DATASETS = {"YouTube-VOS train": 470_000, "Kinetics-400 (30 fps)": 72_000_000}
GPU_SETTINGS = {"grid": 32, "query_every": 8, "horizon": 67}  # 32x32: the team's default grid
SMOKE_SETTINGS = {"grid": 4, "query_every": 4, "horizon": 9}


@dataclass(frozen=True)
class Setting:
    """One measured configuration; ``window`` None is the tracker's default."""

    size: str
    window: int | None = None
    workers: int = 1
    dtype: str = "float32"

    def label(self) -> str:
        window = "default" if self.window is None else str(self.window)
        return f"size {self.size}, window {window}, {self.workers} worker(s), {self.dtype}"


def fail(message: str) -> None:
    """Stop with one line on stderr, exit code 2."""
    print(f"gpu_stage_one.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_clone(clone: Path) -> None:
    """One clear line if ``clone`` is not a co-tracker clone."""
    if not (clone / "hubconf.py").is_file():
        fail(
            f"no co-tracker clone at {clone} (no hubconf.py); copy one there or pass "
            "--cotracker CLONE (docs/benchmarks.md, 'Stage one on a GPU')"
        )


def random_checkpoint(clone: Path, path: Path) -> Path:
    """CoTracker3 offline built from ``clone`` with its random initial weights, saved as a
    state dict at ``path`` (then loaded by mosic's tracker as a real checkpoint would be)."""
    import torch

    predictor = torch.hub.load(str(clone), "cotracker3_offline", source="local", pretrained=False)
    torch.save(predictor.model.state_dict(), path)
    return path


def drifting_video(seed: int, frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8: a smooth random texture drifting by whole pixels (the tracker's cost
    does not depend on what the frames show; this renders in milliseconds)."""
    import cv2

    rng = np.random.default_rng(seed)
    margin = 2 * frames
    coarse = rng.integers(0, 256, (height // 8 + margin // 4, width // 8 + margin // 4, 3))
    texture = cv2.resize(coarse.astype(np.uint8), (width + margin, height + margin))
    vx, vy = rng.integers(-2, 3, 2)
    x0, y0 = margin // 2, margin // 2
    return np.stack(
        [
            texture[y0 + vy * t // 2 : y0 + vy * t // 2 + height,
                    x0 + vx * t // 2 : x0 + vx * t // 2 + width]
            for t in range(frames)
        ]
    )  # fmt: skip


def write_one(args: tuple) -> str:
    """Encode one generated video to mp4 (a process-pool task)."""
    from mosic.stages.synthetic import write_video_file

    seed, frames, height, width, path = args
    write_video_file(SimpleNamespace(frames=drifting_video(seed, frames, height, width)), path)
    return path


class GpuSampler:
    """Samples the GPU's busy percentage and memory with NVML every ``every`` seconds."""

    def __init__(self, every: float = 0.1):
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
        index = int(visible) if visible.isdigit() else 0
        self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        self.samples: list[tuple[float, float, float]] = []  # (monotonic s, busy %, used GiB)
        self.every, self._stop = every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            busy = self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
            used = self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**30
            self.samples.append((time.monotonic(), float(busy), used))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.nvml.nvmlShutdown()

    def between(self, start: float, end: float) -> dict:
        """Mean and 10th percentile of busy % and the most memory used in [start, end]."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if not inside:
            return {"gpu_busy": None, "gpu_busy_p10": None, "nvml_memory_gib": None}
        busy = np.array([s[1] for s in inside]) / 100
        return {
            "gpu_busy": float(busy.mean()),
            "gpu_busy_p10": float(np.percentile(busy, 10)),
            "nvml_memory_gib": max(s[2] for s in inside),
        }


class TimedTracker:
    """A tracker that records when each of its ``track_batch`` calls (one per video) ran."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.calls: list[tuple[float, float]] = []  # (monotonic start, end)

    def __getattr__(self, name: str):
        return getattr(self.tracker, name)

    def track_batch(self, videos: list, horizon: int | None = None) -> list:
        started = time.monotonic()
        results = self.tracker.track_batch(videos, horizon=horizon)
        self.calls.append((started, time.monotonic()))
        return results


def measure(
    setting: Setting, base: dict, videos: list[str], frames: int, work: Path, budget: float
) -> dict:
    """In a worker process: one setting through ``run_extraction``; a probe first (one query
    set of one video: loads the weights, warms the device), then about ``budget`` seconds of
    videos of ``frames`` frames (at least 2).
    The steady state runs from the start of the first video's tracking to the end of the last
    one's (the pipeline's fill and drain left out), gaps between videos included."""
    import torch

    from mosic.pipeline.extract import ExtractConfig, InProcessRunner, open_store, run_extraction
    from mosic.stages.queries import frame_passes
    from mosic.stages.video_io import VideoSource

    config = replace(
        ExtractConfig(**base), size=setting.size, window=setting.window,
        tracker_dtype=setting.dtype,
    )  # fmt: skip
    sources = [VideoSource(Path(v), Path(v).name) for v in videos]
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    probe_config = replace(config, max_frames=config.horizon)  # one query set: quick
    store, tracker = open_store(str(work / f"probe-{tag}.zarr"), probe_config)
    runner = InProcessRunner(store, probe_config, tracker)
    probe = run_extraction(sources[:1], store, probe_config, runner)
    if probe.failures:
        raise RuntimeError(probe.failures[0].reason)
    # A full video tracks frames x frame-passes frames; the probe tracked ``horizon``.
    passes = frame_passes(frames, config.query_every, config.horizon, config.window_for(tracker))
    per_video = probe.seconds * frames * passes / config.horizon
    count = min(len(sources), max(2, math.ceil(budget / max(per_video, 1e-3))))
    cuda = torch.cuda.is_available() and config.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    store, tracker = open_store(str(work / f"timed-{tag}.zarr"), config)
    timed_tracker = TimedTracker(tracker)
    timed = run_extraction(
        sources[:count], store, config, InProcessRunner(store, config, timed_tracker)
    )
    if timed.failures:
        raise RuntimeError(timed.failures[0].reason)
    calls = timed_tracker.calls
    start, end = calls[0][0], calls[-1][1]
    result = {
        "start": start,
        "end": end,
        "videos": timed.done,
        "frames": timed.frames,
        "frames_per_s": timed.frames / (end - start),
        "run_frames_per_s": timed.frames / timed.seconds,  # with the fill and the drain
        "frame_passes": timed.frame_passes,
        "tracker_share": sum(b - a for a, b in calls) / (end - start),
        "window": config.window_for(tracker),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }
    del tracker
    if cuda:
        torch.cuda.empty_cache()
    return result


def worker(job: dict, queue, barrier) -> None:
    """A worker process: measure each of ``job``'s settings in turn, reporting (its index, the
    result) to ``queue``."""
    for index, setting in enumerate(job["settings"]):
        try:
            if time.time() > job["deadline"]:
                raise TimeoutError("--time-limit reached before this setting")
            if barrier is not None:
                barrier.wait(timeout=600)
            result = measure(setting, job["base"], job["videos"], job["frames"], job["work"],
                             job["budget"])  # fmt: skip
        except Exception as exc:  # reported, and the next setting still runs
            detail = traceback.format_exception_only(exc)[-1].strip()
            result = {"error": " ".join(detail.split())[:300]}
        queue.put((index, result))


def run_group(settings: list[Setting], workers: int, job: dict, timeout: float) -> list:
    """Run ``settings`` in ``workers`` spawned processes at once, each on its share of the
    videos; returns (setting, [result per worker]) in order."""
    context = multiprocessing.get_context("spawn")  # CUDA and fork do not mix
    queue = context.Queue()
    barrier = context.Barrier(workers) if workers > 1 else None
    videos = job["videos"]
    processes = [
        context.Process(
            target=worker,
            args=({**job, "settings": settings, "videos": videos[i::workers]}, queue, barrier),
        )
        for i in range(workers)
    ]
    for p in processes:
        p.start()
    results: list[list[dict]] = [[] for _ in settings]
    deadline = time.monotonic() + timeout
    try:
        for _ in range(len(settings) * workers):
            index, result = queue.get(timeout=max(deadline - time.monotonic(), 1))
            results[index].append(result)
    except Exception:  # a worker died or hung: what was measured is still reported
        pass
    finally:
        for p in processes:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    return list(zip(settings, results, strict=True))


def combine(setting: Setting, per_worker: list[dict], sampler: GpuSampler | None) -> dict:
    """One row: the workers' rates added up over the interval where all of them ran."""
    row = {**asdict(setting), "window_setting": setting.window}
    errors = [r["error"] for r in per_worker if "error" in r]
    if errors or len(per_worker) < setting.workers:
        return {**row, "error": errors[0] if errors else "a worker did not report"}
    start = max(r["start"] for r in per_worker)
    end = min(r["end"] for r in per_worker)
    peaks = [r["peak_memory_gib"] for r in per_worker if r["peak_memory_gib"] is not None]
    row.update(
        window=per_worker[0]["window"],
        frames_per_s=sum(r["frames_per_s"] for r in per_worker),
        frame_passes=sum(r["frame_passes"] for r in per_worker) / len(per_worker),
        tracker_share=min(r["tracker_share"] for r in per_worker),
        videos=sum(r["videos"] for r in per_worker),
        peak_memory_gib=max(peaks) if peaks else None,
        seconds=end - start,
    )
    if sampler is not None:  # skip the first second: a sample covers up to 1 s before it
        row.update(sampler.between(start + 1.0, end))
    return row


def plan(args: argparse.Namespace) -> list[tuple[list[Setting], int]]:
    """Groups of settings and their worker counts, most needed first (a group started after
    ``--time-limit`` is skipped): the window sweep at the first size, more workers, then each
    reduced dtype and the other sizes at the default window."""
    first = args.sizes[0]
    groups = [([Setting(first, w) for w in args.windows], 1)]
    groups += [([Setting(first, workers=n)], n) for n in args.workers if n > 1]
    rest = [Setting(first, dtype=dtype) for dtype in args.dtypes]
    rest += [Setting(size) for size in args.sizes[1:]]
    return groups + ([(rest, 1)] if rest else [])


def print_table(rows: list[dict], device: str, args: argparse.Namespace) -> None:
    print(
        f"stage one on {device}: cotracker3-offline (random weights), {args.videos} videos of "
        f"{args.frames} frames at {args.source}, grid {args.base['grid']}, query set every "
        f"{args.base['query_every']} frames, horizon {args.base['horizon']}"
    )
    one_set = [r for r in rows if "error" not in r and r["window"] == args.base["horizon"]]
    reference = one_set[0] if one_set else next((r for r in rows if "error" not in r), None)
    for r in rows:
        head = (f"  size {r['size']:>4}, window {r['window'] or 'default':>7}, "
                f"{r['workers']} worker(s), {r['dtype']:>8}:")  # fmt: skip
        if "error" in r:
            print(f"{head} not measured: {r['error']}")
            continue
        busy = "n/a" if r.get("gpu_busy") is None else f"{100 * r['gpu_busy']:.0f} %"
        memory = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.1f} GiB"
        ratio = r["frames_per_s"] / reference["frames_per_s"]
        print(
            f"{head} {r['frames_per_s']:7.1f} frames/s ({ratio:.2f}x one set/window), "
            f"{r['frame_passes']:.2f} frame-passes, GPU busy {busy} (goal >= 90 %), "
            f"peak {memory}, in tracker {100 * r['tracker_share']:.0f} %"
        )


def estimate(rows: list[dict], args: argparse.Namespace) -> dict:
    """GPU-hours for each dataset at the default setting's rate (and at the fastest row's)."""
    measured = [r for r in rows if "error" not in r]
    default = next(
        (r for r in measured if r["size"] == args.sizes[0] and r["workers"] == 1
         and r["dtype"] == "float32" and r["window_setting"] is None),
        None,
    )  # fmt: skip
    fastest = max(measured, key=lambda r: r["frames_per_s"], default=None)
    out = {}
    for name, picked in (("default", default), ("fastest", fastest)):
        if picked is None:
            continue
        hours = {d: n / picked["frames_per_s"] / 3600 for d, n in DATASETS.items()}
        out[name] = {"setting": {k: picked[k] for k in asdict(Setting("x"))}, "gpu_hours": hours}
        print(
            f"  GPU-hours at the {name} setting's rate ({picked['frames_per_s']:.1f} frames/s): "
            + ", ".join(f"{d} {h:,.1f}" for d, h in hours.items())
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cotracker", type=Path, default=Path("third_party/co-tracker"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--sizes", default="256,224", help="storage sizes; the first is swept")
    parser.add_argument("--windows", default="default,67,123", help="windows swept (frames)")
    parser.add_argument("--workers", default="2", help="worker counts tried beside 1")
    parser.add_argument("--dtypes", default="bfloat16", help="autocast dtypes tried")
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--frames", type=int, default=135)
    parser.add_argument("--budget", type=float, default=8.0, help="seconds timed per setting")
    parser.add_argument(
        "--time-limit", type=float, default=270.0, help="seconds; later settings are skipped"
    )
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (for tests)")
    args = parser.parse_args()
    check_clone(args.cotracker)
    if args.smoke:
        args.base, args.source, device = SMOKE_SETTINGS, "96x64", "cpu"
        args.sizes, args.windows, args.workers, args.dtypes = "48,32", "default,9", "2", ""
        args.videos, args.frames, args.budget = 6, 24, 0.1
    else:
        args.base, args.source, device = GPU_SETTINGS, "640x360", "cuda"
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        fail("needs a CUDA GPU (or --smoke for the CPU check)")
    args.sizes = args.sizes.split(",")
    args.windows = [None if w == "default" else int(w) for w in args.windows.split(",") if w]
    args.workers = [int(n) for n in args.workers.split(",") if n]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="mosic-gpu-stage-one-"))
    sampler = None
    try:
        width, height = (int(v) for v in args.source.split("x"))
        tasks = [
            (i, args.frames, height, width, str(work / "videos" / f"v{i:03d}.mp4"))
            for i in range(args.videos)
        ]
        with ProcessPoolExecutor(min(len(tasks), os.cpu_count() or 1)) as pool:
            list(pool.map(write_one, tasks))
        checkpoint = random_checkpoint(args.cotracker, work / "random_offline.pth")
        base = {
            **args.base, "tracker": "cotracker3-offline", "device": device,
            "tracker_checkpoint": str(checkpoint), "tracker_repo": str(args.cotracker.resolve()),
        }  # fmt: skip
        job = {"base": base, "work": work, "budget": args.budget, "frames": args.frames,
               "videos": [t[4] for t in tasks], "deadline": started + args.time_limit}  # fmt: skip
        if device == "cuda":
            try:
                sampler = GpuSampler()
            except Exception as exc:  # nvidia-ml-py missing, or NVML not usable here
                print(f"  GPU busy not measured: {type(exc).__name__}: {exc}")
        rows = []
        for settings, workers in plan(args):
            for setting, results in run_group(settings, workers, job, timeout=900):
                rows.append(combine(setting, results, sampler))
    finally:
        if sampler is not None:
            sampler.stop()
        shutil.rmtree(work, ignore_errors=True)
    card = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run)"
    print_table(rows, card, args)
    hours = estimate(rows, args)
    result = {"device": card, "torch": torch.__version__, "settings": args.base,
              "source": args.source, "frames_per_video": args.frames, "rows": rows,
              "estimate": hours}  # fmt: skip
    (args.out / "gpu_stage_one.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
