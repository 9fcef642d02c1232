"""Test-session settings."""

import pytest
import torch

# One intra-op thread: tests share 2 cores with DataLoader and Dask workers, and OpenMP
# threads spinning against each other make CPU steps several times slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def train_store(tmp_path_factory):
    """A track store of 8 short generated videos (see ``tests.test_train.make_store``)."""
    from tests.test_train import make_store

    return make_store(tmp_path_factory.mktemp("train-store"))
