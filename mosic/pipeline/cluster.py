"""Stage one on Dask: a cluster sized to the machine, batches of videos as tasks.

The coordinator (the client process) submits batches with explicit keys; each task writes only
its own videos' groups and returns their outcomes; the coordinator alone writes the index and
the failures table. A worker that dies is replaced and its task rerun (a rerun rewrites the
video from scratch); a batch whose task killed two workers is split into single videos, and a
video that kills two workers on its own is recorded as failed.

A cluster started here listens on loopback only, with TLS (``mosic.pipeline.cluster_security``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import dask
from distributed import Client, KilledWorker, Nanny, Scheduler, SpecCluster, as_completed

from mosic.pipeline.cluster_security import (
    LOOPBACK,
    ClusterError,
    dashboard_address,
    dashboard_exposure,
    local_security,
    plaintext_exposure,
    scheduler_security,
    served_url,
)
from mosic.pipeline.extract import Batch, ExtractConfig, VideoOutcome, extract_batch, failed
from mosic.pipeline.io_process import die_with_parent
from mosic.stages.trackers import build_tracker
from mosic.store_schema import TrackStore

WORKER_DEATHS_ALLOWED = 1  # a task that kills a second worker is given up on


@dataclass(frozen=True)
class ClusterConfig:
    """Where extraction runs.

    workers: worker processes on this machine (default: one per GPU with --device cuda, else
        one per core); 0 runs everything in this process, with no cluster.
    scheduler: address of an existing Dask scheduler to use instead (``tls://host:8786``).
    dashboard: ``[HOST]:PORT`` of the dashboard of a cluster started here (loopback unless HOST
        is given); None: no dashboard.
    tls_ca_file, tls_cert, tls_key: the client's TLS files for ``scheduler`` (else Dask's
        configuration's).
    """

    workers: int | None = None
    scheduler: str | None = None
    device: str = "cpu"
    dashboard: str | None = ":8787"
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        if not self.scheduler and any(self.tls_paths()):
            own = "a cluster started here makes its own certificate"
            raise ClusterError(
                f"--tls-ca-file, --tls-cert and --tls-key are for --scheduler ({own})"
            )

    def tls_paths(self) -> tuple[Path | None, Path | None, Path | None]:
        """The CA, certificate and key files given for ``scheduler``."""
        paths = (self.tls_ca_file, self.tls_cert, self.tls_key)
        return tuple(Path(p) if p else None for p in paths)


def gpu_count() -> int:
    """GPUs visible here: CUDA_VISIBLE_DEVICES if set, else ``nvidia-smi -L``; 0 without one."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


def worker_specs(config: ClusterConfig) -> dict[str, dict]:
    """Nanny specs: one single-threaded worker per GPU (pinned, ``GPU=1``) or per CPU worker."""
    common = {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    if config.device == "cuda":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = [g.strip() for g in visible.split(",")] if visible else range(gpu_count())
        gpus = list(gpus)[: config.workers] if config.workers else list(gpus)
        if not gpus:
            raise RuntimeError("--device cuda: no GPU found (nvidia-smi -L lists none)")
        return {
            f"gpu-{g}": {
                "cls": Nanny,
                "options": {
                    "nthreads": 1,
                    "silence_logs": logging.ERROR,
                    "resources": {"GPU": 1},
                    "env": {**common, "CUDA_VISIBLE_DEVICES": str(g)},
                },
            }
            for g in gpus
        }
    count = config.workers or os.cpu_count() or 1
    return {
        f"cpu-{i}": {
            "cls": Nanny,
            "options": {"nthreads": 1, "silence_logs": logging.ERROR, "env": common},
        }
        for i in range(count)
    }


@contextmanager
def dask_client(config: ClusterConfig) -> Iterator[Client]:
    """A client of an existing scheduler, or of a cluster started here and closed on exit.

    Raises ``ClusterError`` (one line) if the scheduler cannot be reached or its TLS set up.
    """
    if config.scheduler:
        address, security = scheduler_security(config.scheduler, *config.tls_paths())
        try:
            client = Client(address, security=security)
        except (OSError, TimeoutError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            message = f"cannot connect to the Dask scheduler at {address}: {reason}"
            raise ClusterError(message) from None
        with client:
            yield client
        return
    security = local_security()
    specs = worker_specs(config)
    for spec in specs.values():
        spec["options"].update(host=LOOPBACK, security=security)
    settings = {
        "distributed.scheduler.allowed-failures": WORKER_DEATHS_ALLOWED,
        # Dask's default MALLOC_TRIM_THRESHOLD_ turns off glibc's adaptive mmap threshold: every
        # large temporary array of the tracker is then mapped and unmapped afresh.
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
        "distributed.worker.profile.enabled": False,  # samples every stack each 10 ms
        # Workers on spare cores (one per GPU) decode and write in an I/O child process; where
        # trackers fill every core, a thread of each worker does (daemonic workers have no
        # children), which measured as fast and costs no process.
        "distributed.worker.daemon": len(specs) >= (os.cpu_count() or 1),
    }
    if config.dashboard is None:  # the scheduler's HTTP server still runs: health check only
        settings["distributed.scheduler.http.routes"] = ["distributed.http.health"]
    options = {
        "host": LOOPBACK,
        "security": security,
        "dashboard": config.dashboard is not None,
        "dashboard_address": dashboard_address(config.dashboard or "0"),
    }
    with dask.config.set(settings):
        scheduler = {"cls": Scheduler, "options": options}
        with (
            SpecCluster(
                workers=specs, scheduler=scheduler, security=security, silence_logs=logging.ERROR
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client


def exposure_warnings(config: ClusterConfig) -> list[str]:
    """What the cluster would expose beyond this machine, one line each (to warn of first)."""
    if config.scheduler:
        address, _ = scheduler_security(config.scheduler, *config.tls_paths())
        warning = plaintext_exposure(address)
    elif config.workers != 0 and config.dashboard is not None:
        warning = dashboard_exposure(dashboard_address(config.dashboard))
    else:
        warning = None
    return [warning] if warning else []


def dashboard_url(client: Client) -> str | None:
    """The address the dashboard really serves: None if it is off (``dashboard=None``).

    For a cluster started here, the HTTP server's bound address; else what the scheduler says.
    """
    cluster = client.cluster
    if not isinstance(cluster, SpecCluster):
        return client.dashboard_link or None
    if not cluster.scheduler_spec["options"]["dashboard"]:
        return None
    server = cluster.scheduler.http_server
    return served_url(server.address, server.port)


@cache
def _prepare_process() -> None:
    """Once per worker process: die with the parent (the coordinator's nanny)."""
    die_with_parent()


@cache
def _worker_tracker(config: ExtractConfig):
    """The tracker of this worker process, built (and its weights loaded) once."""
    return build_tracker(config.tracker, **config.tracker_options())


def extract_task(batch: Batch, store_path: str, config: ExtractConfig) -> list[VideoOutcome]:
    """The Dask task: extract one batch of videos into the store at ``store_path``."""
    _prepare_process()
    store = TrackStore.open(store_path, mode="r+")
    tracker = _worker_tracker(config)
    return list(extract_batch(batch, store, config, tracker))


def batch_key(batch: Batch) -> str:
    """An explicit, stable task key for a batch of videos."""
    digest = hashlib.sha1("\0".join(key for _, key in batch).encode()).hexdigest()[:16]
    return f"extract-{len(batch)}-{digest}"


def batch_size(videos: int, workers: int, most: int = 8) -> int:
    """Videos per task: about four tasks per worker, at most ``most`` videos each."""
    return max(1, min(most, math.ceil(videos / max(workers * 4, 1))))


class DaskRunner:
    """Runs batches as Dask tasks and yields outcomes as they finish."""

    def __init__(self, client: Client, store_path: str, config: ExtractConfig):
        self.client = client
        self.store_path = store_path
        self.config = config

    @property
    def workers(self) -> int:
        """Workers the scheduler knows now."""
        return max(len(self.client.scheduler_info()["workers"]), 1)

    def _submit(self, batch: Batch):
        resources = {"GPU": 1} if self.config.device == "cuda" else None
        return self.client.submit(
            extract_task,
            batch,
            self.store_path,
            self.config,
            key=batch_key(batch),
            retries=1,
            pure=False,
            resources=resources,
        )

    def __call__(self, batches: list[Batch]) -> Iterator[VideoOutcome]:
        futures = [self._submit(batch) for batch in batches]
        submitted = {future.key: batch for future, batch in zip(futures, batches, strict=True)}
        yield from self._collect(as_completed(futures), submitted)

    def _collect(self, pending: as_completed, submitted: dict) -> Iterator[VideoOutcome]:
        for future in pending:
            batch = submitted.pop(future.key)
            try:
                outcomes = future.result()
            except KilledWorker:
                if len(batch) > 1:
                    for single in ([item] for item in batch):
                        retry = self._submit(single)
                        submitted[retry.key] = single
                        pending.add(retry)
                    continue
                source, key = batch[0]
                reason = "the worker died twice on this video (killed, or out of memory?)"
                outcomes = [failed(key, source, "worker", reason)]
            except Exception as exc:  # the task itself failed twice: every video of it fails
                outcomes = [failed(key, source, "worker", exc) for source, key in batch]
            finally:
                future.release()
            yield from outcomes
