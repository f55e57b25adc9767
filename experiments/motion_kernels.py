"""Our motion-blur kernels against the papers' (MotionBlur, LeviBorodenko/motionblur), and the SR border gap.

DPS2022 (guided_diffusion/measurements.py:8, :99) and Xu et al. (ControlNet-Low-Level op.py:19, :679) draw motion
kernels with `motionblur.Kernel(size=(61, 61), intensity=0.5).kernelMatrix`, a git clone (DPS2022 README.md:61),
not a PyPI package; dps-map draws its own (dps_map.operators.motion_kernel). This script draws both families over
`--seeds` seeds and reports, per kernel: the support (pixels above 1e-3 of the kernel's maximum), the spread (the
root of the second central moment of the weights, px), the extent (the longer side of the support's bounding box,
px) and the maximum weight. Theirs comes from a checkout of their file, given with `--motionblur PATH` (their
generator reads numpy's global stream, seeded with np.random.seed(seed) per kernel); it is read, never copied.

It also measures the SR border gap (docs/methods.md "Operators"): max |bicubic - imresize| of y on a uniform random
image in [-1, 1] at 256 px, in the 2-pixel border of y and inside it.

    python -m tools.provenance --results motion_kernels -- \\
        python -m experiments.motion_kernels --motionblur /path/to/motionblur/motionblur.py

Writes experiments/results/motion_kernels.{md,csv}.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch

from dps_map.operators import SuperResolution, motion_kernel
from experiments.common import write_csv

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


def kernel_stats(k: np.ndarray) -> dict:
    """Support (pixels > 1e-3 max), spread (sqrt of the second central moment, px), extent (px), max weight."""
    k = np.asarray(k, dtype=np.float64)
    k = k / k.sum()
    rows, cols = np.indices(k.shape)
    mr, mc = (k * rows).sum(), (k * cols).sum()
    spread = float(np.sqrt((k * ((rows - mr) ** 2 + (cols - mc) ** 2)).sum()))
    on = k > 1e-3 * k.max()
    r, c = np.nonzero(on)
    extent = int(max(r.max() - r.min(), c.max() - c.min()) + 1)
    return {"support": int(on.sum()), "spread": spread, "extent": extent, "max_weight": float(k.max())}


def load_motionblur(path: Path):
    spec = importlib.util.spec_from_file_location("motionblur_upstream", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summary(values: np.ndarray) -> str:
    return (f"{np.mean(values):.4g} | {np.median(values):.4g} | {np.percentile(values, 5):.4g} | "
            f"{np.percentile(values, 95):.4g}")


def sr_border_gap(factor: int, n: int = 256) -> dict:
    x = torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    gap = (SuperResolution(factor, "bicubic")(x) - SuperResolution(factor, "imresize")(x)).abs()[0]
    m = n // factor
    inner = gap[:, 2:m - 2, 2:m - 2]
    return {"factor": factor, "size": n, "max_all": float(gap.max()), "max_inside": float(inner.max()),
            "mean_border": float((gap.sum() - inner.sum()) / (gap.numel() - inner.numel()))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--motionblur", type=Path, required=True, help="LeviBorodenko/motionblur's motionblur.py")
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--size", type=int, default=61)
    parser.add_argument("--intensity", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    upstream = load_motionblur(args.motionblur)
    digest = hashlib.sha256(args.motionblur.read_bytes()).hexdigest()
    rows = []
    for seed in range(args.seeds):
        ours = motion_kernel(args.size, args.intensity, torch.Generator().manual_seed(seed)).numpy()
        rows.append({"family": "ours", "seed": seed, **kernel_stats(ours)})
        np.random.seed(seed)
        theirs = upstream.Kernel(size=(args.size, args.size), intensity=args.intensity).kernelMatrix
        rows.append({"family": "motionblur", "seed": seed, **kernel_stats(theirs)})
    write_csv(rows, args.out / "motion_kernels.csv")

    lines = ["# Motion-blur kernels: ours against MotionBlur (the papers'), and the SR border gap", "",
             f"{args.seeds} kernels of each family, size {args.size}, intensity {args.intensity}. Ours: "
             "`dps_map.operators.motion_kernel(size, intensity, torch.Generator().manual_seed(seed))`. MotionBlur: "
             "`Kernel(size=(size, size), intensity=intensity).kernelMatrix` after `np.random.seed(seed)`, from "
             f"LeviBorodenko/motionblur's motionblur.py (sha256 {digest}; commit 5781378 when this was written), "
             "the generator DPS2022 and Xu et al. call. Per kernel: support = pixels above 1e-3 of its maximum; "
             "spread = sqrt of the second central moment of the weights (px); extent = longer side of the "
             "support's bounding box (px); max weight. Each cell: mean | median | 5th | 95th percentile over "
             "the seeds (per-kernel values: motion_kernels.csv).", "",
             "| family | statistic | mean | median | p5 | p95 |", "|---|---|---|---|---|---|"]
    for family in ("ours", "motionblur"):
        for stat in ("support", "spread", "extent", "max_weight"):
            values = np.array([r[stat] for r in rows if r["family"] == family], dtype=np.float64)
            lines.append(f"| {family} | {stat} | {summary(values)} |")
    lines += ["", "## SR: torch's antialiased bicubic against imresize (the Resizer of DPS2022 and Xu et al.)", "",
              "max |bicubic - imresize| of y for a uniform random image in [-1, 1] (seed 0), over all of y, inside "
              "its 2-pixel border, and the mean gap on the border pixels.", "",
              "| factor | image px | max, all of y | max, inside the border | mean on the border |",
              "|---|---|---|---|---|"]
    for factor in (4, 8):
        g = sr_border_gap(factor)
        lines.append(f"| {g['factor']} | {g['size']} | {g['max_all']:.4f} | {g['max_inside']:.1e} | "
                     f"{g['mean_border']:.4f} |")
    (args.out / "motion_kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
