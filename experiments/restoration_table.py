"""Restoration table: tasks x samplers with PSNR, SSIM, LPIPS, FID, KID and cost, from a sweep directory.

    python -m experiments.restoration_table SWEEP_DIR [--out DIR] [--name restoration_tiny] [--partial]

Aggregates the sweep (dps_map.runner.sweep_results: shards merged, FID/KID over all samples of a config where
the Inception weights exist; every number comes from the merged group, never from one shard), then pivots it into one row per (task, sampler) with the naive baseline
(the measurement resized to the image) beside it, and writes <name>.{csv,md,png}. A sweep with an incomplete
group or a broken job (dps_map.runner.sweep_results) writes no table and exits 1, unless --partial; any other
problem (no run directories under SWEEP_DIR, ...) is one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dps_map.errors import UserError
from dps_map.runner.sweep_results import aggregate
from experiments.common import pyplot, save_figure, write_csv

SAMPLER_ORDER = ("ddpm", "dps", "dsg", "dmap", "dmap_adam", "adapter", "adapter_dps", "adapter_dmap")


def _mean(stat):
    return stat.get("mean") if isinstance(stat, dict) else stat


class PartialSweep(UserError):
    """A sweep with an incomplete group or a broken job: exit 1, like `python -m dps_map.aggregate`."""

    exit_code = 1


def table_rows(root: Path, partial: bool = True) -> list[dict]:
    """The table's rows; partial=False refuses (PartialSweep) a sweep with an incomplete group or a broken job."""
    result = aggregate(root)
    if not partial and (result["incomplete_groups"] or result["broken_jobs"]):
        raise PartialSweep(f"'{root}' is a partial sweep ({len(result['incomplete_groups'])} incomplete group(s), "
                        f"{len(result['broken_jobs'])} broken job(s), listed in {Path(root) / 'aggregate.md'}): "
                        "finish it and rerun, or pass --partial to tabulate what is there")
    rows = []
    for group in result["groups"].values():
        names = json.loads((Path(group["jobs"][0]) / "summary.json").read_text())  # the same in every shard
        m, cost, kid = group["metrics"], group["cost"], group["metrics"].get("kid")
        rows.append({"task": names["task"], "sampler": names["sampler"], "prior": names["prior"],
                     "n_samples": group["n_samples"], "n_failed": group["n_failed"],
                     "psnr": _mean(m.get("psnr")), "psnr_sem": (m.get("psnr") or {}).get("sem"),
                     "ssim": _mean(m.get("ssim")), "lpips": _mean(m.get("lpips")), "fid": m.get("fid"),
                     "kid": kid.get("mean") if isinstance(kid, dict) else None,
                     "naive_psnr": _mean(m.get("naive_psnr")), "naive_ssim": _mean(m.get("naive_ssim")),
                     "nfe": cost.get("nfe_per_sample"), "vjp": cost.get("vjp_per_sample"),
                     "s_per_sample": cost.get("seconds_per_sample"),
                     "class_label_policy": group.get("class_label_policy")})
    priors = [r["prior"] for r in rows]
    main = max(set(priors), key=priors.count) if priors else None
    for r in rows:  # e.g. the reference conditional model: `ddpm [tiny_sr4_reference]`
        if r["prior"] != main:
            r["sampler"] = f"{r['sampler']} [{r['prior']}]"
    if not any(r["class_label_policy"] for r in rows):  # unconditional priors: the table as before
        for r in rows:
            del r["class_label_policy"]
    order = {s: k for k, s in enumerate(SAMPLER_ORDER)}
    return sorted(rows, key=lambda r: (r["task"], order.get(r["sampler"], 99), r["sampler"]))


#: what each class label policy tells a class-conditional prior (dps_map.runner.rundir.class_label_policy)
POLICY_MEANING = {"data": "each image's own ImageNet class, information about x0 that the authors' SD2 prior "
                          "(empty prompt) and DPS2022's unconditional prior do not have",
                  "random": "a class drawn at random per measurement, independent of the image"}


def class_policy_lines(rows: list[dict]) -> list[str]:
    """A line naming the class labels the prior was given, when it is class-conditional (none otherwise)."""
    policies = sorted({r["class_label_policy"] for r in rows if r.get("class_label_policy")})
    if not policies:
        return []
    says = "; ".join(f"`{p}`: " + POLICY_MEANING.get(p, f"class {p.split(':')[-1]} for every image")
                     + (" (rows " + ", ".join(f"{r['task']} {r['sampler']}" for r in rows
                                             if r.get("class_label_policy") == p) + ")" if len(policies) > 1 else "")
                     for p in policies)
    return ["", f"Class labels given to the class-conditional prior (`class_label_policy`): {says}."]


def write(rows: list[dict], out: Path, name: str, title: str) -> Path:
    plt = pyplot()
    write_csv(rows, out / f"{name}.csv")
    fmt = lambda v, p=".2f": "n/a" if v is None else format(v, p)  # noqa: E731
    lines = [f"# {title}", "", "PSNR/SSIM/LPIPS: mean over samples (± standard error for PSNR); FID/KID over all "
             "samples of a row (n/a: no Inception/LPIPS weights on this machine). naive: the measurement resized "
             "to the image (bicubic for SR, the masked/blurred image otherwise).", "",
             "| task | sampler | n | PSNR | SSIM | LPIPS | FID | KID | naive PSNR | naive SSIM | NFE | VJPs | s/sample |",
             "|---" * 13 + "|"]
    for r in rows:
        psnr = "n/a" if r["psnr"] is None else f"{r['psnr']:.2f} ± {r['psnr_sem'] or 0:.2f}"
        lines.append(f"| {r['task']} | {r['sampler']} | {r['n_samples']} | {psnr} | {fmt(r['ssim'], '.3f')} | "
                     f"{fmt(r['lpips'], '.3f')} | {fmt(r['fid'], '.1f')} | {fmt(r['kid'], '.4f')} | "
                     f"{fmt(r['naive_psnr'])} | {fmt(r['naive_ssim'], '.3f')} | {fmt(r['nfe'], '.0f')} | "
                     f"{fmt(r['vjp'], '.0f')} | {fmt(r['s_per_sample'], '.1f')} |")
    lines += class_policy_lines(rows)
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sel = [r for r in rows if r["task"] == task and r["psnr"] is not None]
        ax.bar([r["sampler"] for r in sel], [r["psnr"] for r in sel], yerr=[r["psnr_sem"] or 0 for r in sel],
               color="tab:blue", capsize=3)
        if sel and sel[0]["naive_psnr"] is not None:
            ax.axhline(sel[0]["naive_psnr"], color="k", ls=":", label="naive baseline")
            ax.legend(fontsize=8)
        lo = min([r["psnr"] for r in sel] + [sel[0]["naive_psnr"] or 99]) - 2 if sel else 0
        ax.set_ylim(bottom=lo)
        ax.set_title(task, fontsize=10)
        ax.set_ylabel("PSNR (dB)")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    return save_figure(fig, out / f"{name}.png", title)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("experiments/results"))
    parser.add_argument("--name", default="restoration_tiny")
    parser.add_argument("--title", default="Restoration at tiny scale (prior=tiny, 64x64 held-out crops, 50 steps)")
    parser.add_argument("--partial", action="store_true", help="tabulate a sweep with incomplete groups (their "
                        "cells stay empty)")
    args = parser.parse_args(argv)
    try:
        rows = table_rows(args.sweep_dir, partial=args.partial)
    except UserError as err:
        print(f"restoration_table: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)  # 1 for a partial sweep, 2 for anything else (no run directories, ...)
    path = write(rows, args.out, args.name, args.title)
    print(f"wrote {path} and its .csv/.md")


if __name__ == "__main__":
    main()
