import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # also for the subprocesses the CLI tests start
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)

# Small test models run fastest single-threaded, and OpenMP spin-waiting makes multi-threaded torch
# collapse (100x) when another process holds the cores; keep the suite robust to a busy machine.
torch.set_num_threads(1)
