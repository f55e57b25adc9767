"""Step sizes for the tiny prior, chosen on validation crops of training photographs (never the test crops).

    python -m tools.tune_tiny [--per-photo 4] [--samplers dps dmap dmap_adam] [--prior-checkpoint PATH]

For each demo task (SR x4, box inpainting, Gaussian deblurring) and sampler, every step size of its grid
(DPS zeta 1/3/10/30, DMAP zeta 1/3/10/30, DMAP-Adam lr 0.01/0.02/0.05/0.1/0.2) runs through the runner: one
Hydra multirun per sampler (task x step size; prior=tiny, data=demo on the validation photographs astronaut,
rocket and motorcycle_left, one sample per crop, metrics=fast, the sampler's own number of steps and K), up to
--workers of these sweeps at a time, each single-threaded when there are several. The held-out
demo crops (chelsea, coffee) are the test set and are not used. Per (task, sampler) the table gives the
mean PSNR/SSIM of each step size, and the chosen one (highest mean PSNR) beside the paired PSNR
difference to each other step size with its standard error over the crops, so a tie reads as a tie.

The chosen values go into conf/tuned/default.yaml by hand, with a comment naming this table. Writes
experiments/results/tune_tiny.{csv,md}; the sweeps are kept in --work/SAMPLER (rerun: finished samples are
read back, not redrawn).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from dps_map.io import sha256_file
from experiments.common import VALIDATION_PHOTOS, default_workers, demo_data, multiruns, run_main, write_csv

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
TASKS = ("sr4", "inpaint_box", "gaussian_deblur")
#: sampler -> (its step-size key, the grid searched)
GRIDS = {"dps": ("zeta", (1.0, 3.0, 10.0, 30.0)), "dmap": ("zeta", (1.0, 3.0, 10.0, 30.0)),
         "dmap_adam": ("zeta", (0.01, 0.02, 0.05, 0.1, 0.2))}
#: network calls per step of each sampler (DMAP: K=3 inner VJPs and a forward), for running the costliest sweep first
COST = {"dps": 1, "dmap": 4, "dmap_adam": 4}


def sampler_sweep(sampler: str, values: tuple, args) -> tuple[Path, list[str], float]:
    """Every (task, step size) of one sampler on the validation crops, as one multirun: its sweep dir, overrides
    and cost."""
    key = GRIDS[sampler][0]
    over = [f"task={','.join(args.tasks)}", "prior=tiny", *demo_data(args.per_photo, validation=True),
            f"sampler={sampler}", f"sampler.{key}={','.join(str(v) for v in values)}", f"seed={args.seed}",
            "num_samples=1", "metrics=fast", f"measurement_batch={args.measurement_batch}"]
    over += [f"prior.checkpoint={args.prior_checkpoint}"] if args.prior_checkpoint else []
    over += [f"sampler.respacing={args.steps}"] if args.steps else []
    return args.work / sampler, over, COST[sampler] * len(values)


def sampler_rows(sampler: str, jobs: list[dict]) -> list[dict]:
    """The rows of one sampler's finished multirun, one per (task, step size), with the per-crop PSNRs."""
    key = GRIDS[sampler][0]
    rows = []
    for job in jobs:
        s, records = job["summary"], sorted(job["records"].values(), key=lambda r: r["id"])
        rows.append({"task": job["cfg"].task.name, "sampler": sampler, "key": key,
                     "value": float(job["cfg"].sampler[key]), "steps": records[0]["steps"],
                     "n_images": s["metrics"]["psnr"]["n"], "n_failed": s["n_failed"],
                     "psnr": s["metrics"]["psnr"]["mean"], "psnr_sem": s["metrics"]["psnr"]["sem"],
                     "ssim": s["metrics"]["ssim"]["mean"], "naive_psnr": s["naive"]["psnr"]["mean"],
                     "sampling_s": round(sum(r["seconds"] for r in records), 1),
                     "ids": [r["id"] for r in records], "crop_psnr": [r.get("psnr") for r in records]})
    return rows


def choose(rows: list[dict]) -> tuple[dict, list[dict]]:
    """The row with the highest mean PSNR, and for each other row the paired PSNR difference (chosen minus
    it) over the crops both finished, with its standard error: {'value', 'diff', 'sem'}."""
    ok = [r for r in rows if r["psnr"] is not None and np.isfinite(r["psnr"])]
    if not ok:
        raise ValueError(f"every setting of {rows[0]['task']} {rows[0]['sampler']} failed")
    best = max(ok, key=lambda r: r["psnr"])
    pairs = []
    for r in rows:
        if r is best:
            continue
        mine = dict(zip(best["ids"], best["crop_psnr"]))
        d = np.array([mine[i] - p for i, p in zip(r["ids"], r["crop_psnr"])
                      if p is not None and mine.get(i) is not None])
        sem = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
        pairs.append({"value": r["value"], "diff": float(d.mean()) if len(d) else float("nan"), "sem": sem})
    return best, pairs


def markdown(rows: list[dict], command: str, seconds: float, args) -> str:
    weights = args.prior_checkpoint or ROOT / "dps_map" / "assets" / "tiny_prior.pt"
    prior = (f"{'the shipped tiny prior' if not args.prior_checkpoint else 'tiny prior weights'} "
             f"(sha256 {sha256_file(weights)[:12]})")
    lines = ["# Step sizes for the tiny prior, on validation crops", "",
             f"`{command}`: {seconds / 60:.1f} min wall (settings already finished in {args.work} "
             f"are read back, not redrawn; the provenance record has every step's time), up to {args.workers} "
             "sweep(s) at a time on a "
             f"{os.cpu_count()}-core CPU (measured). Prior: {prior}. {rows[0]['n_images']} crops of the training "
             f"photographs {', '.join(VALIDATION_PHOTOS)} (data.per_photo={args.per_photo}), one sample each, "
             f"seed {args.seed}, {rows[0]['steps']} steps. Mean PSNR (dB) ± standard error over the crops; "
             "**bold**: chosen (highest mean).", ""]
    chosen = []
    for task in dict.fromkeys(r["task"] for r in rows):
        lines += [f"## {task} (naive baseline {next(r for r in rows if r['task'] == task)['naive_psnr']:.2f} dB)", "",
                  "| sampler | step size | PSNR | SSIM | chosen minus this (paired) | failed |", "|---|---|---|---|---|---|"]
        for sampler in dict.fromkeys(r["sampler"] for r in rows if r["task"] == task):
            sel = [r for r in rows if r["task"] == task and r["sampler"] == sampler]
            best, pairs = choose(sel)
            diff = {p["value"]: p for p in pairs}
            for r in sel:
                psnr = "n/a" if r["psnr"] is None else f"{r['psnr']:.2f} ± {r['psnr_sem']:.2f}"
                mark = "**" if r is best else ""
                vs = "" if r is best else f"{diff[r['value']]['diff']:+.2f} ± {diff[r['value']]['sem']:.2f}"
                ssim = "n/a" if r["ssim"] is None else f"{r['ssim']:.3f}"
                lines.append(f"| {sampler} | {mark}{r['key']} {r['value']:g}{mark} | {psnr} | {ssim} | {vs} | "
                             f"{r['n_failed']} |")
            chosen.append(f"| {task} | {sampler} | {best['key']} {best['value']:g} | {best['psnr']:.2f} |")
        lines.append("")
    lines += ["## Chosen", "", "| task | sampler | step size | PSNR |", "|---|---|---|---|", *chosen]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--samplers", nargs="+", default=["dps", "dmap", "dmap_adam"], choices=sorted(GRIDS))
    parser.add_argument("--per-photo", type=int, default=4, help="crops per validation photograph (3 photographs)")
    parser.add_argument("--measurement-batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", nargs="*", default=[], metavar="SAMPLER=V1,V2",
                        help="replace a sampler's grid, e.g. dmap=3,10")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the sampler's own, 50)")
    parser.add_argument("--prior-checkpoint", type=Path, default=None, help="tiny prior weights to tune for "
                        "(default: the shipped ones)")
    parser.add_argument("--workers", type=int, default=None, help="sweeps (one per sampler) run at a time, "
                        "single-threaded when more than one (default: one per CPU core without a GPU, 1 with one)")
    parser.add_argument("--work", type=Path, default=Path("outputs/tune_tiny"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.workers = args.workers or default_workers()
    started = time.perf_counter()
    grids = {name: values for name, (_, values) in GRIDS.items()}
    for item in args.grid:
        name, _, values = item.partition("=")
        if name not in GRIDS or not values:
            parser.error(f"--grid {item}: expected SAMPLER=V1,V2 with SAMPLER in {sorted(GRIDS)}")
        grids[name] = tuple(float(v) for v in values.split(","))
    done = multiruns([sampler_sweep(s, grids[s], args) for s in args.samplers], args.workers)
    order_of = {(t, s, v): n for n, (t, s, v) in enumerate((t, s, v) for t in args.tasks for s in args.samplers
                                                          for v in grids[s])}
    rows = sorted((r for s, jobs in zip(args.samplers, done) for r in sampler_rows(s, jobs)),
                  key=lambda r: order_of[(r["task"], r["sampler"], r["value"])])
    command = ("python -m tools.tune_tiny " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv([{k: v for k, v in r.items() if k not in ("ids", "crop_psnr")} for r in rows], args.out / "tune_tiny.csv")
    text = markdown(rows, command, time.perf_counter() - started, args)
    (args.out / "tune_tiny.md").write_text(text)
    print(text)


if __name__ == "__main__":
    run_main(main)
