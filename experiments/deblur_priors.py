"""DMAP and DPS deblurring with the shipped tiny prior and the earlier 2200-step one, on test and validation crops.

    python -m experiments.deblur_priors --old-prior PATH [--per-photo 8] [--samplers dmap dps]

Gaussian deblurring, 50 steps, each sampler at its tuned zeta (10 for both priors and both samplers), with the
shipped 10k-step prior and the earlier 2200-step prior (`--old-prior`: its weights; docs/tiny-prior.md says how
to get them), on test crops (the held-out chelsea and coffee) and validation crops (astronaut, rocket,
motorcycle_left), `--per-photo` of each photograph. Per crop the measurement and seed are the same for both
priors, so the difference is paired (mean ± standard error over crops, crops where the shipped prior wins).
One Hydra multirun of the runner per crop set (sampler x prior), kept and resumed in --work. Writes
experiments/results/deblur_priors.{csv,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from dps_map.io import sha256_file
from experiments.common import (
    VALIDATION_PHOTOS,
    demo_data,
    mean_sem,
    multirun,
    paired,
    require_old_prior,
    write_result,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SHIPPED_PRIOR = ROOT / "dps_map" / "assets" / "tiny_prior.pt"
SETS = ("test", "validation")


def deblur(args) -> tuple[list[dict], str, list[str]]:
    """The runs, their rows, the header's note and the tables."""
    priors = {str(SHIPPED_PRIOR): "shipped", str(args.old_prior): "old"}
    res = {}
    for set_name in SETS:
        jobs = multirun(args.work / set_name, [
            "task=gaussian_deblur", "prior=tiny", f"prior.checkpoint={','.join(priors)}",
            f"sampler={','.join(args.samplers)}", f"seed={args.seed}", "measurement_batch=4",
            *demo_data(args.per_photo, validation=set_name == "validation")])
        for job in jobs:
            res[(set_name, job["cfg"].sampler.name, priors[str(job["cfg"].prior.checkpoint)])] = job
    rows, lines = [], []
    for set_name in SETS:
        for sampler in args.samplers:
            new, old = res[(set_name, sampler, "shipped")], res[(set_name, sampler, "old")]
            p = paired(new["records"], old["records"])
            m_new, s_new = mean_sem(new["records"])
            m_old, s_old = mean_sem(old["records"])
            m_naive, _ = mean_sem(new["records"], "naive_psnr")
            rows.append({"set": set_name, "sampler": sampler, "zeta_shipped": float(new["cfg"].sampler.zeta),
                         "zeta_old": float(old["cfg"].sampler.zeta), "n_crops": p["n"], "psnr_shipped": m_new,
                         "psnr_shipped_sem": s_new, "psnr_old": m_old, "psnr_old_sem": s_old,
                         "diff": p["diff"], "diff_sem": p["sem"], "shipped_wins": p["wins"], "naive_psnr": m_naive})
    lines += ["| crops | sampler | zeta (shipped / old) | n | shipped 10k-step prior | earlier 2200-step prior | "
              "shipped − earlier (paired) | crops where shipped is better | naive |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set']} | {r['sampler']} | {r['zeta_shipped']:g} / {r['zeta_old']:g} | {r['n_crops']} | "
                     f"{r['psnr_shipped']:.2f} ± {r['psnr_shipped_sem']:.2f} | {r['psnr_old']:.2f} ± "
                     f"{r['psnr_old_sem']:.2f} | {r['diff']:+.2f} ± {r['diff_sem']:.2f} | {r['shipped_wins']} of "
                     f"{r['n_crops']} | {r['naive_psnr']:.2f} |")
    # test minus validation: is the prior change different on the two sets? (unpaired: different crops)
    lines += ["", "| sampler | (shipped − earlier) on test minus on validation | standard error |", "|---|---|---|"]
    for sampler in args.samplers:
        t = next(r for r in rows if r["set"] == "test" and r["sampler"] == sampler)
        v = next(r for r in rows if r["set"] == "validation" and r["sampler"] == sampler)
        lines.append(f"| {sampler} | {t['diff'] - v['diff']:+.2f} | {np.hypot(t['diff_sem'], v['diff_sem']):.2f} |")
    lines += ["", "Per crop, PSNR (dB) shipped / earlier:", ""]
    for set_name in SETS:
        for sampler in args.samplers:
            new, old = res[(set_name, sampler, "shipped")]["records"], res[(set_name, sampler, "old")]["records"]
            lines.append(f"- {set_name} {sampler}: " + ", ".join(
                f"{i} {new[i]['psnr']:.2f}/{old[i]['psnr']:.2f}" for i in sorted(new) if i in old))
    extra = (f"Gaussian deblurring, 50 steps, one sample per crop, seed {args.seed}, the same measurement and "
             f"noise for both priors. Shipped prior sha256 {sha256_file(SHIPPED_PRIOR)[:12]}; earlier prior "
             f"`{args.old_prior.name}` sha256 {sha256_file(args.old_prior)[:12]}. Test: {args.per_photo} crops of "
             f"each held-out photograph (chelsea, coffee); validation: {args.per_photo} of each of "
             f"{', '.join(VALIDATION_PHOTOS)}. PSNR in dB, mean ± standard error.")
    return rows, extra, lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-prior", type=Path, default=None, help="the earlier 2200-step prior's weights (required)")
    parser.add_argument("--per-photo", type=int, default=8, help="crops per photograph")
    parser.add_argument("--samplers", nargs="+", default=["dmap", "dps"], choices=["dmap", "dps"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("outputs/deblur_priors"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    require_old_prior(args.old_prior)
    started = time.perf_counter()
    rows, extra, lines = deblur(args)
    title = "DMAP/DPS deblurring: shipped vs earlier tiny prior, test vs validation crops"
    write_result(args.out, "deblur_priors", "experiments.deblur_priors", argv, title, started, rows, extra, lines)


if __name__ == "__main__":
    main()
