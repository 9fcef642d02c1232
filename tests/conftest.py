"""Test-session settings."""

import os

import pytest
import torch

# One intra-op thread: tests share 2 cores with DataLoader and Dask workers, and OpenMP
# threads spinning against each other make CPU steps several times slower. The variable also
# keeps `train()` (and the processes tests start) at the thread count chosen here.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def train_store(tmp_path_factory):
    """A track store of 8 short generated videos (see ``tests.test_train.make_store``)."""
    from tests.test_train import make_store

    return make_store(tmp_path_factory.mktemp("train-store"))
