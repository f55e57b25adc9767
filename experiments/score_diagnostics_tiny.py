"""Tiny-image-scale part of experiments/score_diagnostics.py (SR x4 on the held-out demo crops).

States: x_t = q_sample(x0, t, eps) for each held-out crop x0 and fresh eps, with y = A x0 + n drawn as
the runner draws it (same seeds as `python -m dps_map.run data=demo`), so (y, x_t) ~ p(y) p_t(x_t | y).
Reference: a conditional model trained on many crops (an adapter trained on ``--reference-n`` crops of
the training photographs with the same recipe; the best conditional model we can afford on a CPU).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dps_map.adapters.controlnet import load_adapter
from dps_map.data import demo_crops
from dps_map.errors import MissingFileError
from dps_map.metrics.score import score_error, score_mean
from dps_map.operators import build_noise, build_operator
from dps_map.priors import build_prior
from dps_map.priors.conditional import ConditionalPrior
from dps_map.run import generator, item_seed
from dps_map.samplers import build_sampler

ROOT = Path(__file__).resolve().parents[1]


def tiny_rows(args) -> list[dict]:
    from experiments.score_diagnostics import compose_config, dps_scores, step_indices

    cfg = compose_config(["task=sr4", "prior=tiny", "data=demo", "sampler=dps", f"data.per_photo={args.crops // 2}"])
    prior = build_prior(cfg.prior)
    sampler = build_sampler(cfg.sampler)
    diffusion = sampler.diffusion(prior)
    noise = build_noise(cfg.task)
    conditionals = {"adapter": Path(args.adapter)}
    if args.reference and Path(args.reference).is_file():
        conditionals["reference"] = Path(args.reference)
    elif args.reference:
        print(f"no reference conditional model at {args.reference}: score errors are skipped "
              f"(train one: python -m dps_map.train_adapter data.n_images={args.reference_n})")
    models = {}
    for name, path in conditionals.items():
        if not path.is_file():
            raise MissingFileError(path, f"{name} adapter", "python -m dps_map.train_adapter task=sr4 prior=tiny",
                                   f"--{name} PATH")
        models[name] = ConditionalPrior(prior, load_adapter(path, prior.model)[0])
    scores: dict = {}
    for item in demo_crops(prior.image_size, args.crops // 2):
        gen = generator(torch.device("cpu"), item_seed(cfg.seed, item.id))
        operator = build_operator(cfg.task, prior.image_size, gen)
        x0 = item.image[None]
        y = operator.restrict(noise.sample(operator(x0), gen))
        x0s, ys = x0.expand(args.num, -1, -1, -1), y.expand(args.num, -1, -1, -1)
        for i in step_indices(diffusion.num_steps, 12):
            x_t = diffusion.q_sample(x0s, i, torch.randn(x0s.shape, generator=gen))
            s_uncond, s_dps = dps_scores(sampler, prior, operator, noise, ys, x_t, i, gen)
            got = {"unconditional": s_uncond, "dps": s_dps}
            with torch.no_grad():
                for name, model in models.items():
                    eps = model.condition(operator, y).predict(x_t, diffusion.model_t(i, args.num))[0]
                    got[name] = diffusion.score_from_eps(x_t, i, eps)
            for name, s in got.items():
                scores.setdefault((int(diffusion.timesteps[i]), name), []).append(s)
    rows = []
    for (t, name), parts in sorted(scores.items()):
        s = torch.cat(parts)
        ref = torch.cat(scores[(t, "reference")]) if (t, "reference") in scores else None
        mean, floor = score_mean(s)
        rows.append({"scale": "tiny", "seed": 0, "t": t, "method": name,
                     "score_error": score_error(s, ref) if ref is not None else float("nan"),
                     "score_mean": mean, "mc_floor": floor})
    return rows
