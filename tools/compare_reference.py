"""Is a retrained tiny SR x4 reference conditional model better than the shipped one? Its x0 error by t.

    python -m tools.compare_reference --candidate PATH [--per-photo 8] [--num 8]

E||x0_hat(x_t, y) - x0||^2/d of the shipped dps_map/assets/tiny_sr4_reference.pt and of the candidate (x0_hat
clipped to [-1, 1], as `python -m experiments.score_diagnostics tiny`) on `--per-photo` crops of each held-out
photograph x `--num` states per t, at the t of the score study, on the same states (y, x_t) for both: the
differences are paired. The score study trusts a reference where its x0 error is below the other models'
(experiments/results/README.md). Writes experiments/results/reference_comparison.{csv,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from dps_map.config import compose
from dps_map.io import sha256_file
from experiments.common import write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SHIPPED_REFERENCE = ROOT / "dps_map" / "assets" / "tiny_sr4_reference.pt"


@torch.no_grad()
def x0_errors(candidate: Path, per_photo: int, num: int) -> tuple[dict, list[float]]:
    """{(t, 'shipped' | 'candidate'): [x0 error per crop]} and the naive (bicubic) error per crop."""
    from dps_map.config import resolve_device
    from dps_map.config.targets import build_noise, build_prior, build_sampler
    from dps_map.runner import load_items, measure
    from experiments.score_diagnostics import step_indices

    cfg = compose("task=sr4", "sampler=dps", "prior=tiny", "data=demo", f"data.per_photo={per_photo}",
                  "+prior@reference=tiny_sr4_reference")
    device = resolve_device("cpu")
    prior = build_prior(cfg.prior, device)  # the chain's diffusion (50 steps), as score_diagnostics tiny
    diffusion = build_sampler(cfg.sampler).diffusion(prior)
    noise = build_noise(cfg.task)
    refs = {}
    for who, path in (("shipped", SHIPPED_REFERENCE), ("candidate", candidate)):
        rcfg = cfg.reference.copy()
        rcfg.checkpoint = str(path)
        refs[who] = build_prior(rcfg, device)
    err: dict = {}
    naive = []
    for item in load_items(cfg.data, prior.image_size):
        gen, operator, x0, y = measure(cfg, item, prior.image_size, noise, device)
        naive.append(float((operator.naive(y) - x0).pow(2).mean()))
        x0s = x0.expand(num, -1, -1, -1)
        bound = {who: m.condition(operator, y) for who, m in refs.items()}
        for i in step_indices(diffusion.num_steps, 12):
            x_t = diffusion.q_sample(x0s, i, torch.randn(x0s.shape, generator=gen, device=device))
            t = int(diffusion.timesteps[i])
            for who, m in bound.items():
                eps = m.predict(x_t, diffusion.model_t(i, num))[0]
                x0_hat = diffusion.x0_from_eps(x_t, i, eps).clamp(-1, 1)
                err.setdefault((t, who), []).append(float((x0_hat - x0s).pow(2).mean()))
    return err, naive


def compare(args) -> tuple[list[dict], str, list[str]]:
    """The rows, the header's note and the table."""
    err, naive = x0_errors(args.candidate, args.per_photo, args.num)
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
             f"{sha256_file(SHIPPED_REFERENCE)[:12]}) and of `{args.candidate}` (sha256 "
             f"{sha256_file(args.candidate)[:12]}), on {2 * args.per_photo} held-out crops x {args.num} states per t "
             "(the t of score_diagnostics tiny), the same (y, x_t) for both (seeded as the runner seeds them): the "
             "differences are paired; mean over crops ± standard error. Lower is better.")
    return rows, extra, lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate", type=Path, default=None, help="the retrained reference's weights (required)")
    parser.add_argument("--per-photo", type=int, default=8, help="crops per held-out photograph")
    parser.add_argument("--num", type=int, default=8, help="states per t and crop, as score_diagnostics tiny")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.candidate is None or not args.candidate.is_file():
        raise SystemExit(f"error: --candidate {args.candidate}: no such file (the retrained tiny_sr4_reference.pt)")
    torch.set_num_threads(1)  # as the committed result was measured
    started = time.perf_counter()
    rows, extra, lines = compare(args)
    title = "A retrained tiny SR x4 reference vs the shipped one: x0 error by t"
    write_result(args.out, "reference_comparison", "tools.compare_reference", argv, title, started, rows, extra, lines)


if __name__ == "__main__":
    main()
