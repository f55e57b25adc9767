"""`make demo`: what the project does, in a few minutes on a CPU, with nothing downloaded.

1. Image restoration with the shipped tiny prior on 4 crops of held-out photographs: SR x4, box
   inpainting and Gaussian deblurring, each with DPS and DMAP, through the normal runner
   (outputs/demo/<task>/<sampler>/), one labelled picture per task (rows: measurement, DPS, DMAP, ground
   truth; columns: the crops; tiles enlarged by nearest neighbour, each restoration's PSNR under it) and
   a PSNR/SSIM table against the naive baseline (the measurement resized to the image).
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
from PIL import Image
from tqdm import tqdm

from .config import compose
from .config.demo import DEMO_PER_PHOTO, DEMO_SAMPLERS, DEMO_TASKS
from .config.targets import build_prior
from .io import unique_records
from .runner import format_summary, gmm_problem, run
from .runner.summary import read_records


def gmm_demo(out_root: Path, num_samples: int = 1000, seed: int = 0) -> Path:
    """Run DPS, DMAP, oracle and exact on the 2-D GMM and save a scatter plot over the posterior."""
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
    metrics = {name: summaries[name]["metrics"] for name in samplers}
    title = (f"2-D Gaussian mixture, y = A x + n (A = {A.numpy().round(2).tolist()}, sigma_y = {cfg.task.sigma_y}): "
             "samples over the exact posterior density")
    path = out_root / "gmm2d.png"
    gmm_figure(samples, metrics, grid, density, prior_means, title).savefig(path, dpi=110)
    return path


def gmm_figure(samples: dict, metrics: dict, grid: np.ndarray, density: np.ndarray, prior_means: np.ndarray,
               title: str):
    """One panel per method (samples[name]: (n, 2)) over the posterior density on grid x grid, with its
    sliced Wasserstein distance and mean log posterior (metrics[name]) in the panel's title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(4 * len(samples), 4.8), layout="constrained")  # room for the titles and axis labels
    FigureCanvasAgg(fig)  # Agg, set on this figure only: no display and no global pyplot state
    axes = fig.subplots(1, len(samples), sharex=True, sharey=True)
    for ax, (name, xs) in zip(axes, samples.items()):
        ax.contourf(grid, grid, density, levels=20, cmap="Greys")
        ax.scatter(prior_means[:, 0], prior_means[:, 1], marker="+", c="tab:blue", s=30, label="prior means")
        ax.scatter(xs[:, 0], xs[:, 1], s=3, alpha=0.4, c="tab:red", label="samples")
        m = metrics[name]
        ax.set_title(f"{name}\nSW={m['sliced_wasserstein']:.3f}  log p={m['log_posterior']:.2f}", fontsize=10)
        ax.set_xlabel("$x_1$")
        ax.set_aspect("equal")
    axes[0].set_ylabel("$x_2$")
    handles, _ = axes[0].get_legend_handles_labels()
    axes[0].legend(handles=[*handles, Patch(color="0.6", label="exact posterior density")], loc="lower left",
                   fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


#: shown size of a tile in the task pictures, in pixels: the 64 px crops x3, the 16 px SR measurement x12
TILE_PX = 192
#: the pictures' pixel layout: gap between tiles, room left of the tiles (row labels), above them (title,
#: column titles), under each tile (its PSNR) and at the right and bottom edges
_GAP, _LEFT, _TOP, _CAPTION, _EDGE = 6, 34, 74, 26, 8
TASK_NAMES = {"sr4": "super-resolution x4", "inpaint_box": "box inpainting", "gaussian_deblur": "Gaussian deblurring"}


def upscale_nearest(tile: np.ndarray, px: int) -> np.ndarray:
    """A square (H, W, 3) tile enlarged to (px, px, 3) by repeating each pixel (no smoothing: the shown
    pixels are the saved ones)."""
    h, w = tile.shape[:2]
    if h != w or px % h:
        raise ValueError(f"a {h}x{w} tile does not enlarge to {px}x{px} px by a whole factor")
    return tile.repeat(px // h, axis=0).repeat(px // h, axis=1)


def grid_figure(title: str, columns: list[str], rows: list[tuple[str, list, list]], tile_px: int = TILE_PX):
    """A labelled picture of tiles: `columns` titles the columns (above the first row); each row is
    (label, tiles, captions): its label at the left, uint8 (H, W, 3) tiles enlarged by nearest neighbour to
    tile_px, and a caption (or None) under each tile. The axes sit on whole pixels at dpi 100, so the saved
    PNG holds each enlarged tile pixel for pixel; fig.axes is row-major."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    row_px = tile_px + _CAPTION
    width = _LEFT + len(columns) * (tile_px + _GAP) - _GAP + _EDGE
    height = _TOP + len(rows) * row_px + _EDGE
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(fig)  # Agg, set on this figure only: no display and no global pyplot state
    for r, (label, tiles, captions) in enumerate(rows):
        for c, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
            left, top = _LEFT + c * (tile_px + _GAP), _TOP + r * row_px
            ax = fig.add_axes((left / width, 1 - (top + tile_px) / height, tile_px / width, tile_px / height))
            ax.imshow(upscale_nearest(tile, tile_px), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)  # a frame would be drawn over the tile's edge pixels
            if r == 0:
                ax.set_title(columns[c], fontsize=10)
            if c == 0:
                ax.set_ylabel(label, fontsize=11)
            if caption is not None:
                ax.set_xlabel(caption, fontsize=10, labelpad=3)
    fig.suptitle(title, fontsize=11, y=1 - 8 / height, va="top")
    return fig


def crop_label(ident: str) -> str:
    """A column title: 'chelsea_1' -> 'chelsea, crop 1' (data=demo's ids are <photograph>_<crop>)."""
    photo, _, k = ident.rpartition("_")
    return f"{photo}, crop {k}" if photo and k.isdigit() else ident


def psnr_caption(record: dict | None) -> str:
    """The text under a restored tile: the PSNR of its metrics.jsonl record, as shown."""
    if record is None or record.get("psnr") is None:
        return "failed" if record is not None and record.get("failed") else "no PSNR"
    return f"PSNR {record['psnr']:.2f} dB"


def _read_tile(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def task_figure(out_root: Path, task: str, samplers=DEMO_SAMPLERS, tile_px: int = TILE_PX):
    """The picture of one task's runs under out_root/<task>/<sampler>/: rows measurement, one per sampler
    (sample k=0 of each crop, its PSNR from the run's metrics.jsonl under it), ground truth; one column per crop."""
    first = out_root / task / samplers[0]
    ids = sorted(p.stem for p in (first / "label").glob("*.png"))
    truth = [_read_tile(first / "label" / f"{i}.png") for i in ids]
    rows = [("measurement", [_read_tile(first / "input" / f"{i}.png") for i in ids], [None] * len(ids))]
    for sampler in samplers:
        run_dir = out_root / task / sampler
        records = {r["id"]: r for r in unique_records(read_records(run_dir / "metrics.jsonl"))[0] if r["k"] == 0}
        recons = [run_dir / "recon" / f"{i}_0.png" for i in ids]
        # a failed sample has no PNG: a white tile, captioned "failed"
        tiles = [_read_tile(p) if p.exists() else np.full_like(truth[0], 255) for p in recons]
        rows.append((sampler.upper(), tiles, [psnr_caption(records.get(i)) for i in ids]))
    rows.append(("ground truth", truth, [None] * len(ids)))
    size = truth[0].shape[0]
    measured = rows[0][1][0].shape[0]
    shown = f"{size} px crops" + ("" if measured == size else f", {measured} px measurements")
    title = (f"{TASK_NAMES.get(task, task)}: {' and '.join(s.upper() for s in samplers)} restorations "
             f"(PSNR against the ground truth)\n{shown}, enlarged to {tile_px} px by nearest neighbour")
    return grid_figure(title, [crop_label(i) for i in ids], rows, tile_px)


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
    """Restore the demo crops for each task and sampler; write one picture per task; return the table rows."""
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
        task_figure(out_root, task, samplers).savefig(out_root / f"{task}.png", dpi=100)
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
