"""`make demo`: what the project does, in a minute on a CPU, with nothing downloaded.

The 2-D Gaussian-mixture problem (prior.dim=2, one measurement): DPS, DMAP, the oracle (exact
conditional score) and exact posterior samples, drawn through the same runner as any experiment,
plotted over the exact posterior density in outputs/demo/gmm2d.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from .run import format_summary, gmm_problem, run
from .priors import build_prior

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def gmm_demo(out_root: Path, num_samples: int = 1000, seed: int = 0) -> Path:
    """Run DPS, DMAP, oracle and exact on the 2-D GMM and save a scatter plot over the posterior."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = ["task=gmm_linear", "prior=gmm", "data=gmm", "prior.dim=2", "task.m=1", f"seed={seed}",
            f"num_samples={num_samples}", "progress=false"]
    samplers = ("exact", "oracle", "dps", "dmap")
    samples, summaries = {}, {}
    for name in samplers:
        out = out_root / "gmm2d" / name
        summaries[name] = run(compose_config(base + [f"sampler={name}"]), out)
        samples[name] = np.load(out / "samples.npy")
        print(format_summary(summaries[name]))
    cfg = compose_config(base + ["sampler=exact"])
    A, x0, y, posterior, _ = gmm_problem(cfg, build_prior(cfg.prior))
    prior_means = build_prior(cfg.prior).mixture.means.numpy()
    grid = np.linspace(-1.6, 1.6, 300)
    xx, yy = np.meshgrid(grid, grid)
    pts = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], 1))
    density = posterior.log_prob(pts).exp().reshape(xx.shape).numpy()
    fig, axes = plt.subplots(1, len(samplers), figsize=(4 * len(samplers), 4.2), sharex=True, sharey=True)
    for ax, name in zip(axes, samplers):
        ax.contourf(xx, yy, density, levels=20, cmap="Greys")
        pm = prior_means
        ax.scatter(pm[:, 0], pm[:, 1], marker="+", c="tab:blue", s=30, label="prior means")
        ax.scatter(samples[name][:, 0], samples[name][:, 1], s=3, alpha=0.4, c="tab:red", label="samples")
        m = summaries[name]["metrics"]
        ax.set_title(f"{name}\nSW={m['sliced_wasserstein']:.3f}  log p={m['log_posterior']:.2f}", fontsize=10)
        ax.set_aspect("equal")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"2-D Gaussian mixture, y = A x + n (A = {A.numpy().round(2).tolist()}, sigma_y = "
                 f"{cfg.task.sigma_y}): grey = exact posterior density", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    path = out_root / "gmm2d.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo", help="output folder")
    parser.add_argument("--num-samples", type=int, default=1000)
    args = parser.parse_args(argv)
    out = Path(args.out)
    path = gmm_demo(out, args.num_samples)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
