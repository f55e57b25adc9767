"""What the study drivers share: CSV rows and markdown headers out, matplotlib (headless) figures out, the tiny
prior from a checkpoint, grids as Hydra multiruns of the runner (several side by side) read back per crop, paired
differences. The commit, the assets' sha256 and the machine of a result are written by tools.provenance, which runs
the driver, not by the driver."""

from __future__ import annotations

import csv
import functools
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

#: training photographs whose crops are the validation set (the held-out chelsea and coffee are the test set)
VALIDATION_PHOTOS = ("astronaut", "rocket", "motorcycle_left")


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


def demo_data(per_photo: int, validation: bool = False) -> list[str]:
    """Overrides for `per_photo` crops of each held-out photograph (the test set), or of each validation one."""
    over = ["data=demo", f"data.per_photo={per_photo}"]
    return over + ([f"+data.photos=[{','.join(VALIDATION_PHOTOS)}]"] if validation else [])


def multiruns(sweeps: list[tuple[Path, list[str], float]], workers: int = 1) -> list[list[dict]]:
    """Run each (sweep_dir, overrides, cost) as `python -m dps_map.run -m hydra/launcher=local *overrides
    hydra.sweep.dir=sweep_dir` and return each sweep's jobs in Hydra's order, each as {'cfg' (the composed config),
    'dir', 'summary' (summary.json), 'records' ({id: metrics.jsonl record})}, the sweeps in the order given.

    The local launcher runs a multirun's jobs one after another, so up to `workers` multiruns run side by side,
    the costliest first (so that they finish together), each single-threaded when more than one runs at once: on
    a CPU two 1-thread runs of the small 64x64 network side by side beat one 2-thread run (a lone multirun takes
    the environment's threads). Every sweep is composed before any starts, so a bad override stops them all; a
    failed sweep stops those not yet started and raises UserError, one line naming its sweep dir (the run
    printed its own error above it). Rerun into the same sweep dirs, finished samples are read back, not
    redrawn."""
    from dps_map.config.sweep import expand_jobs
    from dps_map.errors import UserError

    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    # quoted: a path with a comma or a space is one value, not a sweep over values
    args = [["hydra/launcher=local", *overrides, "progress=false", f"hydra.sweep.dir='{sweep_dir}'"]
            for sweep_dir, overrides, _ in sweeps]
    jobs = [expand_jobs(a, multirun=True) for a in args]
    threads = 1 if min(workers, len(sweeps)) > 1 else None
    order = sorted(range(len(sweeps)), key=lambda i: -sweeps[i][2])
    stop = threading.Event()  # set by the first failure: the sweeps not yet started are skipped

    def run(i: int) -> list[dict] | None:
        if stop.is_set():
            return None
        try:
            return _run_sweep(sweeps[i][0], args[i], jobs[i], threads)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(workers) as pool:
        futures = {i: pool.submit(run, i) for i in order}
    for i in order:
        if futures[i].exception() is not None:
            raise futures[i].exception()
    return [futures[i].result() for i in range(len(sweeps))]


def _run_sweep(sweep_dir: Path, args: list[str], jobs: list, threads: int | None) -> list[dict]:
    """One multiruns() sweep: its command with `threads` CPU threads (None: the environment's), then its jobs."""
    from dps_map.errors import UserError
    from dps_map.io import read_json, read_jsonl

    command = [sys.executable, "-m", "dps_map.run", "-m", *args]
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if subprocess.run(command, env=env).returncode != 0:
        raise UserError(f"the sweep into '{sweep_dir}' failed (its error is above); fix it and rerun the same "
                        "command, which resumes the finished runs")
    out = []
    for job in jobs:
        records = read_jsonl(job.run_dir / "metrics.jsonl")
        out.append({"cfg": job.cfg, "dir": job.run_dir,
                    "summary": read_json(job.run_dir / "summary.json", "rerun the same command"),
                    "records": {r["id"]: r for r in records if r.get("k") != "all"}})
    return out


def multirun(sweep_dir: Path, overrides: list[str]) -> list[dict]:
    """The jobs of one multiruns() sweep; a bad override or a failed sweep exits with one line."""
    from dps_map.errors import UserError

    try:
        return multiruns([(sweep_dir, overrides, 1.0)])[0]
    except UserError as err:
        raise SystemExit(f"error: {err}") from None


def paired(a: dict, b: dict, key: str = "psnr") -> dict:
    """Over the crops both {id: record} have: the mean of a - b, its standard error and the crops where a > b."""
    ids = sorted(set(a) & set(b))
    d = np.array([a[i][key] - b[i][key] for i in ids if a[i].get(key) is not None and b[i].get(key) is not None])
    sem = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"n": len(d), "diff": float(d.mean()), "sem": sem, "wins": int((d > 0).sum())}


def mean_sem(records: dict, key: str = "psnr") -> tuple[float, float]:
    """The mean of a metric over {id: record} and its standard error."""
    v = np.array([r[key] for r in records.values() if r.get(key) is not None])
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def default_workers() -> int:
    """Parallel single-threaded sweeps: one per CPU core, 1 on a GPU (one device)."""
    import torch

    return 1 if torch.cuda.is_available() else (os.cpu_count() or 1)


def run_main(main) -> None:
    """main() as a command: a UserError (a missing file, a bad override) is one line on stderr and its exit code,
    not a traceback."""
    from dps_map.errors import UserError

    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


def write_result(out: Path, stem: str, module: str, argv, title: str, started: float, rows: list[dict], extra: str,
                 lines: list[str]) -> None:
    """A study's result: out/stem.csv from its rows, out/stem.md from header() (the command as typed, the wall time
    since `started`) and its lines; the markdown is printed too."""
    write_csv(rows, out / f"{stem}.csv")
    command = (f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    text = "\n".join(header(title, command, time.perf_counter() - started, extra) + lines) + "\n"
    (out / f"{stem}.md").write_text(text)
    print(text)


def require_old_prior(path: Path | None) -> None:
    """Exit with one line unless `path` is the earlier 2200-step prior's weights file (docs/tiny-prior.md)."""
    if path is None or not path.is_file():
        raise SystemExit(f"error: --old-prior {path}: no such file (the earlier 2200-step prior's weights; "
                         "docs/tiny-prior.md says how to get them)")
