"""Paper observations 1 (score error) and 2 (score mean) vs diffusion time, on the exact Gaussian-mixture
benchmark (task=gmm_linear) and at image scale (SR x4: prior=tiny on a CPU, adm512 on a GPU).

    python -m experiments.score_diagnostics gmm  [--seeds 0 1 2] [--num 2000] [--out experiments/results]
    python -m experiments.score_diagnostics tiny [--crops 8] [--num 8] [paths.tiny_sr4_reference=PATH]
    python -m experiments.score_diagnostics adm512 [--crops 100] [--adapter PATH] [overrides ...]   # GPU
    python -m experiments.score_diagnostics tiny|adm512 --check DIR [overrides ...]   # preflight, runs nothing

At each of ~20 diffusion steps t, states x_t ~ p_t(x_t | y) are drawn and every method's conditional
score s(x_t, y) is compared with the reference s_ref(x_t, y):

  unconditional  s(x_t): the prior's score (ignores y)
  dps            the paper's DPS conditional score at the task's zeta (DPSSampler.implied_eps), with the
                 likelihood weight of the sampler's own step (unclipped, VP units):
                 x_{t-1} = mu_t(x_t, eps) - zeta g + sigma_t z  =  mu_t(x_t, eps_DPS) + sigma_t z,
                 eps_DPS = eps + zeta g / c_t, c_t = beta_t / (sqrt(alpha_t) sqrt(1 - abar_t)),
                 s_DPS = -eps_DPS / sqrt(1 - abar_t) = s - zeta sqrt(alpha_t) g / beta_t;
                 built from eps_hat, so clip_x0 (a change of the transition mean) does not enter it
  adapter        the conditional prior (prior + the adapter under test), image scales only

GMM: x_t is drawn exactly from the diffused exact posterior, and s_ref is its exact score.
Image scales: each scale's task is the one its reference was trained on: tiny, `task=sr4` (bicubic,
sigma_y = 0.05, as `make train-tiny-reference`); adm512, SR x4 by avgpool with sigma_y = 0 (openai's upsampler
saw area-downsampled clean inputs). (x0, y) pairs are the held-out demo crops (tiny) or ImageNet validation
images (adm512) and their measurements, drawn as the runner draws them (same seeds as `python -m dps_map.run`),
and x_t = q_sample(x0, t, eps) with fresh eps, so (y, x_t) ~ p(y) p_t(x_t | y) jointly over the images; the
score mean is averaged over that joint (a valid score still has mean zero there). Reference conditional score,
both loaded as ``prior@reference`` through the same loader (dps_map/priors/upsampler.py):
  tiny    a SuperResModel 16 -> 64 trained here on fresh crops of all the training photographs
          (conf/prior/tiny_sr4_reference.yaml, `make train-tiny-reference`): the best conditional model a CPU
          affords, far smaller than the paper's reference (its card: dps_map/assets/tiny_sr4_reference.json);
  adm512  openai's 128 -> 512 ADM upsampler (conf/prior/adm128_512_upsampler.yaml).

score error(t) = E ||s - s_ref||^2 / d;  score mean(t) = ||E s|| / sqrt(d) with its Monte-Carlo floor
(dps_map.metrics.score). Writes score_diagnostics_<scale>.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from dps_map.config import adapter_training_command, check_data, check_prior_checkpoint, compose, resolve_device
from dps_map.config.targets import build_noise, build_prior, build_sampler
from dps_map.errors import MissingFileError, UserError
from dps_map.io import absolute_path, atomic_write_json
from dps_map.metrics.score import score_error, score_mean
from dps_map.operators import GaussianNoise, MatrixOperator
from dps_map.priors.conditional import with_adapter
from dps_map.runner import bind_class_label, gmm_problem, load_items, measure
from experiments.common import pyplot, run_main, save_figure, write_csv

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
REFERENCES = ("exact", "reference")  # the score every other one is compared with


# -- what both scales share: the steps looked at and the DPS-implied score ---------------------------
def step_indices(num_steps: int, count: int = 20) -> list[int]:
    """~count step indices, log-spaced in t so that both ends of the chain are seen."""
    idx = np.unique(np.geomspace(1, num_steps, count).round().astype(int) - 1)
    return [int(i) for i in idx]


def dps_scores(sampler, prior, operator, noise, y, x_t, i, generator):
    """(unconditional score, DPS conditional score) at states x_t, through the DPS sampler's own step: s from the
    network's eps_hat and s_DPS = s - zeta_t g (DPSSampler.implied_eps), both from the same eps_hat, so they
    differ by the guidance term alone (at zeta = 0 they are equal, whatever clip_x0 does to the transition)."""
    captured = []
    sampler.transition(prior, operator, noise, y, x_t, i, generator, hooks=[captured.append])
    step = captured[0]
    diffusion = sampler.diffusion(prior)
    return diffusion.score_from_eps(x_t, i, step.eps), diffusion.score_from_eps(x_t, i, sampler.implied_eps(diffusion, step))


# -- GMM ------------------------------------------------------------------------------------------
def gmm_rows(seeds, num: int) -> list[dict]:
    """One row per (seed, t, method): score error against the exact posterior score, and score mean."""
    rows = []
    for seed in seeds:
        cfg = compose("task=gmm_linear", "sampler=dps", f"seed={seed}")
        prior = build_prior(cfg.prior)
        A, x0, y, posterior, _ = gmm_problem(cfg, prior)
        reference = prior.condition(A, y, cfg.task.sigma_y)  # exact p(x0 | y) as a prior: exact conditional eps
        sampler = build_sampler(cfg.sampler)
        operator, noise = MatrixOperator(A), GaussianNoise(cfg.task.sigma_y)
        diffusion = sampler.diffusion(prior)
        gen = torch.Generator().manual_seed(1000 + seed)
        for i in step_indices(diffusion.num_steps):
            t = int(diffusion.timesteps[i])
            x_t = posterior.diffuse(float(diffusion.alphas_cumprod[i])).sample(num, gen)
            s_ref = diffusion.score_from_eps(x_t, i, reference.predict(x_t, diffusion.model_t(i, num))[0])
            s_uncond, s_dps = dps_scores(sampler, prior, operator, noise, y[None].expand(num, -1), x_t, i, gen)
            for method, s in (("exact", s_ref), ("unconditional", s_uncond), ("dps", s_dps)):
                mean, floor = score_mean(s)
                rows.append({"scale": "gmm", "seed": seed, "t": t, "method": method,
                             "score_error": score_error(s, s_ref), "score_mean": mean, "mc_floor": floor})
    return rows


# -- image scales: the config, the adapter under test, the preflight, the scores ----------------------
def image_config(args):
    """The config of the image scales: SR x4, DPS, the prior, its data and the reference as ``reference``."""

    if args.scale == "tiny":
        over = ["prior=tiny", "data=demo", f"data.per_photo={args.crops // 2}", "+prior@reference=tiny_sr4_reference"]
    else:  # the ADM-512 pixel setting
        # openai's 128->512 upsampler was trained on area-downsampled (block-averaged), clean low-resolution
        # inputs: its score is the reference of p(x | y) only for that y, so the comparison uses SR x4 by
        # avgpool without noise (bicubic y with sigma_y = 0.05 would compare every score with a reference
        # queried off its training distribution). The adapter under test sees the same y.
        over = ["prior=adm512", "data=imagenet_val", f"data.max_images={args.crops}",
                "+prior@reference=adm128_512_upsampler", "task.method=avgpool", "task.sigma_y=0"]
    return compose("task=sr4", "sampler=dps", *over, *args.overrides)


def adapter_path(args, cfg) -> Path:
    """The adapter under test: --adapter, else paths.adapter (MissingFileError naming how to train it)."""
    adapter = Path(absolute_path(args.adapter or cfg.paths.adapter))
    if not adapter.is_file():
        raise MissingFileError(adapter, "adapter under test of the score diagnostics",
                               adapter_training_command("sr4", cfg.prior.name, adapter), "--adapter PATH")
    return adapter


def check(args) -> list[str]:
    """Every file the image scales read, each checked on its own (nothing is built): the prior's and the
    reference's checkpoints, the adapter, the images and their class labels, the sampler's values. Returns
    the problems (one line each)."""
    problems = []
    try:
        cfg = image_config(args)
    except UserError as err:
        return [str(err)]
    for fn in (lambda: check_prior_checkpoint(cfg.prior), lambda: check_prior_checkpoint(cfg.reference),
               lambda: adapter_path(args, cfg), lambda: check_data(cfg.prior, cfg.data),
               lambda: build_sampler(cfg.sampler)):
        try:
            fn()
        except (UserError, TypeError, ValueError) as err:
            problems.append(str(err))
    return problems


def image_rows(args) -> list[dict]:
    """One row per (t, method) over all images: score error against the reference, score mean and the error
    of the denoised estimate."""
    cfg = image_config(args)
    device = resolve_device(cfg.device)
    prior = build_prior(cfg.prior, device, adapter=False)  # the unconditional prior, whatever prior.adapter says
    sampler = build_sampler(cfg.sampler)
    diffusion = sampler.diffusion(prior)
    noise = build_noise(cfg.task)
    # the conditional prior, as a run builds it. It is scored on the reference's task, which need not be its own:
    # adm512's is SR x4 by avgpool, noiseless, and the paper's adapter (`make train-adapter-paper`) was trained on
    # bicubic task=sr4; so binding it to a measurement skips a run's operator check
    models = {"adapter": with_adapter(prior, adapter_path(args, cfg), check_operator=False)}
    try:
        models["reference"] = build_prior(cfg.reference, device)
    except MissingFileError as err:
        if args.scale != "tiny":
            raise
        print(f"no reference conditional model ({err}): score errors are skipped")
    scores: dict = {}
    x0_mse: dict = {}  # MSE of each method's denoised estimate x0_hat(x_t) against the true image
    naive_mse = []
    for item in load_items(cfg.data, prior.image_size):
        gen, operator, x0, y = measure(cfg, item, prior.image_size, noise, device)
        label = bind_class_label(cfg, prior, item, gen)  # the image's ImageNet class (adm512), as the runner
        if getattr(models.get("reference"), "class_cond", False):
            models["reference"].set_class_labels(label)  # the 128->512 upsampler: the same class
        naive_mse.append(float((operator.naive(y) - x0).pow(2).mean()))
        x0s, ys = x0.expand(args.num, -1, -1, -1), y.expand(args.num, -1, -1, -1)
        bound = {name: model.condition(operator, y) for name, model in models.items()}  # once per measurement
        for i in step_indices(diffusion.num_steps, 12):
            x_t = diffusion.q_sample(x0s, i, torch.randn(x0s.shape, generator=gen, device=device))
            s_uncond, s_dps = dps_scores(sampler, prior, operator, noise, ys, x_t, i, gen)
            got = {"unconditional": s_uncond, "dps": s_dps}
            with torch.no_grad():
                for name, model in bound.items():
                    eps = model.predict(x_t, diffusion.model_t(i, args.num))[0]
                    got[name] = diffusion.score_from_eps(x_t, i, eps)
            t = int(diffusion.timesteps[i])
            for name, s in got.items():
                scores.setdefault((t, name), []).append(s.cpu())
                x0_hat = diffusion.x0_from_eps(x_t, i, diffusion.eps_from_score(x_t, i, s)).clamp(-1, 1)
                x0_mse.setdefault((t, name), []).append(float((x0_hat - x0s).pow(2).mean()))
    rows = []
    for (t, name), parts in sorted(scores.items()):
        s = torch.cat(parts)
        ref = torch.cat(scores[(t, "reference")]) if (t, "reference") in scores else None
        mean, floor = score_mean(s)
        rows.append({"scale": args.scale, "seed": 0, "t": t, "method": name,
                     "score_error": score_error(s, ref) if ref is not None else float("nan"),
                     "score_mean": mean, "mc_floor": floor, "x0_mse": sum(x0_mse[(t, name)]) / len(x0_mse[(t, name)]),
                     "naive_x0_mse": sum(naive_mse) / len(naive_mse)})
    return rows


# -- tables and plots -------------------------------------------------------------------------------
def summarise(rows: list[dict]) -> list[dict]:
    """Mean over seeds/crops per (t, method)."""
    keys = sorted({(r["t"], r["method"]) for r in rows})
    out = []
    for t, method in keys:
        sel = [r for r in rows if r["t"] == t and r["method"] == method]
        out.append({"t": t, "method": method, "n": len(sel),
                    **{k: float(np.mean([r[k] for r in sel])) for k in ("score_error", "score_mean", "mc_floor")}})
    return out


def write_outputs(rows: list[dict], name: str, out: Path, title: str, methods) -> Path:
    plt = pyplot()
    write_csv(rows, out / f"{name}.csv")
    summary = summarise(rows)
    ts = sorted({r["t"] for r in summary})
    pick = {(r["t"], r["method"]): r for r in summary}
    has_error = any(np.isfinite(r["score_error"]) for r in summary)
    erred = [m for m in methods if m not in REFERENCES] if has_error else []
    lines = [f"# {title}", "", "score error E||s - s_ref||^2/d and score mean ||E s||/sqrt(d) "
             "(Monte-Carlo floor of a zero-mean score in brackets), mean over measurements.", "",
             "| t | " + "".join(f"error {m} | " for m in erred) + " | ".join(f"mean {m}" for m in methods) + " |",
             "|---|" + "---|" * (len(erred) + len(methods))]
    if not has_error:
        lines.insert(3, "No reference conditional score: score errors not computed (score means need none).\n")
    for t in ts:
        err = [f"{pick[(t, m)]['score_error']:.3g} | " for m in erred]
        mean = [f"{pick[(t, m)]['score_mean']:.3g} ({pick[(t, m)]['mc_floor']:.2g})" for m in methods]
        lines.append(f"| {t} | " + "".join(err) + " | ".join(mean) + " |")
    if "x0_mse" in rows[0]:  # images: where is each estimate (the reference included) accurate?
        x0 = {(t, m): float(np.mean([r["x0_mse"] for r in rows if r["t"] == t and r["method"] == m])) for t, m in pick}
        lines += ["", f"Denoised-estimate error E||x0_hat(x_t) - x0||^2/d (clipped to [-1, 1]); the naive baseline "
                  f"(the measurement resized to the image) has {rows[0]['naive_x0_mse']:.3g}. A reference is only "
                  "trustworthy at the t where its error is below the naive one.", "",
                  "| t | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        lines += [f"| {t} | " + " | ".join(f"{x0[(t, m)]:.3g}" for m in methods) + " |" for t in ts]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m in methods:
        xs = [t for t in ts if (t, m) in pick]
        if m in erred:
            axes[0].plot(xs, [pick[(t, m)]["score_error"] for t in xs], marker="o", ms=3, label=m)
        axes[1].plot(xs, [pick[(t, m)]["score_mean"] for t in xs], marker="o", ms=3, label=m)
    axes[1].plot(ts, [pick[(t, methods[0])]["mc_floor"] for t in ts], "k:", label="MC floor (zero mean)")
    for ax, label in zip(axes, ("score error  E||s - s_ref||^2 / d", "score mean  ||E s|| / sqrt(d)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("diffusion time t")
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    return save_figure(fig, out / f"{name}.png", title)


# -- command line ----------------------------------------------------------------------------------
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scale", choices=("gmm", "tiny", "adm512"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="GMM problem seeds")
    parser.add_argument("--num", type=int, default=None, help="states x_t per step (GMM, default 2000) or per "
                        "crop and step (tiny, default 8)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--crops", type=int, default=8, help="tiny: held-out demo crops (even)")
    parser.add_argument("--adapter", default=None, help="the adapter under test (default: paths.adapter, e.g. "
                        "the shipped dps_map/assets/adapters/sr4_tiny.pt trained on 100 crops)")
    parser.add_argument("--check", type=Path, default=None, metavar="DIR",
                        help="image scales: check every file the run reads (prior, reference, adapter, images and "
                        "class labels) and write DIR/preflight.json; exit 2 with one line per problem, run nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the image scales (e.g. device=cuda "
                        "paths.adm512=... paths.imagenet_val=... reference.unet.num_channels=...)")
    args = parser.parse_intermixed_args(argv)
    if args.check is not None:
        sys.exit(check_command(args))
    torch.set_num_threads(1)
    args.num = args.num or (2000 if args.scale == "gmm" else 8)
    if args.scale == "gmm":
        rows = gmm_rows(args.seeds, args.num)
        path = write_outputs(rows, "score_diagnostics_gmm", args.out,
                             "Score diagnostics on the exact Gaussian mixture (d=8, 25 modes, y = Ax + n, m=2)",
                             ("exact", "unconditional", "dps"))
    else:
        rows = image_rows(args)
        title = {"tiny": "Score diagnostics at tiny image scale (SR x4, 64x64, held-out crops)",
                 "adm512": "Score diagnostics, ADM 512, SR x4 (reference: ADM 128->512 upsampler)"}[args.scale]
        methods = tuple(m for m in ("reference", "unconditional", "dps", "adapter") if any(r["method"] == m for r in rows))
        path = write_outputs(rows, f"score_diagnostics_{args.scale}", args.out, title, methods)
    print(f"wrote {path} and its .csv/.md")


def check_command(args) -> int:
    """--check: the preflight of the score diagnostics (make preflight-paper). Returns the exit code."""
    if args.scale == "gmm":
        print("score_diagnostics --check: the gmm scale reads no file", file=sys.stderr)
        return 2
    problems = check(args)
    for problem in problems:
        print(f"score_diagnostics {args.scale}: {problem}", file=sys.stderr)
    args.check.mkdir(parents=True, exist_ok=True)
    report = {"n_jobs": 1, "n_invalid": int(bool(problems)),
              "jobs": [{"job": 0, "command": f"python -m experiments.score_diagnostics {args.scale}",
                        "overrides": list(args.overrides), "problems": problems}]}
    atomic_write_json(args.check / "preflight.json", report)
    print(f"score_diagnostics {args.scale}: {len(problems)} problem(s); wrote {args.check / 'preflight.json'}")
    return 2 if problems else 0


if __name__ == "__main__":
    run_main(main)
