"""Image part of experiments/score_diagnostics.py: SR x4 with the tiny prior (held-out demo crops) or
with adm512 (the ADM-512 pixel setting: ImageNet validation images, a GPU). Each scale's task is the one its
reference was trained on: tiny, `task=sr4` (bicubic, sigma_y = 0.05, as `make train-tiny-reference`);
adm512, SR x4 by avgpool with sigma_y = 0 (openai's upsampler saw area-downsampled clean inputs).

States: x_t = q_sample(x0, t, eps) for each image x0 and fresh eps, with y = A x0 + n drawn as the runner
draws it (same seeds as `python -m dps_map.run`), so (y, x_t) ~ p(y) p_t(x_t | y).
Reference conditional score:
  tiny    a SuperResModel 16 -> 64 trained here on fresh crops of all the training photographs
          (conf/prior/tiny_sr4_reference.yaml, `make train-tiny-reference`): the best conditional model
          we can afford on a CPU, documented as such (its card: dps_map/assets/tiny_sr4_reference.json);
  adm512  openai's 128 -> 512 ADM upsampler (conf/prior/adm128_512_upsampler.yaml).
Both are loaded as ``prior@reference`` through the same loader (dps_map/priors/upsampler.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from dps_map.adapters.adm_controlnet import load_adapter
from dps_map.config import adapter_training_command, check_data, check_prior_checkpoint, compose, resolve_device
from dps_map.config.targets import build_noise, build_prior, build_sampler
from dps_map.errors import MissingFileError, UserError
from dps_map.io import absolute_path
from dps_map.metrics.score import score_error, score_mean
from dps_map.priors.conditional import ConditionalPrior
from dps_map.runner import bind_class_label, load_items, measure
from experiments.score_common import dps_scores, step_indices


def image_config(args):
    """The config of the image scales: SR x4, DPS, the prior, its data and the reference as ``reference``."""

    if args.scale == "tiny":
        over = ["prior=tiny", "data=demo", f"data.per_photo={args.crops // 2}", "+prior@reference=tiny_sr4_reference"]
    else:  # the ADM-512 pixel setting
        # openai's 128->512 upsampler was trained on area-downsampled (block-averaged), clean low-resolution
        # inputs: its score is the reference of p(x | y) only for that y, so the comparison uses SR x4 by
        # avgpool without noise (bicubic y with sigma_y = 0.05 would compare every score with a reference
        # queried off its training distribution). The adapter under test sees the same y.
        over = ["prior=adm512", "data=imagenet_val", f"data.max_images={args.crops}",
                "+prior@reference=adm128_512_upsampler", "task.method=avgpool", "task.sigma_y=0"]
    return compose("task=sr4", "sampler=dps", *over, *args.overrides)


def adapter_path(args, cfg) -> Path:
    """The adapter under test: --adapter, else paths.adapter (MissingFileError naming how to train it)."""
    adapter = Path(absolute_path(args.adapter or cfg.paths.adapter))
    if not adapter.is_file():
        raise MissingFileError(adapter, "adapter under test of the score diagnostics",
                               adapter_training_command("sr4", cfg.prior.name, adapter), "--adapter PATH")
    return adapter


def check(args) -> list[str]:
    """Every file the image scales read, each checked on its own (nothing is built): the prior's and the
    reference's checkpoints, the adapter, the images and their class labels, the sampler's values. Returns
    the problems (one line each)."""
    problems = []
    try:
        cfg = image_config(args)
    except UserError as err:
        return [str(err)]
    for fn in (lambda: check_prior_checkpoint(cfg.prior), lambda: check_prior_checkpoint(cfg.reference),
               lambda: adapter_path(args, cfg), lambda: check_data(cfg.prior, cfg.data),
               lambda: build_sampler(cfg.sampler)):
        try:
            fn()
        except (UserError, TypeError, ValueError) as err:
            problems.append(str(err))
    return problems


def image_rows(args) -> list[dict]:

    cfg = image_config(args)
    device = resolve_device(cfg.device)
    prior = build_prior(cfg.prior, device)
    sampler = build_sampler(cfg.sampler)
    diffusion = sampler.diffusion(prior)
    noise = build_noise(cfg.task)
    models = {}
    adapter = adapter_path(args, cfg)
    models["adapter"] = ConditionalPrior(prior, load_adapter(adapter, prior.model)[0].to(device))
    try:
        models["reference"] = build_prior(cfg.reference, device)
    except MissingFileError as err:
        if args.scale != "tiny":
            raise
        print(f"no reference conditional model ({err}): score errors are skipped")
    scores: dict = {}
    x0_mse: dict = {}  # MSE of each method's denoised estimate x0_hat(x_t) against the true image
    naive_mse = []
    for item in load_items(cfg.data, prior.image_size):
        gen, operator, x0, y = measure(cfg, item, prior.image_size, noise, device)
        label = bind_class_label(cfg, prior, item, gen)  # the image's ImageNet class (adm512), as the runner
        if getattr(models.get("reference"), "class_cond", False):
            models["reference"].set_class_labels(label)  # the 128->512 upsampler: the same class
        naive_mse.append(float((operator.naive(y) - x0).pow(2).mean()))
        x0s, ys = x0.expand(args.num, -1, -1, -1), y.expand(args.num, -1, -1, -1)
        bound = {name: model.condition(operator, y) for name, model in models.items()}  # once per measurement
        for i in step_indices(diffusion.num_steps, 12):
            x_t = diffusion.q_sample(x0s, i, torch.randn(x0s.shape, generator=gen, device=device))
            s_uncond, s_dps = dps_scores(sampler, prior, operator, noise, ys, x_t, i, gen)
            got = {"unconditional": s_uncond, "dps": s_dps}
            with torch.no_grad():
                for name, model in bound.items():
                    eps = model.predict(x_t, diffusion.model_t(i, args.num))[0]
                    got[name] = diffusion.score_from_eps(x_t, i, eps)
            t = int(diffusion.timesteps[i])
            for name, s in got.items():
                scores.setdefault((t, name), []).append(s.cpu())
                x0_hat = diffusion.x0_from_eps(x_t, i, diffusion.eps_from_score(x_t, i, s)).clamp(-1, 1)
                x0_mse.setdefault((t, name), []).append(float((x0_hat - x0s).pow(2).mean()))
    rows = []
    for (t, name), parts in sorted(scores.items()):
        s = torch.cat(parts)
        ref = torch.cat(scores[(t, "reference")]) if (t, "reference") in scores else None
        mean, floor = score_mean(s)
        rows.append({"scale": args.scale, "seed": 0, "t": t, "method": name,
                     "score_error": score_error(s, ref) if ref is not None else float("nan"),
                     "score_mean": mean, "mc_floor": floor, "x0_mse": sum(x0_mse[(t, name)]) / len(x0_mse[(t, name)]),
                     "naive_x0_mse": sum(naive_mse) / len(naive_mse)})
    return rows
