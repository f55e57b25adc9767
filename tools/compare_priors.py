"""Is a retrained tiny prior better than the shipped one? The check a candidate must pass before it ships.

    python -m tools.compare_priors --candidate PATH/tiny_prior.pt [--baseline PATH] [--restore]

1. Held-out eps loss at fixed t: E ||eps_hat(x_t, t) - eps||^2 / D (the training loss, per pixel) on fixed
   64x64 crops, with the same noise for both priors (seeded per crop and t), on
   - `test`: crops of the held-out photographs (the demo's test set, never trained on);
   - `validation`: crops of three training photographs (the set step sizes are tuned on).
   Lower is better; the paired difference and its standard error say whether the gap is noise.
2. Sample colour statistics (--samples N, default 8): N unconditional DDPM samples of each prior (seed 0,
   100 and 1000 respaced steps) against the crop sets: mean chroma (per-pixel max - min over RGB, in
   [-1, 1] units) and within-image standard deviation. Flat, over-saturated patches (the shipped prior's
   visible failure) show as chroma far above the photographs' and a low within-image spread. A lower eps
   loss does not guarantee better samples: step 3000 of a 10k-step run had the lower loss and the higher
   chroma (1.07 vs 0.92 at 100 steps; photographs 0.37-0.70).
3. With --restore: PSNR/SSIM of DPS and DMAP on the demo tasks (SR x4, box inpainting, Gaussian deblur)
   with each prior, on the demo crops (`data=demo data.per_photo=2`, what `make demo` shows) and on the
   validation crops, at the step sizes the configs resolve today (tuned for the shipped prior), beside
   the naive baseline. A candidate should be no worse on any task before its step sizes are retuned.

Writes experiments/results/prior_comparison.{csv,md}, the sample grids beside them, and restoration rows
with --restore.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dps_map.config import compose
from dps_map.config.demo import DEMO_PER_PHOTO, DEMO_SAMPLERS, DEMO_TASKS
from dps_map.data import HELDOUT_PHOTOS, demo_crops
from dps_map.diffusion import Diffusion
from experiments.common import VALIDATION_PHOTOS, tiny_prior, write_csv

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SHIPPED = ROOT / "dps_map" / "assets" / "tiny_prior.pt"
TIMESTEPS = (10, 50, 100, 200, 400, 700, 900)


def crop_sets(per_photo: int) -> dict[str, torch.Tensor]:
    """The fixed 64x64 crops of each set, as one [N, 3, 64, 64] tensor in [-1, 1]."""
    sets = {"test": HELDOUT_PHOTOS, "validation": VALIDATION_PHOTOS}
    return {name: torch.stack([item.image for item in demo_crops(64, per_photo, photos)])
            for name, photos in sets.items()}


@torch.no_grad()
def eps_losses(checkpoint: Path, crops: torch.Tensor, timesteps=TIMESTEPS, seed: int = 0) -> np.ndarray:
    """[len(timesteps), N] per-crop eps MSE of the tiny prior at `checkpoint` (same noise for any checkpoint)."""
    prior = tiny_prior(checkpoint)
    diffusion = Diffusion(prior.betas)
    out = np.zeros((len(timesteps), len(crops)))
    for row, t in enumerate(timesteps):
        gen = torch.Generator().manual_seed(seed * 100_003 + t)
        noise = torch.randn(crops.shape, generator=gen)
        x_t = diffusion.q_sample(crops, t, noise)
        eps = prior.eps(x_t, torch.full((len(crops),), t, dtype=torch.long))
        out[row] = ((eps - noise) ** 2).flatten(1).mean(1).numpy()
    return out


def loss_rows(baseline: Path, candidate: Path, per_photo: int, timesteps=TIMESTEPS) -> list[dict]:
    """Mean eps loss of each prior per (crop set, t), and the paired difference with its standard error."""
    rows = []
    for name, crops in crop_sets(per_photo).items():
        base, cand = eps_losses(baseline, crops, timesteps), eps_losses(candidate, crops, timesteps)
        for k, t in enumerate(timesteps):
            diff = cand[k] - base[k]
            rows.append({"set": name, "t": t, "n_crops": len(crops), "baseline": base[k].mean(),
                         "candidate": cand[k].mean(), "diff": diff.mean(),
                         "diff_se": diff.std(ddof=1) / np.sqrt(len(diff))})
    return rows


def colour_stats(x: torch.Tensor) -> dict:
    """Mean chroma (max - min over RGB per pixel) and within-image std of images in [-1, 1]."""
    return {"chroma": float((x.amax(1) - x.amin(1)).mean()), "within_std": float(x.flatten(1).std(1).mean())}


def sample_rows(baseline: Path, candidate: Path, num: int, per_photo: int, out: Path,
                steps_list=("100", "1000")) -> list[dict]:
    """Colour statistics of each prior's DDPM samples (100 and 1000 steps) beside those of the crop sets;
    the sample grids are saved next to the table."""
    from dps_map.training.prior import ddpm_samples, save_grid

    rows = [{"source": f"crops: {name}", "steps": "", **colour_stats(crops)}
            for name, crops in crop_sets(per_photo).items()]
    for who, path in (("baseline", baseline), ("candidate", candidate)):
        prior = tiny_prior(path)
        for steps in steps_list:
            x = ddpm_samples(prior.model, prior.betas, num, 64, steps, seed=0)
            save_grid(x, out.parent / f"{out.name}_{who}_{steps}.png")
            rows.append({"source": who, "steps": steps, **colour_stats(x)})
    return rows


def restoration_rows(baseline: Path, candidate: Path, work: Path) -> list[dict]:
    from dps_map.runner import run

    rows = []
    data_sets = {"test": ["data=demo", f"data.per_photo={DEMO_PER_PHOTO}"],
                 "validation": ["data=demo", f"data.per_photo={DEMO_PER_PHOTO}",
                                f"+data.photos=[{','.join(VALIDATION_PHOTOS)}]"]}
    for set_name, data in data_sets.items():
        for task in DEMO_TASKS:
            for sampler in DEMO_SAMPLERS:
                row = {"set": set_name, "task": task, "sampler": sampler}
                for who, path in (("baseline", baseline), ("candidate", candidate)):
                    cfg = compose(f"task={task}", "prior=tiny", f"prior.checkpoint={path}",
                                          f"sampler={sampler}", *data, "metrics=fast", "progress=false",
                                          "measurement_batch=4")
                    start = time.perf_counter()
                    summary = run(cfg, work / set_name / task / sampler / who)
                    row[f"{who}_psnr"] = summary["metrics"]["psnr"]["mean"]
                    row[f"{who}_ssim"] = summary["metrics"]["ssim"]["mean"]
                    row[f"{who}_seconds"] = round(time.perf_counter() - start, 1)
                    row["naive_psnr"] = summary["naive"]["psnr"]["mean"]
                row["diff_psnr"] = row["candidate_psnr"] - row["baseline_psnr"]
                print(f"{set_name} {task} {sampler}: baseline {row['baseline_psnr']:.2f} dB, "
                      f"candidate {row['candidate_psnr']:.2f} dB, naive {row['naive_psnr']:.2f} dB", flush=True)
                rows.append(row)
    return rows


def markdown(loss: list[dict], samples: list[dict], restore: list[dict], baseline: Path, command: str,
             wall: float) -> str:
    lines = ["# Candidate tiny prior vs the shipped one", "",
             f"Measured by `{command}` ({wall / 60:.1f} min, CPU). Baseline: `{baseline}`.", "",
             "## Eps loss at fixed t (per pixel; same crops and noise for both; diff = candidate - baseline)", "",
             "| set | t | crops | baseline | candidate | diff +- se |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['set']} | {r['t']} | {r['n_crops']} | {r['baseline']:.4f} | {r['candidate']:.4f} | "
              f"{r['diff']:+.4f} +- {r['diff_se']:.4f} |" for r in loss]
    if samples:
        lines += ["", "## Sample colour statistics (DDPM, seed 0; grids beside this file)", "",
                  "| source | steps | chroma | within-image std |", "|---|---|---|---|"]
        lines += [f"| {r['source']} | {r['steps']} | {r['chroma']:.3f} | {r['within_std']:.3f} |" for r in samples]
    if restore:
        lines += ["", "## Restoration PSNR (dB) at today's tuned step sizes", "",
                  "| set | task | sampler | baseline | candidate | diff | naive |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['set']} | {r['task']} | {r['sampler']} | {r['baseline_psnr']:.2f} | {r['candidate_psnr']:.2f} "
                  f"| {r['diff_psnr']:+.2f} | {r['naive_psnr']:.2f} |" for r in restore]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate", type=Path, required=True, help="the retrained tiny_prior.pt")
    parser.add_argument("--baseline", type=Path, default=SHIPPED, help="default: the shipped tiny_prior.pt")
    parser.add_argument("--per-photo", type=int, default=8, help="crops per photograph for the eps loss")
    parser.add_argument("--samples", type=int, default=8, help="DDPM samples per prior for the colour "
                        "statistics (0: none; 8 take ~4 min per prior on one core, mostly the 1000-step chain)")
    parser.add_argument("--restore", action="store_true", help="also run DPS/DMAP on the demo tasks (~15 min)")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "compare_priors")
    parser.add_argument("--out", type=Path, default=RESULTS / "prior_comparison")
    args = parser.parse_args(argv)
    for path in (args.candidate, args.baseline):
        if not path.is_file():
            parser.error(f"no such checkpoint: {path}")
    torch.set_num_threads(1)
    start = time.perf_counter()
    loss = loss_rows(args.baseline, args.candidate, args.per_photo)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    samples = sample_rows(args.baseline, args.candidate, args.samples, args.per_photo, args.out) if args.samples else []
    restore = restoration_rows(args.baseline, args.candidate, args.work) if args.restore else []
    wall = time.perf_counter() - start
    write_csv(loss, args.out.with_suffix(".csv"))
    if restore:
        write_csv(restore, args.out.parent / (args.out.name + "_restoration.csv"))
    command = " ".join(["python -m tools.compare_priors", *(argv if argv is not None else sys.argv[1:])])
    text = markdown(loss, samples, restore, args.baseline, command, wall)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
