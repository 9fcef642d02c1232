"""This process's place in a training job: its device, its rank under ``torchrun`` (gloo on
CPU, NCCL on GPU) and, on CPU, its share of the cores."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def pick_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def join_job(device_name: str, loader_workers: int) -> tuple[torch.device, Distributed]:
    """Pick the device and join the torchrun job if there is one (env RANK / WORLD_SIZE), else
    run as a single process. A GPU rank takes its LOCAL_RANK's GPU; on CPU, unless the user
    chose (OMP_NUM_THREADS), torch gets the cores the DataLoader workers leave."""
    device = pick_device(device_name)
    job = Distributed()
    if "RANK" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        job = Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        device = torch.device("cuda", job.local_rank)
        torch.cuda.set_device(device)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - loader_workers))
    return device, job
