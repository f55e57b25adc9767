"""What `make demo` prints, with the shipped tiny prior and with the earlier 2200-step one, each at its own step sizes.

    python -m experiments.demo_tiny --old-prior PATH

The runs `make demo` makes (dps_map.config.demo: 4 held-out crops, DPS and DMAP on its three tasks, 50 steps, one
sample each, seed 0), with the shipped prior at today's tuned step sizes (conf/tuned/) and with the earlier prior
(`--old-prior`: its weights; docs/tiny-prior.md says how to get them) at the step sizes tuned for it (OLD_ZETA).
Hydra multiruns of the runner (the shipped prior: task x sampler; the earlier one: the tasks sharing a sampler
and step size), kept and resumed in --work. Writes experiments/results/demo_tiny.{csv,md}: the demo table of
docs/tiny-prior.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dps_map.config.demo import DEMO_PER_PHOTO, DEMO_SAMPLERS, DEMO_TASKS
from dps_map.io import sha256_file
from experiments.common import mean_sem, multirun, require_old_prior, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SHIPPED_PRIOR = ROOT / "dps_map" / "assets" / "tiny_prior.pt"
#: the step sizes (zeta) tuned for the earlier 2200-step prior, per (task, sampler)
OLD_ZETA = {("sr4", "dps"): 10.0, ("sr4", "dmap"): 3.0, ("inpaint_box", "dps"): 10.0, ("inpaint_box", "dmap"): 3.0,
            ("gaussian_deblur", "dps"): 10.0, ("gaussian_deblur", "dmap"): 10.0}


def demo(args) -> tuple[list[dict], str, list[str]]:
    """The runs, their rows, the header's note and the tables."""
    base = ["prior=tiny", "data=demo", f"data.per_photo={DEMO_PER_PHOTO}"]
    res = {}
    for job in multirun(args.work / "shipped", [*base, f"task={','.join(DEMO_TASKS)}",
                                                 f"sampler={','.join(DEMO_SAMPLERS)}"]):
        res[(job["cfg"].task.name, job["cfg"].sampler.name, "shipped")] = job
    for sampler, zeta in dict.fromkeys((s, z) for (_, s), z in OLD_ZETA.items()):
        tasks = [t for (t, s), z in OLD_ZETA.items() if (s, z) == (sampler, zeta)]
        for job in multirun(args.work / "old" / f"{sampler}_{zeta:g}", [
                *base, f"task={','.join(tasks)}", f"sampler={sampler}", f"sampler.zeta={zeta}",
                f"prior.checkpoint={args.old_prior}"]):
            res[(job["cfg"].task.name, sampler, "old")] = job
    rows = []
    for task in DEMO_TASKS:
        for sampler in DEMO_SAMPLERS:
            for who in ("shipped", "old"):
                r = res[(task, sampler, who)]["records"]
                m, s = mean_sem(r)
                rows.append({"task": task, "sampler": sampler, "prior": who,
                             "zeta": float(res[(task, sampler, who)]["cfg"].sampler.zeta), "n_crops": len(r),
                             "psnr": m, "psnr_sem": s, "ssim": mean_sem(r, "ssim")[0],
                             "naive_psnr": mean_sem(r, "naive_psnr")[0]})
    get = {(r["task"], r["sampler"], r["prior"]): r for r in rows}
    lines = ["| task | DPS (earlier prior) | DMAP (earlier prior) | naive |", "|---|---|---|---|"]
    for task in DEMO_TASKS:
        cells = [f"{get[(task, s, 'shipped')]['psnr']:.2f} ({get[(task, s, 'old')]['psnr']:.2f})" for s in DEMO_SAMPLERS]
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {get[(task, 'dps', 'shipped')]['naive_psnr']:.2f} |")
    lines += ["", "| task | sampler | prior | zeta | n | PSNR | SSIM |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['sampler']} | {r['prior']} | {r['zeta']:g} | {r['n_crops']} | {r['psnr']:.2f} ± "
              f"{r['psnr_sem']:.2f} | {r['ssim']:.3f} |" for r in rows]
    old = ", ".join(f"{t} {s} {z:g}" for (t, s), z in OLD_ZETA.items())
    extra = (f"The runs `make demo` makes (python -m dps_map.demo: data=demo data.per_photo={DEMO_PER_PHOTO}, i.e. "
             f"{2 * DEMO_PER_PHOTO} held-out crops, 50 steps, one sample each, seed 0), with the shipped prior (sha256 "
             f"{sha256_file(SHIPPED_PRIOR)[:12]}) at today's tuned step sizes and with the earlier 2200-step prior "
             f"(sha256 {sha256_file(args.old_prior)[:12]}) at those tuned for it (zeta: {old}). PSNR in dB.")
    return rows, extra, lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-prior", type=Path, default=None, help="the earlier 2200-step prior's weights (required)")
    parser.add_argument("--work", type=Path, default=Path("outputs/demo_tiny"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    require_old_prior(args.old_prior)
    started = time.perf_counter()
    rows, extra, lines = demo(args)
    title = "What make demo prints: the shipped prior and the earlier one (PSNR, dB)"
    write_result(args.out, "demo_tiny", "experiments.demo_tiny", argv, title, started, rows, extra, lines)


if __name__ == "__main__":
    main()
