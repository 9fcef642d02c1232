"""Test-session settings."""

import torch

# One intra-op thread: tests share 2 cores with DataLoader and Dask workers, and OpenMP
# threads spinning against each other make CPU steps several times slower.
torch.set_num_threads(1)
