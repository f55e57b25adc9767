"""The cost-quality frontier: what a VJP buys, on the exact Gaussian mixture and on the shipped tiny prior.

    python -m experiments.frontier gmm [--seeds 0 1 2] [--num-samples 500]                  # make frontier
    python -m experiments.frontier tiny [--per-photo 1] [--tasks sr4 inpaint_box gaussian_deblur] [--workers N]

The grid of both halves: DPS and DSG at 50/100/250/1000 steps, DMAP at 25/50/100/250 steps with K
(sampler.num_inner) = 1 and 3, each with the configs' own step sizes, constant per step (so more steps also
means more total guidance).

gmm: each setting through the runner (dps_map.runner.run; task=gmm_linear: d=8, 25 components, m=2,
sigma_y=0.05; zeta.dps 0.1, w.dsg 0.3, zeta.dmap 0.3). Quality against the exact posterior p(x | y): mean
log p(x | y) (nats), sliced Wasserstein-1 to exact samples (with its noise floor), mode-weight total
variation, misfit; cost: network VJPs (and forwards) per sample. "Cheapest within 0.1 nats": the fewest VJPs
whose mean log p(x|y) is within 0.1 of the best setting's; the same within 10% of the best SW1. A MAP-like
sampler can exceed the exact samples' own mean log p(x|y) (it concentrates on the modes), so log p alone
rewards collapse; SW1 and mode TV measure the distribution. Writes experiments/results/frontier_gmm.{csv,md,png}.

tiny: SR x4, box inpainting and Gaussian deblurring on the tiny prior (prior=tiny, data=demo, metrics=fast,
num_samples=1, measurement_batch=4 so every crop of a setting shares one batched sampler call), with the step sizes
conf/tuned/ resolves (docs/tiny-prior.md "Default step sizes"; DSG w 0.08). By default one crop per held-out
photograph (data.per_photo=1: chelsea_0 and coffee_0) and one sample per crop: means and standard errors are over 2
images. Each (task, sampler, K) is one Hydra multirun over its steps, run as a subprocess (`python -m dps_map.run -m
hydra/launcher=local ... sampler.respacing=50,100,250,1000 hydra.sweep.dir=WORK/TASK/SAMPLER[_KK]`);
dps_map.runner.sweep_results then groups each sweep's records, one group per setting (it also computes FID/KID per
setting where the Inception weights exist, unused here). The local launcher runs a multirun's jobs one after
another, so the driver runs --workers multiruns at a time, the costliest first, each single-threaded when there are
several (experiments.common.multiruns; default: one per CPU core, 1 with a GPU). With --workers 1 the whole grid is
serial: 73 min on 2 busy CPU cores (the provenance record of frontier_tiny.md); 2 workers on 2 idle cores should
take about half of that (not measured with this driver). Rerunning the same command into the same --work resumes:
the runner skips every finished sample. Per setting: mean PSNR/SSIM and their standard errors, VJPs and forwards per
sample, sampler seconds per sample (those of the run that drew the sample) and its run directory under --work; per
task, the naive baseline (bicubic / masked / blurred measurement) and the cheapest setting (fewest VJPs, then
forwards) whose mean PSNR is within 0.2 dB of the best one's. Writes experiments/results/frontier_tiny.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from dps_map.config import compose
from dps_map.errors import UserError
from dps_map.runner import run
from dps_map.runner.sweep_results import aggregate
from experiments.common import default_workers, header, multiruns, pyplot, save_figure, write_csv

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
GRID = ([("dps", s, None) for s in (50, 100, 250, 1000)] + [("dsg", s, None) for s in (50, 100, 250, 1000)]
        + [("dmap", s, k) for k in (1, 3) for s in (25, 50, 100, 250)] + [("exact", None, None)])
KEYS = ("log_posterior", "sliced_wasserstein", "sw_noise_floor", "mode_weight_tv", "misfit", "trace_ratio")
TINY_GRID = [g for g in GRID if g[0] != "exact"]  # the same (sampler, steps, K) settings as the GMM half
TASKS = ("sr4", "inpaint_box", "gaussian_deblur")
WITHIN_DB = 0.2
STYLES = {("dps", None): "o-", ("dsg", None): "s-", ("dmap", 1): "^-", ("dmap", 3): "v-"}


def setting_label(sampler: str, steps: int, k) -> str:
    return f"{sampler} {steps} steps" + (f" K={k}" if k is not None else "")


# -- gmm ----------------------------------------------------------------------------------------------------
def setting_rows(seeds, n: int, work: Path) -> list[dict]:
    rows = []
    for sampler, steps, k in GRID:
        per = []
        for seed in seeds:
            over = ["task=gmm_linear", f"sampler={sampler}", f"seed={seed}", f"num_samples={n}", "progress=false"]
            over += [f"sampler.respacing={steps}"] * (steps is not None) + [f"sampler.num_inner={k}"] * (k is not None)
            cfg = compose(*over)
            summary = run(cfg, work / f"{sampler}_{steps}_{k}" / f"seed{seed}")
            per.append({**{key: summary["metrics"].get(key, np.nan) for key in KEYS},
                        "vjp": summary["cost"]["vjp"], "forward": summary["cost"]["forward"]})
        label = "exact posterior samples" if sampler == "exact" else setting_label(sampler, steps, k)
        row = {"setting": label, "sampler": sampler, "steps": steps, "K": k, "n_seeds": len(seeds)}
        for key in (*KEYS, "vjp", "forward"):
            row[key] = float(np.mean([p[key] for p in per]))
        row["log_posterior_sem"] = float(np.std([p["log_posterior"] for p in per], ddof=1) / np.sqrt(len(per))) \
            if len(per) > 1 else float("nan")
        rows.append(row)
    return rows


def cheapest(rows, key: str, within, higher_is_better: bool):
    """The fewest-VJP sampler setting whose `key` is within `within(best)` of the best one's."""
    cand = [r for r in rows if r["sampler"] != "exact" and np.isfinite(r[key])]
    best = max(cand, key=lambda r: r[key]) if higher_is_better else min(cand, key=lambda r: r[key])
    ok = [r for r in cand if abs(r[key] - best[key]) <= within(best[key])]
    return best, min(ok, key=lambda r: (r["vjp"], r["forward"]))


def write_gmm(rows, out: Path, command: str, seconds: float, seeds, n: int) -> None:
    write_csv(rows, out / "frontier_gmm.csv")
    best_lp, cheap_lp = cheapest(rows, "log_posterior", lambda b: 0.1, True)
    best_sw, cheap_sw = cheapest(rows, "sliced_wasserstein", lambda b: 0.1 * b, False)
    lines = header("Cost-quality frontier on the exact Gaussian mixture (d=8, m=2, sigma_y=0.05)", command, seconds,
                   f"{n} samples per setting and problem seed, means over seeds {list(seeds)}.")
    lines += ["| setting | VJPs/sample | forwards/sample | log p(x\\|y) (nats) ↑ | SW1 ↓ (floor) | mode TV ↓ | "
              "trace ratio | misfit |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['vjp']:.0f} | {r['forward']:.0f} | {r['log_posterior']:.3f} | "
                     f"{r['sliced_wasserstein']:.3f} ({r['sw_noise_floor']:.3f}) | {r['mode_weight_tv']:.3f} | "
                     f"{r['trace_ratio']:.2f} | {r['misfit']:.4f} |")
    lines += ["", f"Best mean log p(x|y): {best_lp['setting']} ({best_lp['log_posterior']:.3f}); cheapest within "
              f"0.1 nats: **{cheap_lp['setting']}** ({cheap_lp['vjp']:.0f} VJPs, {cheap_lp['log_posterior']:.3f}).",
              f"Best SW1: {best_sw['setting']} ({best_sw['sliced_wasserstein']:.3f}); cheapest within 10%: "
              f"**{cheap_sw['setting']}** ({cheap_sw['vjp']:.0f} VJPs, {cheap_sw['sliced_wasserstein']:.3f})."]
    (out / "frontier_gmm.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    exact = next(r for r in rows if r["sampler"] == "exact")
    for (sampler, k), style in STYLES.items():
        sel = [r for r in rows if r["sampler"] == sampler and r["K"] == k]
        label = sampler + (f" K={k}" if k else "")
        for ax, key in zip(axes, ("log_posterior", "sliced_wasserstein")):
            ax.plot([r["vjp"] for r in sel], [r[key] for r in sel], style, label=label)
    for ax, key, name in zip(axes, ("log_posterior", "sliced_wasserstein"), ("mean log p(x|y) (nats)", "SW1 to exact")):
        ax.axhline(exact[key], color="k", ls=":", label="exact samples")
        ax.set_xscale("log")
        ax.set_xlabel("VJPs per sample")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    axes[1].axhline(exact["sw_noise_floor"], color="gray", ls="--", label="SW1 floor")
    save_figure(fig, out / "frontier_gmm.png", "Quality vs VJPs per sample (GMM d=8, exact posterior)")


def main_gmm(args, command: str) -> None:
    started = time.perf_counter()
    rows = setting_rows(args.seeds, args.num_samples, args.work)
    args.out.mkdir(parents=True, exist_ok=True)
    write_gmm(rows, args.out, command, time.perf_counter() - started, args.seeds, args.num_samples)
    print((args.out / "frontier_gmm.md").read_text())


# -- tiny ---------------------------------------------------------------------------------------------------
def tiny_sweeps(tasks, grid, args) -> list[dict]:
    """One multirun per (task, sampler, K) of the grid over its steps (sampler.respacing): its overrides, its
    hydra.sweep.dir and its cost (network calls per sample: steps x K, summed)."""
    sweeps = []
    for task in tasks:
        for sampler, k in dict.fromkeys((s, k) for s, _, k in grid):
            steps = [n for s, n, kk in grid if (s, kk) == (sampler, k)]
            over = [f"task={task}", "prior=tiny", "data=demo", f"data.per_photo={args.per_photo}", f"sampler={sampler}",
                    f"seed={args.seed}", "num_samples=1", "metrics=fast", f"measurement_batch={args.measurement_batch}",
                    "sampler.respacing=" + ",".join(str(n) for n in steps)] + [f"sampler.num_inner={k}"] * (k is not None)
            sweeps.append({"task": task, "sampler": sampler, "K": k, "overrides": over,
                           "dir": args.work.resolve() / task / (sampler + (f"_K{k}" if k is not None else "")),
                           "cost": sum(n * (k or 1) for n in steps)})
    return sweeps


def sweep_rows(sweep: dict, jobs: list[dict]) -> list[dict]:
    """The rows of a finished sweep, one per job (steps value), from the aggregate of its directory: the group
    holding the job (a sweep directory may also hold runs of other options, in groups of their own; runs that
    differ only in settings that do not change the samples, such as measurement_batch, share a group)."""
    groups = aggregate(sweep["dir"])["groups"]
    group_of = {Path(d): g for g in groups.values() for d in g["jobs"]}
    rows = []
    for job in jobs:
        cfg, group = job["cfg"], group_of[job["dir"]]
        steps, label = int(cfg.sampler.respacing), setting_label(sweep["sampler"], int(cfg.sampler.respacing), sweep["K"])
        if not group["complete"]:
            raise UserError(f"the run of {sweep['task']} {label} in '{sweep['dir']}' is incomplete (its aggregate.md "
                            "says why): rerun the same command to finish it")
        m, cost = group["metrics"], group["cost"]
        none = {"mean": None, "sem": None, "n": 0}  # a setting whose every sample diverged has no PSNR
        psnr, ssim = m.get("psnr", none), m.get("ssim", none)
        rows.append({"task": sweep["task"], "setting": label, "sampler": sweep["sampler"], "steps": steps,
                     "K": sweep["K"], "step_size": float(cfg.sampler.get("zeta", cfg.sampler.get("w"))),
                     "n_images": psnr["n"], "n_failed": group["n_failed"], "psnr": psnr["mean"], "psnr_sem": psnr["sem"],
                     "ssim": ssim["mean"], "ssim_sem": ssim["sem"], "vjp": cost["vjp_per_sample"],
                     # the aggregate counts network calls as NFE = forwards + VJPs (dps_map/samplers/base.py)
                     "forward": cost["nfe_per_sample"] - cost["vjp_per_sample"],
                     "sampler_s_per_sample": cost["seconds_per_sample"],
                     "naive_psnr": m.get("naive_psnr", none)["mean"], "naive_ssim": m.get("naive_ssim", none)["mean"],
                     "run_dir": str(Path(group["jobs"][0]).relative_to(sweep["dir"].parents[1]))})  # under --work
    return rows


def tiny_cheapest(rows: list[dict], within: float = WITHIN_DB) -> tuple[dict, dict]:
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


def write_tiny(rows: list[dict], out: Path, command: str, seconds: float, args) -> None:
    write_csv(rows, out / "frontier_tiny.csv")
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    n_img = max(r["n_images"] for r in rows)
    lines = header("Cost-quality frontier on the tiny prior (demo crops, PSNR/SSIM)", command, seconds,
                   f"{args.workers} multirun(s) at a time. {n_img} held-out crops (data.per_photo={args.per_photo}), "
                   f"one sample each, measurement_batch={args.measurement_batch}, seed {args.seed}; ± are standard "
                   "errors over the crops. Step sizes from conf/tuned/ (constant per step)."
                   + (f" Not run (time): {', '.join(args.skipped)}." if args.skipped else ""))
    summary = []
    for task in tasks:
        sel = [r for r in rows if r["task"] == task]
        naive = max(sel, key=lambda r: r["n_images"])  # the baseline of the measurements, over every crop
        best, cheap = tiny_cheapest(sel)
        lines += [f"## {task} (naive baseline {naive['naive_psnr']:.2f} dB, SSIM {naive['naive_ssim']:.3f})", "",
                  "| setting | step size | VJPs/sample | forwards/sample | PSNR (dB) ↑ | SSIM ↑ | sampler s/sample |",
                  "|---|---|---|---|---|---|---|"]
        for r in sel:
            lines.append(f"| {r['setting']} | {r['step_size']:g} | {r['vjp']:.0f} | {r['forward']:.0f} | "
                         f"{fmt(r['psnr'], '.2f')} ± {fmt_sem(r['psnr_sem'])} | "
                         f"{fmt(r['ssim'], '.3f')} ± {fmt_sem(r['ssim_sem'])} | {r['sampler_s_per_sample']:.1f} |"
                         + (" FAILED: %d" % r["n_failed"] if r["n_failed"] else ""))
        lines += ["", f"Best PSNR: {best['setting']} ({best['psnr']:.2f} dB, {best['vjp']:.0f} VJPs); cheapest within "
                  f"{WITHIN_DB} dB: **{cheap['setting']}** ({cheap['psnr']:.2f} dB, {cheap['vjp']:.0f} VJPs + "
                  f"{cheap['forward']:.0f} forwards).", ""]
        summary.append(f"| {task} | {best['setting']} ({best['psnr']:.2f}) | {cheap['setting']} ({cheap['psnr']:.2f}, "
                       f"{cheap['vjp']:.0f} VJPs) | {naive['naive_psnr']:.2f} |")
    lines += [f"## Cheapest within {WITHIN_DB} dB of the best", "",
              f"| task | best PSNR | cheapest within {WITHIN_DB} dB | naive |", "|---|---|---|---|", *summary]
    (out / "frontier_tiny.md").write_text("\n".join(lines) + "\n")
    plot_tiny(rows, tasks, out / "frontier_tiny.png", n_img)


def plot_tiny(rows, tasks, path: Path, n_img: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 7), squeeze=False)
    for col, task in enumerate(tasks):
        sel = [r for r in rows if r["task"] == task]
        naive = max(sel, key=lambda r: r["n_images"])
        for row, (key, name) in enumerate((("psnr", "PSNR (dB)"), ("ssim", "SSIM"))):
            ax = axes[row][col]
            for (sampler, k), style in STYLES.items():
                pts = [r for r in sel if r["sampler"] == sampler and r["K"] == k and r[key] is not None]
                if pts:
                    ax.errorbar([r["vjp"] for r in pts], [r[key] for r in pts],
                                yerr=[r[f"{key}_sem"] or 0.0 for r in pts], fmt=style, capsize=2, ms=4,
                                label=sampler + (f" K={k}" if k else ""))
            ax.axhline(naive[f"naive_{key}"], color="k", ls=":", label="naive")
            ax.set_xscale("log")
            ax.set_xlabel("VJPs per sample")
            ax.set_ylabel(name)
            ax.set_title(task, fontsize=9)
            ax.legend(fontsize=7)
    save_figure(fig, path, f"Quality vs VJPs per sample (tiny prior, {n_img} demo crops, ± s.e.)")


def main_tiny(args, command: str) -> None:
    args.workers = default_workers() if args.workers is None else args.workers
    started = time.perf_counter()
    skip = {tuple(s.split(":")) for s in args.skip if s != "none"}
    grid = [g for g in TINY_GRID if (args.max_steps is None or g[1] <= args.max_steps)
            and (g[0], str(g[1])) not in skip and (g[0], str(g[1]), str(g[2])) not in skip]
    if not grid:
        raise UserError("--max-steps/--skip leave no setting of the grid to run")
    sweeps = tiny_sweeps(args.tasks, grid, args)
    done = multiruns([(sw["dir"], sw["overrides"], sw["cost"]) for sw in sweeps], args.workers)
    rows = [row for sw, jobs in zip(sweeps, done) for row in sweep_rows(sw, jobs)]
    order = {(task, *g): i for i, (task, g) in enumerate((t, g) for t in args.tasks for g in grid)}
    rows.sort(key=lambda r: order[(r["task"], r["sampler"], r["steps"], r["K"])])  # the grid's order
    args.out.mkdir(parents=True, exist_ok=True)
    args.skipped = [setting_label(*g) for g in TINY_GRID if g not in grid]
    write_tiny(rows, args.out, command, time.perf_counter() - started, args)
    print((args.out / "frontier_tiny.md").read_text())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.frontier", description=__doc__.splitlines()[0])
    halves = parser.add_subparsers(dest="half", required=True, metavar="{gmm,tiny}")
    gmm = halves.add_parser("gmm", help="the exact Gaussian mixture: log p(x|y), SW1, mode TV vs VJPs")
    gmm.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    gmm.add_argument("--num-samples", type=int, default=500)
    gmm.add_argument("--work", type=Path, default=Path("outputs/frontier/gmm"))
    gmm.add_argument("--out", type=Path, default=RESULTS)
    tiny = halves.add_parser("tiny", help="the tiny prior on demo crops: PSNR/SSIM vs VJPs, as Hydra multiruns")
    tiny.add_argument("--tasks", nargs="+", default=list(TASKS))
    tiny.add_argument("--per-photo", type=int, default=1, help="demo crops per held-out photograph (2 photographs)")
    tiny.add_argument("--measurement-batch", type=int, default=4)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--max-steps", type=int, default=None, help="only settings with at most this many steps "
                      "(a quick estimate of the time)")
    tiny.add_argument("--skip", nargs="*", default=["none"], help="settings left out, as sampler:steps[:K] "
                      "(default 'none': the whole grid)")
    tiny.add_argument("--workers", type=int, default=None, help="multiruns at a time, single-threaded when more "
                      "than one (default: one per CPU core without a GPU, 1 with one)")
    tiny.add_argument("--work", type=Path, default=Path("outputs/frontier/tiny"), help="the sweeps' directories "
                      "(WORK/TASK/SAMPLER[_KK]); rerun into the same one to resume")
    tiny.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    command = ("python -m experiments.frontier " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    try:
        (main_gmm if args.half == "gmm" else main_tiny)(args, command)
    except UserError as err:
        print(f"frontier {args.half}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
