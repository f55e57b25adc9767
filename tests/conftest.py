import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # also for the subprocesses the CLI tests start
os.environ.setdefault("WANDB_SILENT", "true")


#: the files that take longest (`make test`'s --durations), run first: `make test` hands whole files to its workers
#: in this order (pytest-xdist --dist loadfile --no-loadscope-reorder), so each long file starts early on a core of
#: its own instead of last, after the short ones (the whole suite can take no less than its longest file). xdist
#: queues two files per worker at the start: worker 1 gets the 1st and 3rd, worker 2 the 2nd and 4th. Other files
#: keep pytest's order, after these.
LONGEST_FIRST = ("test_rehearse_paper.py", "test_adm512_full.py", "test_gpu_check.py", "test_readme_commands.py",
                 "test_experiments.py", "test_tiny_prior_studies.py")


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a file stays


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)

# Small test models run fastest single-threaded, and OpenMP spin-waiting makes multi-threaded torch
# collapse (100x) when another process holds the cores; keep the suite robust to a busy machine.
torch.set_num_threads(1)
