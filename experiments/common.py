"""What the study drivers share: CSV rows and markdown headers out, matplotlib (headless) figures out, the tiny
prior from a checkpoint, runs in parallel. The commit, the assets' sha256 and the machine of a result are written by
tools.provenance, which runs the driver, not by the driver."""

from __future__ import annotations

import csv
import functools
import os
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


def header(title: str, command: str, seconds: float, extra: str = "") -> list[str]:
    """The first lines of a result's markdown: its title, the command, the wall time and the load it ran under."""
    import torch

    return [f"# {title}", "",
            f"`{command}`: {seconds / 60:.1f} min wall on a {os.cpu_count()}-core "
            f"{'machine with a GPU' if torch.cuda.is_available() else 'CPU'} (measured; 1-min load average at the "
            f"end {os.getloadavg()[0]:.1f}; the provenance record beside this file has the commit and the assets' "
            "sha256). " + extra, ""]


@functools.lru_cache(maxsize=2)
def tiny_prior(checkpoint: Path):
    """The tiny prior (conf/prior/tiny.yaml) with the weights at `checkpoint`, on the CPU, built once per file."""
    from dps_map.config import compose, resolve_device
    from dps_map.config.targets import build_prior

    return build_prior(compose("prior=tiny", f"prior.checkpoint={checkpoint}").prior, resolve_device("cpu"))


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


def run_main(main) -> None:
    """main() as a command: a UserError (a missing file, a bad override) is one line on stderr and its exit code,
    not a traceback."""
    import sys

    from dps_map.errors import UserError

    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
