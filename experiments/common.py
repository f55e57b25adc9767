"""What the study drivers share: CSV rows and markdown headers out, matplotlib (headless) figures out, the tiny
prior from a checkpoint, grids as Hydra multiruns of the runner read back per crop, paired differences. The
commit, the assets' sha256 and the machine of a result are written by tools.provenance, which runs the driver, not
by the driver."""

from __future__ import annotations

import csv
import functools
import os
import subprocess
import sys
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


def multirun(sweep_dir: Path, overrides: list[str], threads: int | None = 1) -> list[dict]:
    """Run `python -m dps_map.run -m *overrides hydra.sweep.dir=sweep_dir` (Hydra's local launcher: its jobs one
    after another; rerun into the same sweep_dir, finished samples are read back, not redrawn), with `threads` CPU
    threads per run (None: torch's default), and return its jobs in Hydra's order, each as {'cfg' (the composed
    config), 'dir', 'summary' (summary.json), 'records' ({id: metrics.jsonl record})}. A failed sweep exits with
    one line (the run printed its own error above it)."""
    from dps_map.config.sweep import expand_jobs
    from dps_map.errors import UserError
    from dps_map.io import read_json, read_jsonl

    args = [*overrides, "progress=false", f"hydra.sweep.dir={sweep_dir}"]
    command = [sys.executable, "-m", "dps_map.run", "-m", *args]
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        jobs = expand_jobs(args, multirun=True)
        if subprocess.run(command, env=env).returncode != 0:
            raise UserError(f"the sweep into {sweep_dir} failed (its error is above): {' '.join(command[1:])}")
        out = []
        for job in jobs:
            records = read_jsonl(job.run_dir / "metrics.jsonl")
            out.append({"cfg": job.cfg, "dir": job.run_dir, "summary": read_json(job.run_dir / "summary.json",
                                                                                  "rerun the same command"),
                        "records": {r["id"]: r for r in records if r.get("k") != "all"}})
    except UserError as err:
        raise SystemExit(f"error: {err}") from None
    return out


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
    import sys

    from dps_map.errors import UserError

    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
