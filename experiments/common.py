"""What every experiment driver shares: CSV rows out, matplotlib (headless) figures out, runs in parallel."""

from __future__ import annotations

import csv
from pathlib import Path


def write_csv(rows: list[dict], path: Path) -> None:
    """rows as a CSV file with a header: the union of their keys in first-seen order, a key a row lacks
    left empty (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, title: str | None = None) -> Path:
    """Title, tight layout, 110 dpi PNG at path; closes the figure."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def default_workers() -> int:
    """Parallel single-threaded runs for run_parallel: one per CPU core, 1 on a GPU (one device)."""
    import os

    import torch

    return 1 if torch.cuda.is_available() else (os.cpu_count() or 1)


def run_parallel(fn, jobs: list[tuple], workers: int, cost=None, report=None) -> list:
    """[fn(*job) for job in jobs], in that order. With workers > 1, one single-threaded process per worker
    (on a CPU two 1-thread runs of the small 64x64 network side by side beat one 2-thread run, as in
    `make demo`), the costliest jobs first (cost(job), a number) so the workers finish together.
    fn must be a module-level function (it is pickled into spawned processes); report(result) is called
    as each job finishes."""
    report = report or (lambda result: None)
    if workers <= 1:
        out = []
        for job in jobs:
            out.append(fn(*job))
            report(out[-1])
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    order = sorted(range(len(jobs)), key=lambda i: -(cost(jobs[i]) if cost else 0))
    done = {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = {pool.submit(fn, *jobs[i]): i for i in order}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            report(done[futures[future]])
    return [done[i] for i in range(len(jobs))]
