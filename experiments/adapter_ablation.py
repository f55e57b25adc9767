"""Adapter ablation over the number of training images (the paper trains on 100; it reports 25/50/100/1000
for DPS + estimator on SR x8): adapters trained on n crops, evaluated on the held-out demo crops (SR x4).

    python -m experiments.adapter_ablation [--n 25 50 100] [--samplers adapter adapter_dmap]

Adapters are read from outputs/train_adapter/sr4_tiny_n<n>/adapter.pt (``make adapter-ablation`` trains
them with the shipped adapter's recipe). Writes adapter_ablation.{csv,md,png}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dps_map.config import compose
from dps_map.errors import MissingFileError
from dps_map.runner import run
from experiments.common import pyplot, save_figure, write_csv

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--samplers", nargs="+", default=["adapter", "adapter_dmap"])
    parser.add_argument("--adapters", default="outputs/train_adapter/sr4_tiny_n{n}/adapter.pt")
    parser.add_argument("--work", type=Path, default=Path("outputs/paper_small/adapter_ablation"))
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args(argv)
    rows = []
    for n in args.n:
        path = Path(args.adapters.format(n=n)).resolve()
        if not path.is_file():
            raise MissingFileError(path, f"adapter trained on {n} crops", "make adapter-ablation", "--adapters PATTERN")
        for sampler in args.samplers:
            cfg = compose("task=sr4", "prior=tiny", "data=demo", f"sampler={sampler}",
                                               f"sampler.adapter={path}", "progress=false")
            s = run(cfg, args.work / f"n{n}" / sampler)
            rows.append({"n_images": n, "sampler": sampler, "psnr": s["metrics"]["psnr"]["mean"],
                         "psnr_sem": s["metrics"]["psnr"]["sem"], "ssim": s["metrics"]["ssim"]["mean"],
                         "naive_psnr": s["naive"]["psnr"]["mean"], "naive_ssim": s["naive"]["ssim"]["mean"]})
            print(rows[-1])
    write_csv(rows, args.out / "adapter_ablation.csv")
    lines = ["# Adapter ablation: training images (SR x4, tiny prior, 8 held-out crops, 50 steps)", "",
             "| training crops | sampler | PSNR | SSIM | bicubic PSNR | bicubic SSIM |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['n_images']} | {r['sampler']} | {r['psnr']:.2f} ± {r['psnr_sem']:.2f} | {r['ssim']:.3f} | "
              f"{r['naive_psnr']:.2f} | {r['naive_ssim']:.3f} |" for r in rows]
    (args.out / "adapter_ablation.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for sampler in args.samplers:
        sel = [r for r in rows if r["sampler"] == sampler]
        ax.errorbar([r["n_images"] for r in sel], [r["psnr"] for r in sel], yerr=[r["psnr_sem"] for r in sel],
                    marker="o", capsize=3, label=sampler)
    ax.axhline(rows[0]["naive_psnr"], color="k", ls=":", label="bicubic")
    ax.set_xscale("log")
    ax.set_xticks(args.n, [str(n) for n in args.n])
    ax.set_xlabel("training crops")
    ax.set_ylabel("PSNR (dB)")
    ax.legend(fontsize=8)
    ax.set_title("SR x4 adapter vs training images", fontsize=10)
    save_figure(fig, args.out / "adapter_ablation.png")
    print(f"wrote {args.out / 'adapter_ablation.md'}")


if __name__ == "__main__":
    main()
