"""The cost-quality frontier on the exact Gaussian mixture : what a VJP buys.

    python -m experiments.frontier [--seeds 0 1 2] [--num-samples 500]      # make frontier

DPS and DSG at 50/100/250/1000 steps, DMAP at 25/50/100/250 steps with K = 1 and 3, each through the
runner (dps_map.runner.run; task=gmm_linear: d=8, 25 components, m=2, sigma_y=0.05, the configs' own step
sizes: zeta.dps 0.1, w.dsg 0.3, zeta.dmap 0.3, constant per step, so fewer steps also means less total
guidance). Quality against the exact posterior p(x | y): mean log p(x | y) (nats), sliced Wasserstein-1
to exact samples (with its noise floor), mode-weight total variation, misfit; cost: network VJPs (and
forwards) per sample. "Cheapest within 0.1 nats": the fewest VJPs whose mean log p(x|y) is within 0.1
of the best setting's; the same within 10% of the best SW1. Note: a MAP-like sampler can exceed the
exact samples' own mean log p(x|y) (it concentrates on the modes), so log p alone rewards collapse;
SW1 and mode TV measure the distribution. The tiny-prior half is experiments/frontier_tiny.py.

Writes experiments/results/frontier_gmm.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dps_map.config import compose
from dps_map.runner import run
from experiments.common import pyplot, save_figure, write_csv

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
GRID = ([("dps", s, None) for s in (50, 100, 250, 1000)] + [("dsg", s, None) for s in (50, 100, 250, 1000)]
        + [("dmap", s, k) for k in (1, 3) for s in (25, 50, 100, 250)] + [("exact", None, None)])
KEYS = ("log_posterior", "sliced_wasserstein", "sw_noise_floor", "mode_weight_tv", "misfit", "trace_ratio")


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
        label = "exact posterior samples" if sampler == "exact" else \
            f"{sampler} {steps} steps" + (f" K={k}" if k is not None else "")
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


def write(rows, out: Path, command: str, seconds: float, seeds, n: int) -> None:
    write_csv(rows, out / "frontier_gmm.csv")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    best_lp, cheap_lp = cheapest(rows, "log_posterior", lambda b: 0.1, True)
    best_sw, cheap_sw = cheapest(rows, "sliced_wasserstein", lambda b: 0.1 * b, False)
    lines = ["# Cost-quality frontier on the exact Gaussian mixture (d=8, m=2, sigma_y=0.05)", "",
             f"`{command}` at commit {commit} ({seconds / 60:.1f} min on a {os.cpu_count()}-core machine); {n} samples per "
             f"setting and problem seed, means over seeds {list(seeds)}.", "",
             "| setting | VJPs/sample | forwards/sample | log p(x\\|y) (nats) ↑ | SW1 ↓ (floor) | mode TV ↓ | "
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
    for (sampler, k), style in {("dps", None): "o-", ("dsg", None): "s-", ("dmap", 1): "^-", ("dmap", 3): "v-"}.items():
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--work", type=Path, default=Path("outputs/frontier/gmm"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = setting_rows(args.seeds, args.num_samples, args.work)
    args.out.mkdir(parents=True, exist_ok=True)
    command = ("python -m experiments.frontier " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    write(rows, args.out, command, time.perf_counter() - started, args.seeds, args.num_samples)
    print((args.out / "frontier_gmm.md").read_text())


if __name__ == "__main__":
    main()
