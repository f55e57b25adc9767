"""The shipped SR x4 adapter: adapter_dmap vs dmap and adapter_dps vs dps on held-out crops, paired per crop.

    python -m experiments.adapter_sr [--per-photo 16]

SR x4 (sigma_y 0.05), 50 steps, one sample per crop, `--per-photo` test crops of each held-out photograph
(chelsea, coffee); the adapter samplers use the shipped adapter dps_map/assets/adapters/sr4_tiny.pt; step sizes
from conf/tuned/. The four samplers run as one Hydra multirun of the runner, kept and resumed in --work.
Writes experiments/results/adapter_sr.{csv,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dps_map.io import sha256_file
from experiments.common import demo_data, mean_sem, multirun, paired, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
#: (with the adapter, without it)
PAIRS = (("adapter_dmap", "dmap"), ("adapter_dps", "dps"))


def adapter(args) -> tuple[list[dict], str, list[str]]:
    """The runs, their rows, the header's note and the tables."""
    samplers = [s for pair in PAIRS for s in pair]
    jobs = multirun(args.work, ["task=sr4", "prior=tiny", f"sampler={','.join(samplers)}", f"seed={args.seed}",
                                "measurement_batch=1", *demo_data(args.per_photo)])
    res = {job["cfg"].sampler.name: job for job in jobs}
    rows = []
    for sampler in samplers:
        r = res[sampler]["records"]
        m, s = mean_sem(r)
        rows.append({"sampler": sampler, "zeta": float(res[sampler]["cfg"].sampler.zeta), "n_crops": len(r),
                     "psnr": m, "psnr_sem": s, "ssim": mean_sem(r, "ssim")[0], "naive_psnr": mean_sem(r, "naive_psnr")[0]})
    lines = ["| sampler | zeta | n | PSNR | SSIM | bicubic PSNR |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['sampler']} | {r['zeta']:g} | {r['n_crops']} | {r['psnr']:.2f} ± {r['psnr_sem']:.2f} | "
              f"{r['ssim']:.3f} | {r['naive_psnr']:.2f} |" for r in rows]
    lines += ["", "| comparison | n | PSNR difference (paired) | crops where the adapter is better | SSIM difference |",
              "|---|---|---|---|---|"]
    for a, b in PAIRS:
        p, q = paired(res[a]["records"], res[b]["records"]), paired(res[a]["records"], res[b]["records"], "ssim")
        rows.append({"sampler": f"{a} - {b}", "n_crops": p["n"], "psnr": p["diff"], "psnr_sem": p["sem"],
                     "wins": p["wins"], "ssim": q["diff"]})
        lines.append(f"| {a} − {b} | {p['n']} | {p['diff']:+.2f} ± {p['sem']:.2f} | {p['wins']} of {p['n']} | "
                     f"{q['diff']:+.4f} ± {q['sem']:.4f} |")
    extra = (f"SR x4 (sigma_y 0.05), 50 steps, one sample per crop, seed {args.seed}; {args.per_photo} crops of each "
             f"held-out photograph (chelsea, coffee); the shipped prior (sha256 "
             f"{sha256_file(ROOT / 'dps_map/assets/tiny_prior.pt')[:12]}) and adapter "
             f"dps_map/assets/adapters/sr4_tiny.pt (sha256 {sha256_file(ROOT / 'dps_map/assets/adapters/sr4_tiny.pt')[:12]}); "
             "step sizes from conf/tuned/. PSNR in dB, mean ± standard error over crops; differences paired per crop "
             "(same measurement and seed).")
    return rows, extra, lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-photo", type=int, default=16, help="crops per held-out photograph")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("outputs/adapter_sr"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows, extra, lines = adapter(args)
    title = "adapter_dmap vs dmap (and adapter_dps vs dps) on SR x4, more crops"
    write_result(args.out, "adapter_sr", "experiments.adapter_sr", argv, title, started, rows, extra, lines)


if __name__ == "__main__":
    main()
