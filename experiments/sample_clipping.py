"""Unconditional DDPM samples of the shipped tiny prior with and without x0 clipping, against photograph crops.

    python -m experiments.sample_clipping [--num 16] [--steps 100 1000] [--old-prior PATH]

x0_hat clipped to [-1, 1] at every step (the default, `sampler.clip_x0=true`), never, and only below t =
`--clip-below` (no clipping at high noise), at each chain length of `--steps`: per-channel mean and standard
deviation, chroma (max - min over RGB), within-image std and the fraction of saturated values (|x| > 0.95), beside
crops of the photographs (test, validation, all training photographs). With `--old-prior` (the earlier 2200-step
prior's weights; docs/tiny-prior.md says how to get them), that prior's samples at the longest chain, clipped and
not, for context. The samples are drawn here with the package's DDPMSampler (as dps_map.train_prior draws them),
not through the runner, one setting after another, and kept in --work. Writes
experiments/results/sample_clipping.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dps_map.io import sha256_file
from experiments.common import VALIDATION_PHOTOS, pyplot, save_figure, tiny_prior, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SHIPPED_PRIOR = ROOT / "dps_map" / "assets" / "tiny_prior.pt"


def colour_stats(x: torch.Tensor) -> dict:
    """Per-channel mean/std, chroma, within-image std and saturated fraction of images in [-1, 1]."""
    out = {}
    for c, name in enumerate("RGB"):
        out[f"mean_{name}"] = float(x[:, c].mean())
        out[f"std_{name}"] = float(x[:, c].std())
    out["chroma"] = float((x.amax(1) - x.amin(1)).mean())
    out["within_std"] = float(x.flatten(1).std(1).mean())
    out["saturated"] = float((x.abs() > 0.95).float().mean())
    return out


def clip_below_sampler(respacing: str, t_max: int):
    """A DDPM sampler clipping x0_hat only for t < t_max (no clipping at high noise)."""
    from dps_map.samplers import DDPMSampler

    class ClipBelow(DDPMSampler):
        def _clip(self, prior, x0):  # called from step(); self._t is set just before
            return x0.clamp(-1, 1) if self._t < t_max else x0

        def step(self, prior, diffusion, operator, noise, y, x, i, generator):
            self._t = int(diffusion.timesteps[i])
            return super().step(prior, diffusion, operator, noise, y, x, i, generator)

    return ClipBelow(respacing=respacing, variance="fixed_small", clip_x0=True)


def samples(checkpoint: Path, num: int, steps: str, mode: str, clip_below: int, seed: int = 0) -> torch.Tensor:
    """`num` unconditional samples of the tiny prior at `checkpoint`, x0 clipped per `mode` (always, never, below)."""
    from dps_map.priors.adm import ADMPrior
    from dps_map.samplers import DDPMSampler

    prior = tiny_prior(checkpoint)
    if mode == "below":
        sampler = clip_below_sampler(steps, clip_below)
    else:
        sampler = DDPMSampler(respacing=steps, variance="fixed_small", clip_x0=(mode == "always"))
    p = ADMPrior(prior.model, prior.betas, learn_sigma=False)
    with torch.no_grad():
        x = sampler.sample(p, None, None, None, (num, 3, 64, 64), torch.Generator().manual_seed(seed))
    return x.clamp(-1, 1)


def kept_samples(path: Path, *args) -> torch.Tensor:
    """samples(*args), read back from `path` if an earlier run saved them there."""
    if path.is_file():
        return torch.load(path, weights_only=True)
    t0 = time.perf_counter()
    x = samples(*args)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(x, path)
    print(f"{path}: {time.perf_counter() - t0:.0f} s", flush=True)
    return x


def clipping(args) -> tuple[list[dict], str, list[str]]:
    """The samples, their rows, the header's note and the table; the figure beside them."""
    from dps_map.data import HELDOUT_PHOTOS, TRAIN_PHOTOS, demo_crops

    modes = {"always": "x0 clipped at every step (default)", "never": "never clipped",
             "below": f"clipped only for t < {args.clip_below}"}
    priors = {"shipped": SHIPPED_PRIOR} | ({"old": args.old_prior} if args.old_prior else {})
    jobs = []
    for who, ckpt in priors.items():
        for steps in args.steps:
            for mode in modes:
                if who == "old" and (mode == "below" or steps != args.steps[-1]):
                    continue  # the earlier prior: context only (default vs never, at the longest chain)
                jobs.append((who, steps, mode, ckpt))
    xs = [kept_samples(args.work / f"{who}_{steps}_{mode}.pt", ckpt, args.num, steps, mode, args.clip_below)
          for who, steps, mode, ckpt in jobs]
    rows = []
    crops = {"test photographs (chelsea, coffee)": HELDOUT_PHOTOS, "validation photographs": VALIDATION_PHOTOS,
             "all training photographs": TRAIN_PHOTOS}
    for name, photos in crops.items():
        x = torch.stack([item.image for item in demo_crops(64, args.crop_per_photo, photos)])
        rows.append({"source": f"crops: {name}", "steps": "", "n": len(x), **colour_stats(x)})
    for (who, steps, mode, _), x in zip(jobs, xs):
        label = ("shipped prior" if who == "shipped" else "earlier 2200-step prior") + f": {modes[mode]}"
        rows.append({"source": label, "steps": steps, "n": len(x), **colour_stats(x)})
    lines = ["| source | steps | n | mean R / G / B | std R / G / B | chroma | within-image std | saturated (abs > 0.95) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['source']} | {r['steps']} | {r['n']} | {r['mean_R']:.3f} / {r['mean_G']:.3f} / "
                     f"{r['mean_B']:.3f} | {r['std_R']:.3f} / {r['std_G']:.3f} / {r['std_B']:.3f} | {r['chroma']:.3f} | "
                     f"{r['within_std']:.3f} | {r['saturated']:.3f} |")
    plt = pyplot()
    fig, axes = plt.subplots(len(jobs), 1, figsize=(10, 1.5 * len(jobs)), squeeze=False)
    for ax, (who, steps, mode, _), x in zip(axes[:, 0], jobs, xs):
        k = min(len(x), 12)
        strip = torch.cat(list(((x[:k] + 1) / 2).clamp(0, 1)), dim=2).permute(1, 2, 0).numpy()
        ax.imshow(strip)
        ax.set_axis_off()
        ax.set_title(f"{'shipped' if who == 'shipped' else 'earlier'} prior, {steps} steps: {modes[mode]}", fontsize=8)
    save_figure(fig, args.out / "sample_clipping.png", "Unconditional DDPM samples of the tiny prior")
    extra = (f"{args.num} unconditional DDPM samples per row (seed 0, fixed-small variance, the package's DDPM "
             f"sampler; the final sample clamped to [-1, 1]) of the shipped prior (sha256 "
             f"{sha256_file(SHIPPED_PRIOR)[:12]})"
             + (f" and the earlier 2200-step prior (sha256 {sha256_file(args.old_prior)[:12]})" if args.old_prior else "")
             + f"; crops: {args.crop_per_photo} per photograph, 64x64. Values in [-1, 1] units; chroma = per-pixel "
             "max - min over RGB; std R/G/B over all pixels of all images. Grid: sample_clipping.png (first 12 "
             "samples of each row).")
    return rows, extra, lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=16, help="samples per setting")
    parser.add_argument("--steps", nargs="+", default=["100", "1000"], help="chain lengths")
    parser.add_argument("--clip-below", type=int, default=500, help="clip x0 only below this t")
    parser.add_argument("--crop-per-photo", type=int, default=8, help="photograph crops per photograph")
    parser.add_argument("--old-prior", type=Path, default=None, help="the earlier 2200-step prior's weights "
                        "(optional: its samples for context)")
    parser.add_argument("--work", type=Path, default=Path("outputs/sample_clipping"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.old_prior is not None and not args.old_prior.is_file():
        raise SystemExit(f"error: --old-prior {args.old_prior}: no such file (the earlier 2200-step prior's weights; "
                         "docs/tiny-prior.md says how to get them)")
    torch.set_num_threads(1)  # as the committed result was measured: DDPM samples depend on the thread count
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, extra, lines = clipping(args)
    title = "Unconditional samples with and without x0 clipping, against photographs"
    write_result(args.out, "sample_clipping", "experiments.sample_clipping", argv, title, started, rows, extra, lines)


if __name__ == "__main__":
    main()
