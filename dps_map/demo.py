"""`make demo`: what the project does, in a few minutes on a CPU, with nothing downloaded.

1. Image restoration with the shipped tiny prior on 4 crops of held-out photographs: SR x4, box
   inpainting and Gaussian deblurring, each with DPS and DMAP, through the normal runner
   (outputs/demo/<task>/<sampler>/), one PNG grid per task (rows: measurement, DPS, DMAP, ground
   truth) and a PSNR/SSIM table against the naive baseline (the measurement resized to the image).
2. The 2-D Gaussian-mixture problem: DPS, DMAP, the oracle (exact conditional score) and exact
   posterior samples over the exact posterior density (outputs/demo/gmm2d.png).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .config import compose
from .config.targets import build_prior
from .runner import format_summary, gmm_problem, run


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
        summaries[name] = run(compose(*base + [f"sampler={name}"]), out)
        samples[name] = np.load(out / "samples.npy")
        print(format_summary(summaries[name]))
    cfg = compose(*base + ["sampler=exact"])
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


DEMO_TASKS = ("sr4", "inpaint_box", "gaussian_deblur")
DEMO_SAMPLERS = ("dps", "dmap")
#: crops per held-out photograph: 2 keeps `make demo` under 4 minutes on 2 CPU cores (DMAP costs
#: 1 forward + 3 VJPs per step, ~10 s per crop; the six runs go two at a time, one per core);
#: `python -m dps_map.run data=demo` uses 4
DEMO_PER_PHOTO = 2


def _run_job(overrides: list[str], out: Path) -> dict:
    """One restoration, without its own progress bar (parallel runs' bars would garble one terminal line)."""
    start = time.perf_counter()
    summary = run(compose(*overrides, "progress=false"), out)
    summary["wall_seconds"] = time.perf_counter() - start
    return summary


def run_line(summary: dict) -> str:
    """The one line printed when a run finishes."""
    return f"done  {format_summary(summary)}  ({summary.get('wall_seconds', 0):.0f} s)"


def image_demo(out_root: Path, tasks=DEMO_TASKS, samplers=DEMO_SAMPLERS, extra=(), progress: bool = True) -> list[dict]:
    """Restore the demo crops for each task and sampler; write grids; return the table rows."""
    from torchvision.utils import save_image

    from .io import load_image

    jobs = [(task, sampler) for task in tasks for sampler in samplers]
    overrides = {job: [f"task={job[0]}", "prior=tiny", f"sampler={job[1]}", "data=demo",
                       f"data.per_photo={DEMO_PER_PHOTO}", *extra] for job in jobs}
    workers = min(len(jobs), os.cpu_count() or 1)
    done = {}
    # one progress display: a total bar over the runs, and one line per run as it finishes
    with tqdm(total=len(jobs), desc=f"demo: {len(jobs)} restorations", unit="run", disable=not progress) as bar:
        def finished(job, summary):
            done[job] = summary
            bar.write(run_line(summary))
            bar.update(1)

        if workers > 1 and not torch.cuda.is_available():
            # one single-threaded process per core: on a small CPU two 1-thread runs side by side finish
            # sooner than one 2-thread run after another (the 64x64 convolutions parallelise poorly)
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=torch.set_num_threads,
                                     initargs=(1,)) as pool:
                futures = {pool.submit(_run_job, overrides[job], out_root / job[0] / job[1]): job
                           for job in sorted(jobs, key=lambda j: j[1] != "dmap")}  # the slowest (DMAP) first
                for future in as_completed(futures):
                    finished(futures[future], future.result())
        else:
            for job in jobs:
                finished(job, _run_job(overrides[job], out_root / job[0] / job[1]))
    rows = []
    for task in tasks:
        for sampler in samplers:
            summary = done[(task, sampler)]
            m, naive = summary["metrics"], summary["naive"]
            rows.append({"task": task, "sampler": sampler, "psnr": m["psnr"]["mean"], "ssim": m["ssim"]["mean"],
                         "naive_psnr": naive["psnr"]["mean"], "naive_ssim": naive["ssim"]["mean"],
                         "s_per_sample": summary["cost"]["seconds_per_sample"]})
        # grid: rows = measurement (as an image), one row per sampler, ground truth; columns = crops
        first = out_root / task / samplers[0]
        ids = sorted(p.stem for p in (first / "label").glob("*.png"))
        size = load_image(first / "label" / f"{ids[0]}.png", 64)[0].shape[-1]
        tiles = [load_image(first / "input" / f"{i}.png", size)[0] for i in ids]
        for sampler in samplers:
            tiles += [load_image(out_root / task / sampler / "recon" / f"{i}_0.png", size)[0] for i in ids]
        tiles += [load_image(first / "label" / f"{i}.png", size)[0] for i in ids]
        save_image((torch.stack(tiles) + 1) / 2, out_root / f"{task}.png", nrow=len(ids), padding=2, pad_value=1.0)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| task | sampler | PSNR | SSIM | naive PSNR | naive SSIM | s/sample |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['sampler']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['naive_psnr']:.2f} | "
                     f"{r['naive_ssim']:.3f} | {r['s_per_sample']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo", help="output folder")
    parser.add_argument("--num-samples", type=int, default=1000, help="GMM samples per method")
    parser.add_argument("--skip-images", action="store_true", help="only the Gaussian-mixture picture")
    args = parser.parse_args(argv)
    out = Path(args.out)
    start = time.perf_counter()
    if not args.skip_images:
        rows = image_demo(out)
        print(format_table(rows))
        print(f"grids: {', '.join(str(out / f'{t}.png') for t in DEMO_TASKS)}")
    path = gmm_demo(out, args.num_samples)
    print(f"wrote {path}  (demo took {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
