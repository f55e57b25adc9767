"""Paper observation 3 (diversity): DPS samples are less diverse than the posterior, on the exact
Gaussian mixture and at tiny image scale (SR x4).

    python -m experiments.diversity gmm  [--seeds 0 1 2] [--num-samples 1000]
    python -m experiments.diversity tiny [--crops 4] [--num-samples 4]

GMM: samples from exact, dps, dmap (and the oracle: the exact conditional score in the DDPM chain)
against the exact posterior (ratios: 1 = as the posterior): spread within modes (samples grouped by
their most responsible component), total covariance trace, effective number of modes (exp entropy of
the recovered mode weights), sliced Wasserstein-1 to exact samples (with its noise floor), total
variation of the recovered mode weights.
Tiny: N samples per held-out crop through the runner; per-pixel std across samples (images in [-1, 1],
as the paper's diversity number) and mean pairwise L2 (and LPIPS where its weights exist), for dps,
dmap, adapter and adapter_dmap, and the reference conditional model (prior=tiny_sr4_reference sampler=ddpm:
a SuperResModel trained here on fresh crops of all the training photographs; skipped if its file is
missing), whose spread stands in for the posterior's.
Writes diversity_<scale>.{csv,md,png}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dps_map.config import check_prior_checkpoint, compose
from dps_map.errors import MissingFileError
from dps_map.runner import run
from experiments.common import pyplot, save_figure, write_csv

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
GMM_SAMPLERS = ("exact", "oracle", "dps", "dmap")
TINY_SAMPLERS = ("dps", "dmap", "adapter", "adapter_dmap", "reference")  # adapter_dps: as adapter_dmap, in the restoration table


def gmm_rows(seeds, num_samples: int, work: Path) -> list[dict]:
    rows = []
    for sampler in GMM_SAMPLERS:
        for seed in seeds:
            cfg = compose("task=gmm_linear", f"sampler={sampler}", f"seed={seed}", f"num_samples={num_samples}",
                        "progress=false")
            m = run(cfg, work / "gmm" / sampler / f"seed{seed}")["metrics"]
            rows.append({"scale": "gmm", "sampler": sampler, "seed": seed, "trace_ratio": m["trace_ratio"],
                         "within_mode_trace_ratio": m["within_mode_trace_ratio"],
                         "effective_modes_ratio": m["effective_modes_ratio"],
                         "sliced_wasserstein": m["sliced_wasserstein"], "sw_noise_floor": m["sw_noise_floor"],
                         "mode_weight_tv": m["mode_weight_tv"]})
    return rows


def tiny_rows(crops: int, num_samples: int, work: Path, overrides=()) -> list[dict]:
    rows = []
    for sampler in TINY_SAMPLERS:
        over = ["task=sr4", "data=demo", f"data.per_photo={crops // 2}", f"num_samples={num_samples}",
                "metrics.names=[psnr,ssim,diversity]", "progress=false"]
        over += ["prior=tiny_sr4_reference", "sampler=ddpm"] if sampler == "reference" else ["prior=tiny", f"sampler={sampler}"]
        cfg = compose(*over, *overrides)
        try:
            check_prior_checkpoint(cfg.prior)
        except MissingFileError as err:
            print(f"skipping {sampler}: {err}")
            continue
        summary = run(cfg, work / "tiny" / sampler)
        div = summary["metrics"].get("diversity") or {}
        rows.append({"scale": "tiny", "sampler": sampler, "pixel_std": div.get("pixel_std"),
                     "pairwise_l2": div.get("pairwise_l2"), "pairwise_lpips": div.get("pairwise_lpips"),
                     "psnr": summary["metrics"]["psnr"]["mean"], "n_measurements": div.get("n_measurements")})
    return rows


def write(rows: list[dict], name: str, out: Path, title: str) -> None:
    plt = pyplot()
    write_csv(rows, out / f"{name}.csv")
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    if rows[0]["scale"] == "gmm":
        keys = ("within_mode_trace_ratio", "trace_ratio", "effective_modes_ratio", "sliced_wasserstein",
                "sw_noise_floor", "mode_weight_tv")
        head = ("| sampler | within-mode spread ratio | total trace ratio | effective modes ratio | SW1 to exact | "
                "SW1 floor | mode-weight TV |")
    else:
        keys = ("pixel_std", "pairwise_l2", "pairwise_lpips", "psnr")
        head = "| sampler | per-pixel std | pairwise L2 | pairwise LPIPS | PSNR |"
    means = {}
    for s in samplers:
        sel = [r for r in rows if r["sampler"] == s]
        means[s] = {k: (float(np.mean([r[k] for r in sel])) if sel[0][k] is not None else None) for k in keys}
    fmt = lambda v: "n/a (no weights)" if v is None else f"{v:.4g}"  # noqa: E731
    lines = [f"# {title}", "", head, "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {s} | " + " | ".join(fmt(means[s][k]) for k in keys) + " |" for s in samplers]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    key = keys[0]
    ax.bar(samplers, [means[s][key] for s in samplers], color="tab:blue")
    if key.endswith("ratio"):
        ax.axhline(1.0, color="k", ls=":", label="exact posterior")
        ax.legend()
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title, fontsize=9)
    save_figure(fig, out / f"{name}.png")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scale", choices=("gmm", "tiny"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-samples", type=int, default=None, help="gmm: 1000 per seed; tiny: 4 per crop")
    parser.add_argument("--crops", type=int, default=4)
    parser.add_argument("overrides", nargs="*", help="tiny: Hydra overrides (e.g. paths.tiny_sr4_reference=...)")
    parser.add_argument("--work", type=Path, default=Path("outputs/paper_small/diversity"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_intermixed_args(argv)
    if args.scale == "gmm":
        rows = gmm_rows(args.seeds, args.num_samples or 1000, args.work)
        write(rows, "diversity_gmm", args.out, "Diversity against the exact GMM posterior (d=8, m=2)")
    else:
        rows = tiny_rows(args.crops, args.num_samples or 4, args.work, args.overrides)
        write(rows, "diversity_tiny", args.out, "Diversity per measurement, SR x4 at tiny scale")
    print(f"wrote {args.out / f'diversity_{args.scale}.md'}")


if __name__ == "__main__":
    main()
