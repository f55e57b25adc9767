"""Follow-up measurements on the shipped tiny prior, each a result with its command.

    python -m experiments.tiny_studies deblur   [--old-prior PATH] [--per-photo 8]   # -> deblur_priors.*
    python -m experiments.tiny_studies adapter  [--per-photo 16]                     # -> adapter_sr.*
    python -m experiments.tiny_studies ccdf     [--starts 0.2 0.4 1]                 # -> ccdf_tiny.*
    python -m experiments.tiny_studies clipping [--num 16] [--old-prior PATH]        # -> sample_clipping.*
    python -m experiments.tiny_studies demo     [--old-prior PATH]                   # -> demo_tiny.*
    python -m experiments.tiny_studies reference --candidate PATH                    # -> reference_comparison.*

- `deblur`: DMAP and DPS on Gaussian deblurring (50 steps, the tuned zeta, which is 10 for both priors and
  both samplers) with the shipped 10k-step prior and the earlier 2200-step prior (its weights from git:
  `git show dce69f7^:dps_map/assets/tiny_prior.pt`), on test crops (the held-out chelsea/coffee) and
  validation crops (astronaut, rocket, motorcycle_left), `--per-photo` each; per crop the same measurement
  and seed for both priors, so the difference is paired (mean ± standard error over crops, crops where
  the shipped prior wins).
- `adapter`: SR x4 on `--per-photo` test crops per held-out photograph: dmap vs adapter_dmap and dps vs
  adapter_dps (the shipped adapter sr4_tiny.pt), paired per crop.
- `ccdf`: shortened chains (`sampler.start`, CCDF) on SR x4, the 8 held-out crops, samplers alone (no
  guidance): the prior (ddpm), the adapter, and the reference conditional model
  (`prior=tiny_sr4_reference`), at each start; start 1 is the full chain from noise (for the prior alone:
  unconditional samples).
- `clipping`: unconditional DDPM samples of the shipped prior with x0_hat clipped to [-1, 1] at every step
  (the default, `sampler.clip_x0=true`), never, and only below t = `--clip-below` (no clipping at high
  noise), at 100 and 1000 steps; per-channel mean and standard deviation, chroma (max - min over RGB),
  within-image std and the fraction of saturated values (|x| > 0.95), beside crops of the photographs
  (test, validation, all training photographs). A grid of the samples goes beside the table.
- `reference --candidate PATH`: a retrained tiny SR x4 reference conditional model against the shipped
  dps_map/assets/tiny_sr4_reference.pt: the error of its denoised estimate x0_hat(x_t, y) by t on 16 held-out
  crops x 8 states, the same states for both (paired); the score study trusts a reference where its x0 error
  is below the other models' (experiments/results/README.md).
- `demo`: the runs `make demo` makes (4 held-out crops, DPS and DMAP on its three tasks), with the shipped
  prior at today's tuned step sizes and the earlier prior at its own: the demo table of docs/tiny-prior.md.

Every run goes through the runner (dps_map.runner.run) except `clipping` (the package's DDPMSampler on the prior,
as dps_map.train_prior.ddpm_samples draws them); runs are kept and resumed in --work. Results in experiments/results/.
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SHIPPED_PRIOR = ROOT / "dps_map" / "assets" / "tiny_prior.pt"
OLD_PRIOR = ROOT / "outputs" / "old_prior" / "tiny_prior_2200.pt"  # git show dce69f7^:dps_map/assets/tiny_prior.pt
VALIDATION = ("astronaut", "rocket", "motorcycle_left")


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()


def header(title: str, command: str, seconds: float, extra: str = "") -> list[str]:
    return [f"# {title}", "",
            f"`{command}` at commit {commit()}: {seconds / 60:.1f} min wall on a {os.cpu_count()}-core "
            f"{'machine with a GPU' if torch.cuda.is_available() else 'CPU'} (measured; 1-min load average at the "
            f"end {os.getloadavg()[0]:.1f}; the provenance record beside this file has the assets' sha256). "
            + extra, ""]


def sha(path: Path) -> str:
    from dps_map.io import sha256_file

    return sha256_file(path)


# -- runs through the runner ------------------------------------------------------------------------------
def run_one(overrides: list[str], work: Path) -> dict:
    """One configuration through the runner; its per-crop records {id: record} and the summary."""
    from dps_map.io import read_jsonl
    from dps_map.runner import run

    cfg = compose(*overrides + ["num_samples=1", "metrics=fast", "progress=false"])
    started = time.perf_counter()
    summary = run(cfg, work)
    records = {r["id"]: r for r in read_jsonl(work / "metrics.jsonl")}
    zeta = cfg.sampler.get("zeta", cfg.sampler.get("w"))
    return {"records": records, "summary": summary, "wall_s": time.perf_counter() - started,
            "step_size": None if zeta is None else float(zeta), "steps": cfg.sampler.respacing}


def _job(overrides, work):
    r = run_one(list(overrides), Path(work))
    print(f"{work}: PSNR {r['summary']['metrics']['psnr']['mean']:.2f} ({r['wall_s']:.0f} s)", flush=True)
    return r


def run_all(jobs: dict, workers: int) -> dict:
    """{key: (overrides, work)} -> {key: run_one result}, in parallel single-threaded processes if workers > 1."""
    from experiments.common import run_parallel

    keys = list(jobs)
    out = run_parallel(_job, [jobs[k] for k in keys], workers)
    return dict(zip(keys, out))


def paired(a: dict, b: dict, key: str = "psnr") -> dict:
    """Mean of a - b over the crops both have, its standard error, and the crops where a > b."""
    ids = sorted(set(a) & set(b))
    d = np.array([a[i][key] - b[i][key] for i in ids if a[i].get(key) is not None and b[i].get(key) is not None])
    sem = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"n": len(d), "diff": float(d.mean()), "sem": sem, "wins": int((d > 0).sum())}


def mean_sem(records: dict, key: str = "psnr") -> tuple[float, float]:
    v = np.array([r[key] for r in records.values() if r.get(key) is not None])
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def data_overrides(set_name: str, per_photo: int) -> list[str]:
    over = ["data=demo", f"data.per_photo={per_photo}"]
    return over + ([f"+data.photos=[{','.join(VALIDATION)}]"] if set_name == "validation" else [])


# -- deblur: the shipped prior vs the earlier one, test vs validation --------------------------------------
def deblur(args) -> tuple[list[dict], list[str]]:
    priors = {"shipped": SHIPPED_PRIOR, "old": args.old_prior}
    jobs = {}
    for set_name in ("test", "validation"):
        for sampler in args.samplers:
            for who, path in priors.items():
                over = ["task=gaussian_deblur", "prior=tiny", f"prior.checkpoint={path}", f"sampler={sampler}",
                        f"seed={args.seed}", "measurement_batch=4", *data_overrides(set_name, args.per_photo)]
                jobs[(set_name, sampler, who)] = (over, str(args.work / "deblur" / set_name / sampler / who))
    res = run_all(jobs, args.workers)
    rows, lines = [], []
    for set_name in ("test", "validation"):
        for sampler in args.samplers:
            new, old = res[(set_name, sampler, "shipped")], res[(set_name, sampler, "old")]
            p = paired(new["records"], old["records"])
            m_new, s_new = mean_sem(new["records"])
            m_old, s_old = mean_sem(old["records"])
            m_naive, _ = mean_sem(new["records"], "naive_psnr")
            rows.append({"set": set_name, "sampler": sampler, "zeta_shipped": new["step_size"],
                         "zeta_old": old["step_size"], "n_crops": p["n"], "psnr_shipped": m_new,
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
    # per crop, for the record
    lines += ["", "Per crop, PSNR (dB) shipped / earlier:", ""]
    for set_name in ("test", "validation"):
        for sampler in args.samplers:
            new, old = res[(set_name, sampler, "shipped")]["records"], res[(set_name, sampler, "old")]["records"]
            lines.append(f"- {set_name} {sampler}: " + ", ".join(
                f"{i} {new[i]['psnr']:.2f}/{old[i]['psnr']:.2f}" for i in sorted(new) if i in old))
    extra = (f"Gaussian deblurring, 50 steps, one sample per crop, seed {args.seed}, the same measurement and "
             f"noise for both priors. Shipped prior sha256 {sha(SHIPPED_PRIOR)[:12]}; earlier prior "
             f"`{args.old_prior.name}` sha256 {sha(args.old_prior)[:12]} (git show dce69f7^:dps_map/assets/"
             f"tiny_prior.pt). Test: {args.per_photo} crops of each held-out photograph (chelsea, coffee); "
             f"validation: {args.per_photo} of each of {', '.join(VALIDATION)}. PSNR in dB, mean ± standard error.")
    return rows, ("DMAP/DPS deblurring: shipped vs earlier tiny prior, test vs validation crops", extra, lines)


# -- adapter: adapter_dmap vs dmap on SR x4 -----------------------------------------------------------------
def adapter(args) -> tuple[list[dict], tuple]:
    pairs = (("adapter_dmap", "dmap"), ("adapter_dps", "dps"))
    jobs = {}
    for a, b in pairs:
        for sampler in (a, b):
            over = ["task=sr4", "prior=tiny", f"sampler={sampler}", f"seed={args.seed}", "measurement_batch=1",
                    *data_overrides("test", args.per_photo)]
            jobs[sampler] = (over, str(args.work / "adapter" / sampler))
    res = run_all(jobs, args.workers)
    rows = []
    for sampler, r in res.items():
        m, s = mean_sem(r["records"])
        rows.append({"sampler": sampler, "zeta": r["step_size"], "n_crops": len(r["records"]), "psnr": m, "psnr_sem": s,
                     "ssim": mean_sem(r["records"], "ssim")[0], "naive_psnr": mean_sem(r["records"], "naive_psnr")[0]})
    lines = ["| sampler | zeta | n | PSNR | SSIM | bicubic PSNR |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['sampler']} | {r['zeta']:g} | {r['n_crops']} | {r['psnr']:.2f} ± {r['psnr_sem']:.2f} | "
              f"{r['ssim']:.3f} | {r['naive_psnr']:.2f} |" for r in rows]
    lines += ["", "| comparison | n | PSNR difference (paired) | crops where the adapter is better | SSIM difference |",
              "|---|---|---|---|---|"]
    for a, b in pairs:
        p, q = paired(res[a]["records"], res[b]["records"]), paired(res[a]["records"], res[b]["records"], "ssim")
        rows.append({"sampler": f"{a} - {b}", "n_crops": p["n"], "psnr": p["diff"], "psnr_sem": p["sem"],
                     "wins": p["wins"], "ssim": q["diff"]})
        lines.append(f"| {a} − {b} | {p['n']} | {p['diff']:+.2f} ± {p['sem']:.2f} | {p['wins']} of {p['n']} | "
                     f"{q['diff']:+.4f} ± {q['sem']:.4f} |")
    extra = (f"SR x4 (sigma_y 0.05), 50 steps, one sample per crop, seed {args.seed}; {args.per_photo} crops of each "
             f"held-out photograph (chelsea, coffee); the shipped prior (sha256 {sha(SHIPPED_PRIOR)[:12]}) and "
             f"adapter dps_map/assets/adapters/sr4_tiny.pt (sha256 "
             f"{sha(ROOT / 'dps_map/assets/adapters/sr4_tiny.pt')[:12]}); step sizes from conf/tuned/. "
             "PSNR in dB, mean ± standard error over crops; differences paired per crop (same measurement and seed).")
    return rows, ("adapter_dmap vs dmap (and adapter_dps vs dps) on SR x4, more crops", extra, lines)


# -- ccdf: shortened chains ---------------------------------------------------------------------------------
def ccdf(args) -> tuple[list[dict], tuple]:
    models = {"prior (ddpm)": ["prior=tiny", "sampler=ddpm"], "adapter": ["prior=tiny", "sampler=adapter"],
              "reference (tiny_sr4_reference, ddpm)": ["prior=tiny_sr4_reference", "sampler=ddpm"]}
    jobs = {}
    for name, over in models.items():
        for start in args.starts:
            o = ["task=sr4", *over, f"seed={args.seed}", "measurement_batch=1", *data_overrides("test", args.per_photo)]
            o += [f"+sampler.start={start}"] if start < 1 else []
            key = (name, start)
            jobs[key] = (o, str(args.work / "ccdf" / over[1].split("=")[1] / over[0].split("=")[1] / f"start{start:g}"))
    res = run_all(jobs, args.workers)
    rows = []
    for (name, start), r in res.items():
        m, s = mean_sem(r["records"])
        rows.append({"model": name, "start": start, "n_crops": len(r["records"]), "psnr": m, "psnr_sem": s,
                     "ssim": mean_sem(r["records"], "ssim")[0], "naive_psnr": mean_sem(r["records"], "naive_psnr")[0],
                     "steps_run": r["summary"]["cost"].get("forward_per_sample")})
    lines = ["| sampler alone | " + " | ".join(f"start {s:g}" for s in args.starts) + " |",
             "|---" * (len(args.starts) + 1) + "|"]
    for name in models:
        cells = []
        for start in args.starts:
            r = next(x for x in rows if x["model"] == name and x["start"] == start)
            cells.append(f"{r['psnr']:.2f} ± {r['psnr_sem']:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Bicubic (the naive estimate the shortened chains start from): {rows[0]['naive_psnr']:.2f} dB. "
              "Network forwards per sample: " + ", ".join(f"start {r['start']:g} {r['steps_run']:.0f}"
                                                          for r in rows if r["model"] == "prior (ddpm)") + "."]
    extra = (f"SR x4 (sigma_y 0.05), {2 * args.per_photo} held-out crops (chelsea, coffee), one sample each, seed "
             f"{args.seed}, 50-step chains; `+sampler.start=s` runs the last s of the chain from the bicubic estimate "
             "diffused there (CCDF); start 1 is the whole chain from noise. No guidance: the samplers alone. "
             f"Shipped prior sha256 {sha(SHIPPED_PRIOR)[:12]}, adapter sr4_tiny.pt, reference tiny_sr4_reference.pt "
             "(sha256 in the provenance record). PSNR in dB, mean ± standard error over crops.")
    return rows, ("Shortened chains (CCDF) on SR x4, samplers alone", extra, lines)


# -- clipping: unconditional samples with and without x0 clipping ---------------------------------------------
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


class _ClipBelow:
    """A DDPM sampler clipping x0_hat only for t < t_max (no clipping at high noise)."""

    @staticmethod
    def make(respacing: str, t_max: int):
        from dps_map.samplers import DDPMSampler

        class ClipBelow(DDPMSampler):
            def _clip(self, prior, x0):  # called from step(); self._t is set just before
                return x0.clamp(-1, 1) if self._t < t_max else x0

            def step(self, prior, diffusion, operator, noise, y, x, i, generator):
                self._t = int(diffusion.timesteps[i])
                return super().step(prior, diffusion, operator, noise, y, x, i, generator)

        return ClipBelow(respacing=respacing, variance="fixed_small", clip_x0=True)


def samples(checkpoint: Path, num: int, steps: str, mode: str, clip_below: int, seed: int = 0) -> torch.Tensor:
    from dps_map.priors.adm import ADMPrior
    from dps_map.samplers import DDPMSampler
    from experiments.common import tiny_prior

    prior = tiny_prior(checkpoint)
    if mode == "below":
        sampler = _ClipBelow.make(steps, clip_below)
    else:
        sampler = DDPMSampler(respacing=steps, variance="fixed_small", clip_x0=(mode == "always"))
    p = ADMPrior(prior.model, prior.betas, learn_sigma=False)
    with torch.no_grad():
        x = sampler.sample(p, None, None, None, (num, 3, 64, 64), torch.Generator().manual_seed(seed))
    return x.clamp(-1, 1)


def _sample_job(checkpoint, num, steps, mode, clip_below, path):
    torch.set_num_threads(1)
    path = Path(path)
    if path.is_file():  # resume
        return torch.load(path, weights_only=True)
    t0 = time.perf_counter()
    x = samples(Path(checkpoint), num, steps, mode, clip_below)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(x, path)
    print(f"{path}: {time.perf_counter() - t0:.0f} s", flush=True)
    return x


def clipping(args) -> tuple[list[dict], tuple]:
    from dps_map.data import HELDOUT_PHOTOS, TRAIN_PHOTOS, demo_crops
    from experiments.common import pyplot, run_parallel, save_figure

    modes = {"always": "x0 clipped at every step (default)", "never": "never clipped",
             "below": f"clipped only for t < {args.clip_below}"}
    priors = {"shipped": SHIPPED_PRIOR} | ({"old": args.old_prior} if args.old_prior else {})
    jobs = []
    for who, ckpt in priors.items():
        for steps in args.steps:
            for mode in modes:
                if who == "old" and (mode == "below" or steps != args.steps[-1]):
                    continue  # the earlier prior: context only (default vs never, at the longest chain)
                jobs.append((who, steps, mode, str(ckpt)))
    xs = run_parallel(_sample_job, [(ckpt, args.num, steps, mode, args.clip_below,
                                     str(args.work / "clipping" / f"{who}_{steps}_{mode}.pt"))
                                    for who, steps, mode, ckpt in jobs], args.workers)
    rows = []
    crops = {"test photographs (chelsea, coffee)": HELDOUT_PHOTOS, "validation photographs": VALIDATION,
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
             f"sampler; the final sample clamped to [-1, 1]) of the shipped prior (sha256 {sha(SHIPPED_PRIOR)[:12]})"
             + (f" and the earlier 2200-step prior (sha256 {sha(args.old_prior)[:12]})" if args.old_prior else "")
             + f"; crops: {args.crop_per_photo} per photograph, 64x64. Values in [-1, 1] units; chroma = per-pixel "
             "max - min over RGB; std R/G/B over all pixels of all images. Grid: sample_clipping.png (first 12 "
             "samples of each row).")
    return rows, ("Unconditional samples with and without x0 clipping, against photographs", extra, lines)


# -- demo: what `make demo` prints, the shipped prior and the earlier one each at its own tuned step sizes -----
#: the earlier prior's tuned zeta (git show dce69f7^:conf/tuned/default.yaml)
OLD_ZETA = {("sr4", "dps"): 10.0, ("sr4", "dmap"): 3.0, ("inpaint_box", "dps"): 10.0, ("inpaint_box", "dmap"): 3.0,
            ("gaussian_deblur", "dps"): 10.0, ("gaussian_deblur", "dmap"): 10.0}


def demo(args) -> tuple[list[dict], tuple]:
    from dps_map.config.demo import DEMO_PER_PHOTO, DEMO_SAMPLERS, DEMO_TASKS

    jobs = {}
    for task in DEMO_TASKS:
        for sampler in DEMO_SAMPLERS:
            base = [f"task={task}", "prior=tiny", f"sampler={sampler}", "data=demo", f"data.per_photo={DEMO_PER_PHOTO}"]
            jobs[(task, sampler, "shipped")] = (base, str(args.work / "demo" / "shipped" / task / sampler))
            jobs[(task, sampler, "old")] = (base + [f"prior.checkpoint={args.old_prior}",
                                                    f"sampler.zeta={OLD_ZETA[(task, sampler)]}"],
                                            str(args.work / "demo" / "old" / task / sampler))
    res = run_all(jobs, args.workers)
    rows = []
    for (task, sampler, who), r in res.items():
        m, s = mean_sem(r["records"])
        rows.append({"task": task, "sampler": sampler, "prior": who, "zeta": r["step_size"], "n_crops": len(r["records"]),
                     "psnr": m, "psnr_sem": s, "ssim": mean_sem(r["records"], "ssim")[0],
                     "naive_psnr": mean_sem(r["records"], "naive_psnr")[0]})
    get = lambda t, s, w: next(r for r in rows if (r["task"], r["sampler"], r["prior"]) == (t, s, w))  # noqa: E731
    lines = ["| task | DPS (earlier prior) | DMAP (earlier prior) | naive |", "|---|---|---|---|"]
    for task in DEMO_TASKS:
        cells = [f"{get(task, s, 'shipped')['psnr']:.2f} ({get(task, s, 'old')['psnr']:.2f})" for s in DEMO_SAMPLERS]
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {get(task, 'dps', 'shipped')['naive_psnr']:.2f} |")
    lines += ["", "| task | sampler | prior | zeta | n | PSNR | SSIM |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['sampler']} | {r['prior']} | {r['zeta']:g} | {r['n_crops']} | {r['psnr']:.2f} ± "
              f"{r['psnr_sem']:.2f} | {r['ssim']:.3f} |" for r in rows]
    extra = ("The runs `make demo` makes (python -m dps_map.demo: data=demo data.per_photo=2, i.e. 4 held-out crops, "
             "50 steps, one sample each, seed 0), with the shipped prior (sha256 "
             f"{sha(SHIPPED_PRIOR)[:12]}) at today's tuned step sizes and with the earlier 2200-step prior (sha256 "
             f"{sha(args.old_prior)[:12]}) at its own (dce69f7^:conf/tuned/default.yaml: SR x4 DPS 10 / DMAP 3, box "
             "inpainting DPS 10 / DMAP 3, Gaussian deblurring 10 / 10). PSNR in dB.")
    return rows, ("What make demo prints: the shipped prior and the earlier one (PSNR, dB)", extra, lines)


# -- reference: a retrained tiny SR x4 reference against the shipped one (x0 error by t) -------------------------
SHIPPED_REFERENCE = ROOT / "dps_map" / "assets" / "tiny_sr4_reference.pt"


@torch.no_grad()
def reference(args) -> tuple[list[dict], tuple]:
    """E||x0_hat(x_t, y) - x0||^2/d of each reference (clipped to [-1, 1], as score_diagnostics tiny) on the
    held-out crops, at the t of score_diagnostics tiny, on the same states (x_t, y) for both: paired."""
    from dps_map.config import resolve_device
    from dps_map.config.targets import build_noise, build_prior, build_sampler
    from dps_map.runner import load_items, measure
    from experiments.score_common import step_indices

    if args.candidate is None or not args.candidate.is_file():
        raise SystemExit(f"reference: --candidate {args.candidate}: no such file")
    cfg = compose("task=sr4", "sampler=dps", "prior=tiny", "data=demo", f"data.per_photo={args.per_photo}",
                          "+prior@reference=tiny_sr4_reference")
    device = resolve_device("cpu")
    prior = build_prior(cfg.prior, device)  # the chain's diffusion (50 steps), as score_diagnostics tiny
    diffusion = build_sampler(cfg.sampler).diffusion(prior)
    noise = build_noise(cfg.task)
    refs = {}
    for who, path in (("shipped", SHIPPED_REFERENCE), ("candidate", args.candidate)):
        rcfg = cfg.reference.copy()
        rcfg.checkpoint = str(path)
        refs[who] = build_prior(rcfg, device)
    err: dict = {}
    naive = []
    for item in load_items(cfg.data, prior.image_size):
        gen, operator, x0, y = measure(cfg, item, prior.image_size, noise, device)
        naive.append(float((operator.naive(y) - x0).pow(2).mean()))
        x0s = x0.expand(args.num, -1, -1, -1)
        bound = {who: m.condition(operator, y) for who, m in refs.items()}
        for i in step_indices(diffusion.num_steps, 12):
            x_t = diffusion.q_sample(x0s, i, torch.randn(x0s.shape, generator=gen, device=device))
            t = int(diffusion.timesteps[i])
            for who, m in bound.items():
                eps = m.predict(x_t, diffusion.model_t(i, args.num))[0]
                x0_hat = diffusion.x0_from_eps(x_t, i, eps).clamp(-1, 1)
                err.setdefault((t, who), []).append(float((x0_hat - x0s).pow(2).mean()))
    rows = []
    for t in sorted({t for t, _ in err}):
        a, b = np.array(err[(t, "candidate")]), np.array(err[(t, "shipped")])
        d = a - b
        rows.append({"t": t, "n_crops": len(d), "shipped": b.mean(), "candidate": a.mean(), "diff": d.mean(),
                     "diff_sem": d.std(ddof=1) / np.sqrt(len(d)), "candidate_better": int((d < 0).sum()),
                     "naive": float(np.mean(naive))})
    lines = ["| t | crops | shipped reference | candidate | candidate − shipped (paired) | crops where the candidate "
             "is better | bicubic |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['t']} | {r['n_crops']} | {r['shipped']:.4g} | {r['candidate']:.4g} | {r['diff']:+.3g} ± "
              f"{r['diff_sem']:.2g} | {r['candidate_better']} of {r['n_crops']} | {r['naive']:.3g} |" for r in rows]
    extra = (f"E||x0_hat(x_t, y) - x0||^2/d (x0_hat clipped to [-1, 1]) of the shipped tiny SR x4 reference (sha256 "
             f"{sha(SHIPPED_REFERENCE)[:12]}) and of `{args.candidate}` (sha256 {sha(args.candidate)[:12]}), on "
             f"{2 * args.per_photo} held-out crops x {args.num} states per t (the t of score_diagnostics tiny), the "
             "same (y, x_t) for both (seeded as the runner seeds them): the differences are paired; mean over crops "
             "± standard error. Lower is better.")
    return rows, ("A retrained tiny SR x4 reference vs the shipped one: x0 error by t", extra, lines)


STUDIES = {"reference": ("reference_comparison", reference), "demo": ("demo_tiny", demo), "deblur": ("deblur_priors", deblur), "adapter": ("adapter_sr", adapter), "ccdf": ("ccdf_tiny", ccdf),
           "clipping": ("sample_clipping", clipping)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument("--per-photo", type=int, default=None, help="crops per photograph (deblur 8, adapter 16, "
                        "ccdf 4)")
    parser.add_argument("--samplers", nargs="+", default=["dmap", "dps"], help="deblur: samplers")
    parser.add_argument("--old-prior", type=Path, default=None, help="the earlier prior's weights (deblur: default "
                        f"{OLD_PRIOR.relative_to(ROOT)})")
    parser.add_argument("--starts", type=float, nargs="+", default=[0.2, 0.4, 1.0], help="ccdf: sampler.start values")
    parser.add_argument("--num", type=int, default=16, help="clipping: samples per setting")
    parser.add_argument("--steps", nargs="+", default=["100", "1000"], help="clipping: chain lengths")
    parser.add_argument("--clip-below", type=int, default=500, help="clipping: clip x0 only below this t")
    parser.add_argument("--crop-per-photo", type=int, default=8, help="clipping: photograph crops per photo")
    parser.add_argument("--candidate", type=Path, default=None, help="reference: the retrained reference's weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="parallel single-threaded runs")
    parser.add_argument("--work", type=Path, default=Path("outputs/tiny_studies"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.per_photo = args.per_photo or {"deblur": 8, "adapter": 16, "ccdf": 4, "reference": 8}.get(args.study, 4)
    if args.study == "reference" and args.num == 16:
        args.num = 8  # states per t and crop, as score_diagnostics tiny
    if args.study in ("deblur", "demo") and args.old_prior is None:
        args.old_prior = OLD_PRIOR
    if args.old_prior is not None and not args.old_prior.is_file():
        parser.error(f"--old-prior {args.old_prior}: no such file (git show dce69f7^:dps_map/assets/tiny_prior.pt > it)")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stem, fn = STUDIES[args.study]
    rows, (title, extra, lines) = fn(args)
    from experiments.common import write_csv

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / f"{stem}.csv")
    command = ("python -m experiments.tiny_studies " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    text = "\n".join(header(title, command, time.perf_counter() - started, extra) + lines) + "\n"
    (args.out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
