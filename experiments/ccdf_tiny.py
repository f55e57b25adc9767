"""Shortened chains (CCDF, `sampler.start`) on SR x4 with the samplers alone: the prior, the adapter, the reference.

    python -m experiments.ccdf_tiny [--starts 0.2 0.4 1] [--per-photo 4]

SR x4 (sigma_y 0.05) on `--per-photo` crops of each held-out photograph (chelsea, coffee), one sample each,
50-step chains, no guidance: the prior (ddpm), the adapter (the shipped sr4_tiny.pt) and the reference conditional
model (`prior=tiny_sr4_reference`), each at every start: `sampler.start=s` runs the last s of the chain from the
bicubic estimate diffused there; start 1 is the whole chain from noise (for the prior alone: unconditional
samples). One Hydra multirun of the runner per prior (its samplers x the starts), kept and resumed in --work.
Writes experiments/results/ccdf_tiny.{csv,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dps_map.io import sha256_file
from experiments.common import demo_data, mean_sem, multirun, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
#: table label -> (prior, sampler)
MODELS = {"prior (ddpm)": ("tiny", "ddpm"), "adapter": ("tiny", "adapter"),
          "reference (tiny_sr4_reference, ddpm)": ("tiny_sr4_reference", "ddpm")}


def ccdf(args) -> tuple[list[dict], str, list[str]]:
    """The runs, their rows, the header's note and the table."""
    res = {}
    for prior in dict.fromkeys(p for p, _ in MODELS.values()):
        samplers = [s for p, s in MODELS.values() if p == prior]
        jobs = multirun(args.work / prior, [
            "task=sr4", f"prior={prior}", f"sampler={','.join(samplers)}",
            f"+sampler.start={','.join(f'{s:g}' for s in args.starts)}", f"seed={args.seed}", "measurement_batch=1",
            *demo_data(args.per_photo)])
        for job in jobs:
            res[(prior, job["cfg"].sampler.name, float(job["cfg"].sampler.start))] = job
    rows = []
    for name, (prior, sampler) in MODELS.items():
        for start in args.starts:
            r = res[(prior, sampler, start)]
            m, s = mean_sem(r["records"])
            rows.append({"model": name, "start": start, "n_crops": len(r["records"]), "psnr": m, "psnr_sem": s,
                         "ssim": mean_sem(r["records"], "ssim")[0],
                         "naive_psnr": mean_sem(r["records"], "naive_psnr")[0],
                         "steps_run": r["summary"]["cost"].get("forward_per_sample")})
    lines = ["| sampler alone | " + " | ".join(f"start {s:g}" for s in args.starts) + " |",
             "|---" * (len(args.starts) + 1) + "|"]
    for name in MODELS:
        cells = [f"{r['psnr']:.2f} ± {r['psnr_sem']:.2f}" for r in rows if r["model"] == name]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Bicubic (the naive estimate the shortened chains start from): {rows[0]['naive_psnr']:.2f} dB. "
              "Network forwards per sample: " + ", ".join(f"start {r['start']:g} {r['steps_run']:.0f}"
                                                          for r in rows if r["model"] == "prior (ddpm)") + "."]
    extra = (f"SR x4 (sigma_y 0.05), {2 * args.per_photo} held-out crops (chelsea, coffee), one sample each, seed "
             f"{args.seed}, 50-step chains; `+sampler.start=s` runs the last s of the chain from the bicubic estimate "
             "diffused there (CCDF); start 1 is the whole chain from noise. No guidance: the samplers alone. "
             f"Shipped prior sha256 {sha256_file(ROOT / 'dps_map/assets/tiny_prior.pt')[:12]}, adapter sr4_tiny.pt, "
             "reference tiny_sr4_reference.pt (sha256 in the provenance record). PSNR in dB, mean ± standard error "
             "over crops.")
    return rows, extra, lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=float, nargs="+", default=[0.2, 0.4, 1.0], help="sampler.start values, in (0, 1]")
    parser.add_argument("--per-photo", type=int, default=4, help="crops per held-out photograph")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("outputs/ccdf_tiny"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows, extra, lines = ccdf(args)
    title = "Shortened chains (CCDF) on SR x4, samplers alone"
    write_result(args.out, "ccdf_tiny", "experiments.ccdf_tiny", argv, title, started, rows, extra, lines)


if __name__ == "__main__":
    main()
