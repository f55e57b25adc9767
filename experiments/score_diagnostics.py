"""Paper observations 1 (score error) and 2 (score mean) vs diffusion time, on the exact Gaussian-mixture
benchmark (task=gmm_linear) and at tiny image scale (SR x4, prior=tiny).

    python -m experiments.score_diagnostics gmm  [--seeds 0 1 2] [--num 2000] [--out experiments/results]
    python -m experiments.score_diagnostics tiny [--crops 8] [--num 8] [paths.tiny_sr4_reference=PATH]
    python -m experiments.score_diagnostics adm512 [--crops 100] [--adapter PATH] [overrides ...]   # GPU

At each of ~20 diffusion steps t, states x_t ~ p_t(x_t | y) are drawn and every method's conditional
score s(x_t, y) is compared with the reference s_ref(x_t, y):

  unconditional  s(x_t): the prior's score (ignores y)
  dps            the paper's DPS conditional score at the task's zeta (DPSSampler.implied_eps), with the
                 likelihood weight of the sampler's own step (unclipped, VP units):
                 x_{t-1} = mu_t(x_t, eps) - zeta g + sigma_t z  =  mu_t(x_t, eps_DPS) + sigma_t z,
                 eps_DPS = eps + zeta g / c_t, c_t = beta_t / (sqrt(alpha_t) sqrt(1 - abar_t)),
                 s_DPS = -eps_DPS / sqrt(1 - abar_t) = s - zeta sqrt(alpha_t) g / beta_t;
                 built from eps_hat, so clip_x0 (a change of the transition mean) does not enter it
  adapter        the conditional prior (prior + trained adapter), tiny scale only

GMM: x_t is drawn exactly from the diffused exact posterior, and s_ref is its exact score.
Tiny scale: (x0, y) pairs are the held-out demo crops and their measurements, so x0 ~ p(x0 | y) and
x_t = q_sample(x0) ~ p_t(x_t | y) jointly over the crops; s_ref is the tiny-scale reference, a conditional
SR model (openai's SuperResModel 16 -> 64, conf/prior/tiny_sr4_reference.yaml) trained here on fresh
crops of all the training photographs (`make train-tiny-reference`; documented as such: the best
conditional model a CPU affords, far smaller than the paper's reference). The score mean is then averaged over the crops' joint
(y, x_t) (a valid score still has mean zero there).

score error(t) = E ||s - s_ref||^2 / d;  score mean(t) = ||E s|| / sqrt(d) with its Monte-Carlo floor
(dps_map.metrics.score). Writes score_diagnostics_<scale>.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from dps_map.config import compose
from dps_map.config.targets import build_prior, build_sampler
from dps_map.io import atomic_write_json
from dps_map.metrics.score import score_error, score_mean
from dps_map.operators import GaussianNoise, MatrixOperator
from dps_map.runner import gmm_problem
from experiments.common import pyplot, save_figure, write_csv
from experiments.score_common import dps_scores, step_indices

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
REFERENCES = ("exact", "reference")  # the score every other one is compared with






# -- GMM ------------------------------------------------------------------------------------------
def gmm_rows(seeds, num: int) -> list[dict]:
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
        from experiments.score_diagnostics_images import image_rows

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
    from experiments.score_diagnostics_images import check

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
    main()
