"""The cost-quality frontier on the shipped tiny prior: what a VJP buys on images.

    python -m experiments.frontier_tiny [--per-photo 1] [--tasks sr4 inpaint_box gaussian_deblur]   # make frontier

The grid of the GMM half (experiments/frontier.py): DPS and DSG at 50/100/250/1000 steps, DMAP at
25/50/100/250 steps with K (sampler.num_inner) = 1 and 3, for SR x4, box inpainting and Gaussian
deblurring, each through the runner (dps_map.runner.run; prior=tiny, data=demo, metrics=fast,
num_samples=1, measurement_batch=4 so every crop of a setting shares one batched sampler call) with the
step sizes conf/tuned/ resolves (docs/tiny-prior.md "Default step sizes"; DSG w 0.08), constant per
step, so more steps also means more total guidance. To keep `make frontier` well under 30 minutes on
2 CPU cores, the default takes **one crop per held-out photograph** (data.per_photo=1: chelsea_0 and
coffee_0, so the batch holds 2 measurements, not 4) and one sample per crop: means and standard errors
are over 2 images. The settings run in parallel, one single-threaded process per core (--workers).
Wall times are in experiments/results/README.md (measured).

Per setting: mean PSNR/SSIM and their standard errors, VJPs and forwards per sample, sampler seconds
per sample and the wall seconds of the run (0 when resumed from --work); per task, the naive baseline
(bicubic / masked / blurred measurement) and the cheapest setting (fewest VJPs, then forwards) whose
mean PSNR is within 0.2 dB of the best one's. Writes experiments/results/frontier_tiny.{csv,md,png}; runs are kept (and resumed) in
--work.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dps_map.config import compose
from dps_map.runner import run
from experiments.common import default_workers, pyplot, run_parallel, save_figure, write_csv
from experiments.frontier import GRID as GMM_GRID

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
GRID = [g for g in GMM_GRID if g[0] != "exact"]  # the same (sampler, steps, K) settings as the GMM half
TASKS = ("sr4", "inpaint_box", "gaussian_deblur")
WITHIN_DB = 0.2


def setting_label(sampler: str, steps: int, k) -> str:
    return f"{sampler} {steps} steps" + (f" K={k}" if k is not None else "")


def run_setting(task: str, sampler: str, steps: int, k, args) -> dict:
    """One (task, sampler, steps, K) through the runner; returns its row of the table."""
    over = [f"task={task}", "prior=tiny", "data=demo", f"data.per_photo={args.per_photo}", f"sampler={sampler}",
            f"sampler.respacing={steps}", f"seed={args.seed}", "num_samples=1", "metrics=fast",
            f"measurement_batch={args.measurement_batch}", "progress=false"]
    over += [f"sampler.num_inner={k}"] * (k is not None)
    cfg = compose(*over)
    started = time.perf_counter()
    s = run(cfg, args.work / task / f"{sampler}_{steps}_{k}")
    wall = time.perf_counter() - started
    m, cost = s["metrics"], s["cost"]
    step_size = cfg.sampler.get("zeta", cfg.sampler.get("w"))
    return {"task": task, "setting": setting_label(sampler, steps, k), "sampler": sampler, "steps": steps, "K": k,
            "step_size": float(step_size), "n_images": m["psnr"]["n"], "n_failed": s["n_failed"],
            "psnr": m["psnr"]["mean"], "psnr_sem": m["psnr"]["sem"], "ssim": m["ssim"]["mean"],
            "ssim_sem": m["ssim"]["sem"], "vjp": cost["vjp_per_sample"], "forward": cost["forward_per_sample"],
            "sampler_s_per_sample": cost["seconds_per_sample"], "wall_s": wall,
            "naive_psnr": s["naive"]["psnr"]["mean"], "naive_ssim": s["naive"]["ssim"]["mean"]}


def cheapest(rows: list[dict], within: float = WITHIN_DB) -> tuple[dict, dict]:
    """(best, cheapest): the highest mean PSNR, and the fewest-VJP (then fewest-forward) setting whose mean
    PSNR is within `within` dB of it."""
    rows = [r for r in rows if r["psnr"] is not None]  # a setting whose every sample diverged has no PSNR
    best = max(rows, key=lambda r: r["psnr"])
    ok = [r for r in rows if r["psnr"] >= best["psnr"] - within]
    return best, min(ok, key=lambda r: (r["vjp"], r["forward"]))


def fmt_sem(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.2f}" if v >= 0.01 else f"{v:.3f}"


def fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def write(rows: list[dict], out: Path, command: str, seconds: float, args) -> None:
    write_csv(rows, out / "frontier_tiny.csv")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    n_img = rows[0]["n_images"]
    lines = ["# Cost-quality frontier on the tiny prior (demo crops, PSNR/SSIM)", "",
             f"`{command}` at commit {commit}: {seconds / 60:.1f} min wall, {args.workers} worker process(es), "
             f"on a {os.cpu_count()}-core machine{' with a GPU' if torch.cuda.is_available() else ' (CPU)'} "
             f"(measured; 1-min load average at the end {os.getloadavg()[0]:.1f}). {n_img} held-out crops (data.per_photo={args.per_photo}), one sample each, "
             f"measurement_batch={args.measurement_batch}, seed {args.seed}; ± are standard errors over the crops. "
             "Step sizes from conf/tuned/ (constant per step)."
             + (f" Not run (time): {', '.join(args.skipped)}." if args.skipped else ""), ""]
    summary = []
    for task in tasks:
        sel = [r for r in rows if r["task"] == task]
        best, cheap = cheapest(sel)
        lines += [f"## {task} (naive baseline {sel[0]['naive_psnr']:.2f} dB, SSIM {sel[0]['naive_ssim']:.3f})", "",
                  "| setting | step size | VJPs/sample | forwards/sample | PSNR (dB) ↑ | SSIM ↑ | "
                  "sampler s/sample | wall s |", "|---|---|---|---|---|---|---|---|"]
        for r in sel:
            lines.append(f"| {r['setting']} | {r['step_size']:g} | {r['vjp']:.0f} | {r['forward']:.0f} | "
                         f"{fmt(r['psnr'], '.2f')} ± {fmt_sem(r['psnr_sem'])} | "
                         f"{fmt(r['ssim'], '.3f')} ± {fmt_sem(r['ssim_sem'])} | "
                         f"{r['sampler_s_per_sample']:.1f} | {r['wall_s']:.0f} |"
                         + (" FAILED: %d" % r["n_failed"] if r["n_failed"] else ""))
        lines += ["", f"Best PSNR: {best['setting']} ({best['psnr']:.2f} dB, {best['vjp']:.0f} VJPs); cheapest within "
                  f"{WITHIN_DB} dB: **{cheap['setting']}** ({cheap['psnr']:.2f} dB, {cheap['vjp']:.0f} VJPs + "
                  f"{cheap['forward']:.0f} forwards).", ""]
        summary.append(f"| {task} | {best['setting']} ({best['psnr']:.2f}) | {cheap['setting']} ({cheap['psnr']:.2f}, "
                       f"{cheap['vjp']:.0f} VJPs) | {sel[0]['naive_psnr']:.2f} |")
    lines += ["## Cheapest within 0.2 dB of the best", "", "| task | best PSNR | cheapest within 0.2 dB | naive |",
              "|---|---|---|---|", *summary]
    (out / "frontier_tiny.md").write_text("\n".join(lines) + "\n")
    plot(rows, tasks, out / "frontier_tiny.png", n_img)


def plot(rows, tasks, path: Path, n_img: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 7), squeeze=False)
    styles = {("dps", None): "o-", ("dsg", None): "s-", ("dmap", 1): "^-", ("dmap", 3): "v-"}
    for col, task in enumerate(tasks):
        sel = [r for r in rows if r["task"] == task]
        for row, (key, name) in enumerate((("psnr", "PSNR (dB)"), ("ssim", "SSIM"))):
            ax = axes[row][col]
            for (sampler, k), style in styles.items():
                pts = [r for r in sel if r["sampler"] == sampler and r["K"] == k and r[key] is not None]
                if pts:
                    ax.errorbar([r["vjp"] for r in pts], [r[key] for r in pts],
                                yerr=[r[f"{key}_sem"] or 0.0 for r in pts], fmt=style, capsize=2, ms=4,
                                label=sampler + (f" K={k}" if k else ""))
            ax.axhline(sel[0][f"naive_{key}"], color="k", ls=":", label="naive")
            ax.set_xscale("log")
            ax.set_xlabel("VJPs per sample")
            ax.set_ylabel(name)
            ax.set_title(task, fontsize=9)
            ax.legend(fontsize=7)
    save_figure(fig, path, f"Quality vs VJPs per sample (tiny prior, {n_img} demo crops, ± s.e.)")


def _report(r: dict) -> None:
    print(f"{r['task']} {r['setting']}: PSNR {r['psnr']:.2f} SSIM {r['ssim']:.3f} VJPs {r['vjp']:.0f} "
          f"wall {r['wall_s']:.0f} s", flush=True)


def run_jobs(jobs: list[tuple], args) -> list[dict]:
    """The rows of jobs [(task, sampler, steps, K)], in that order (experiments.common.run_parallel)."""
    return run_parallel(run_setting, [(*job, args) for job in jobs], args.workers,
                        cost=lambda job: job[2] * (job[3] or 1), report=_report)  # steps x K ~ network calls


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--per-photo", type=int, default=1, help="demo crops per held-out photograph (2 photographs)")
    parser.add_argument("--measurement-batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="only settings with at most this many steps "
                        "(a quick estimate of the time)")
    parser.add_argument("--skip", nargs="*", default=["none"], help="settings left out, as sampler:steps[:K] "
                        "(default 'none': the whole grid)")
    parser.add_argument("--workers", type=int, default=None, help="parallel single-threaded runs (default: one "
                        "per CPU core without a GPU, 1 with one)")
    parser.add_argument("--work", type=Path, default=Path("outputs/frontier/tiny"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.workers = args.workers or default_workers()
    started = time.perf_counter()
    skip = {tuple(s.split(":")) for s in args.skip if s != "none"}
    grid = [g for g in GRID if (args.max_steps is None or g[1] <= args.max_steps)
            and (g[0], str(g[1])) not in skip and (g[0], str(g[1]), str(g[2])) not in skip]
    jobs = [(task, *g) for task in args.tasks for g in grid]
    rows = dict(zip(jobs, run_jobs(jobs, args)))
    rows = [rows[job] for job in jobs]  # table order, whatever order the workers finished in
    args.out.mkdir(parents=True, exist_ok=True)
    command = ("python -m experiments.frontier_tiny " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    args.skipped = [setting_label(*g) for g in GRID if g not in grid]
    write(rows, args.out, command, time.perf_counter() - started, args)
    print((args.out / "frontier_tiny.md").read_text())


if __name__ == "__main__":
    main()
