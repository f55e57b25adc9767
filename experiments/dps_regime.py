"""When does DPS collapse below the posterior, and when does it over-disperse?

On the exact Gaussian-mixture benchmark (prior=gmm: 25 isotropic components, std 0.1, means on a
lattice; y = A x + 0.05 n with A an m x d Gaussian matrix), DPS (1000 steps) is run for every
dimension d x step size zeta x measurement count m and compared with the exact posterior p(x | y):

* trace ratio = tr Cov(DPS samples) / tr Cov(posterior)   (total spread: modes and within modes)
* within-mode ratio = mean trace of the samples grouped by their most responsible posterior component
  / the posterior components' mean trace                  (spread inside a mode: MAP-like collapse < 1)
* mode-weight TV and misfit ||y - A x|| (DPS fits y at all?)

Each cell averages `--seeds` problem instances (the posterior has >= 2 modes of weight >= 0.1 where
such an instance is found in 300 draws, else any instance; `multimodal` says which). The samplers and
metrics are the package's own (DPSSampler, metrics.posterior.posterior_report), called directly.

    python -m experiments.dps_regime [--dims 2 8 32] [--zetas ...] [--num-samples 400] [--seeds 0 1]

Writes experiments/results/dps_regime.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from dps_map.diffusion import make_betas
from dps_map.errors import ConfigError
from dps_map.metrics.posterior import posterior_report
from dps_map.operators import GaussianNoise, MatrixOperator
from dps_map.priors.gmm import GMMPrior, find_multimodal_problem, make_mixture
from dps_map.samplers.dps import DPSSampler
from experiments.common import pyplot, save_figure, write_csv

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SIGMA_Y = 0.05
MEASUREMENTS = (1, 2, 4, 16)  # m <= d of these


def gmm_prior(dim: int) -> GMMPrior:
    """conf/prior/gmm.yaml at dimension `dim` (instance_seed 0)."""
    mix = make_mixture(dim, 25, 0.5, 0.1, "isotropic", "uniform", torch.Generator().manual_seed(0))
    return GMMPrior(mix, make_betas("linear", 1000))


def problem(prior: GMMPrior, m: int, seed: int):
    """(A, y, posterior, multimodal) of one seeded instance."""
    try:
        A, _, y, post, _ = find_multimodal_problem(prior.mixture, m, SIGMA_Y, torch.Generator().manual_seed(seed),
                                                   2, 0.1, max_tries=300)
        return A, y, post, True
    except ConfigError:
        A, _, y, post, _ = find_multimodal_problem(prior.mixture, m, SIGMA_Y, torch.Generator().manual_seed(seed),
                                                   1, 0.1)
        return A, y, post, False


def cell(prior, dim: int, m: int, zeta: float, seeds, n: int, steps: int) -> dict:
    reports, multimodal = [], []
    for seed in seeds:
        A, y, post, multi = problem(prior, m, seed)
        sampler = DPSSampler(zeta=zeta, respacing=str(steps))
        x = sampler.sample(prior, MatrixOperator(A.float()), GaussianNoise(SIGMA_Y), y.float()[None].expand(n, -1),
                           (n, dim), torch.Generator().manual_seed(1000 + seed))
        reference = post.sample(n, torch.Generator().manual_seed(2000 + seed))
        rep = posterior_report(x, post, reference, A, y)
        rep["n_failed"] = n - rep["n_finite"]
        reports.append(rep)
        multimodal.append(multi)
    row = {"dim": dim, "m": m, "zeta": zeta, "n_seeds": len(seeds), "multimodal": int(sum(multimodal))}
    for key in ("trace_ratio", "within_mode_trace_ratio", "effective_modes_ratio", "mode_weight_tv", "misfit",
                "sliced_wasserstein", "n_failed"):
        vals = [r.get(key, np.nan) for r in reports]
        row[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return row


def regime(row: dict, tol: float = 0.25) -> str:
    """How DPS differs from the posterior (tolerance 25%): 'mode collapse' (fewer effective modes),
    'within-mode collapse', 'extra modes', 'within-mode over-dispersion' (joined by ' + '), 'matches'
    when none applies and the total trace ratio is within the tolerance too, 'diverges' on any NaN."""
    if row["n_failed"] > 0 or not np.isfinite(row["trace_ratio"]):
        return "diverges"
    flags = []
    if row["effective_modes_ratio"] < 1 - tol:
        flags.append("mode collapse")
    if row["effective_modes_ratio"] > 1 + tol:
        flags.append("extra modes")
    if row["within_mode_trace_ratio"] < 1 - tol:
        flags.append("within-mode collapse")
    if row["within_mode_trace_ratio"] > 1 + tol:
        flags.append("within-mode over-dispersion")
    if not flags and abs(row["trace_ratio"] - 1) > tol:
        flags.append("total trace " + ("low" if row["trace_ratio"] < 1 else "high"))
    return " + ".join(flags) or "matches"


def write(rows, out: Path, command: str, seconds: float, note: str = "") -> None:
    write_csv(rows, out / "dps_regime.csv")
    lines = ["# DPS's diversity regime on the exact Gaussian mixture", "",
             f"`{command}` ({seconds / 60:.1f} min on 2 shared CPU cores){note}. Ratios to the "
             "exact posterior (1 = as the posterior); regime (tolerance 25%): mode collapse / extra modes = "
             "effective-modes ratio < 0.75 / > 1.25, within-mode collapse / over-dispersion = within-mode "
             "ratio < 0.75 / > 1.25. 1000 DPS steps, zeta constant per step.", "",
             "| d | m | zeta | trace ratio | within-mode ratio | eff. modes ratio | mode-weight TV | misfit | "
             "failed | regime |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dim']} | {r['m']} | {r['zeta']:g} | {r['trace_ratio']:.3g} | "
                     f"{r['within_mode_trace_ratio']:.3g} | {r['effective_modes_ratio']:.3g} | "
                     f"{r['mode_weight_tv']:.3g} | {r['misfit']:.3g} | {r['n_failed']:g} | {r['regime']} |")
    (out / "dps_regime.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    dims = sorted({r["dim"] for r in rows})
    fig, axes = plt.subplots(2, len(dims), figsize=(4 * len(dims), 6), squeeze=False)
    for j, d in enumerate(dims):
        for m in sorted({r["m"] for r in rows if r["dim"] == d}):
            sel = [r for r in rows if r["dim"] == d and r["m"] == m]
            z = [r["zeta"] for r in sel]
            axes[0][j].plot(z, [r["trace_ratio"] for r in sel], "o-", label=f"m={m}")
            axes[1][j].plot(z, [r["within_mode_trace_ratio"] for r in sel], "o-", label=f"m={m}")
        for i, name in enumerate(("total trace ratio", "within-mode spread ratio")):
            ax = axes[i][j]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.axhline(1.0, color="k", ls=":")
            ax.set_xlabel("zeta")
            ax.set_ylabel(name)
            ax.set_title(f"d={d}", fontsize=9)
            ax.legend(fontsize=7)
    save_figure(fig, out / "dps_regime.png", "DPS vs the exact posterior (1 = posterior; below: collapse)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--zetas", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--num-samples", type=int, default=400)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--relabel", nargs=3, metavar=("CSV", "COMMAND", "MINUTES"),
                        help="rewrite the table from an earlier run's CSV with the current regime rule")
    args = parser.parse_args(argv)
    if args.relabel:
        import csv

        path, command, minutes = args.relabel
        rows = [{k: (v if k == "regime" else float(v)) for k, v in r.items()} for r in csv.DictReader(open(path))]
        for r in rows:
            r.update(dim=int(r["dim"]), m=int(r["m"]), regime=regime(r))
        write(rows, args.out, command, 60 * float(minutes),
              "; numbers from that run (its provenance record has its commit), regime labels recomputed")
        return
    torch.set_num_threads(1)
    started, rows = time.perf_counter(), []
    for dim in args.dims:
        prior = gmm_prior(dim)
        for m in [m for m in MEASUREMENTS if m <= dim]:
            for zeta in args.zetas:
                row = cell(prior, dim, m, zeta, args.seeds, args.num_samples, args.steps)
                row["regime"] = regime(row)
                rows.append(row)
                print(row, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m experiments.dps_regime " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    write(rows, args.out, command.strip(), time.perf_counter() - started)


if __name__ == "__main__":
    main()
