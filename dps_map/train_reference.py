"""Train the tiny-scale reference conditional model: an SR x4 diffusion model (openai's ``SuperResModel``
16 -> 64, built by ``sr_create_model`` exactly as the 128 -> 512 upsampler that is the reference at
512) on fresh crops of ALL the training photographs.

    python -m dps_map.train_reference            # make train-tiny-reference; resumes from out_dir

It is the reference conditional score of ``experiments/score_diagnostics.py tiny``: the best conditional
model we can afford on a CPU (a full UNet that reads y directly and sees a fresh crop every step, unlike
the adapter's frozen prior and 100 fixed crops). Loss: the epsilon loss of Ho et al. 2020 with the
measurement as the model's ``low_res`` input,

    L = E_{x0, n, t, eps} || eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, y = A x0 + n) - eps ||^2,

with the task's operator and noise (dps_map/conf/task/sr4.yaml: bicubic x4, sigma_y = 0.05). AdamW, warmup +
cosine, EMA, checkpoint/resume, tqdm. The export is the EMA state dict in float16 (half the bytes; it is
loaded into the float32 model) and a JSON card beside it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .config import resolve_device
from .data import HELDOUT_PHOTOS
from .diffusion import Diffusion, make_betas
from .errors import ConfigError
from .io import absolute_path, atomic_write_json, sha256_file
from .operators import SuperResolution, build_noise, build_operator
from .priors.upsampler import build_sr_unet, build_upsampler_prior
from .train_adapter import measurement_batch
from .train_prior import (
    CropSampler,
    _num_threads,
    _save_torch,
    ema_decay_at,
    ema_update,
    loss_summary,
    lr_at,
    resume_state,
    training_photos,
)

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


def _flags(cfg) -> dict:
    return OmegaConf.to_container(cfg.prior.unet, resolve=True)


def train(cfg: DictConfig) -> dict:
    """Train (or resume) the reference; returns the last checkpoint dict (out_dir/checkpoint.pt)."""
    with _num_threads(cfg.threads):
        return _train(cfg)


def _train(cfg: DictConfig) -> dict:
    flags = _flags(cfg)
    if cfg.prior.kind != "adm_upsampler" or flags["learn_sigma"] or flags["class_cond"]:
        raise ConfigError("train_reference trains an unconditional-class, eps-only SuperResModel "
                          "(prior.kind=adm_upsampler, learn_sigma=false, class_cond=false)")
    device = resolve_device(cfg.device)
    out_dir = Path(absolute_path(cfg.out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT
    size = int(flags["large_size"])
    probe = build_operator(cfg.task, size, torch.Generator())
    if not isinstance(probe, SuperResolution) or size // probe.factor != flags["small_size"]:
        raise ConfigError(f"the reference SuperResModel maps {flags['small_size']} -> {size}: it needs an SR "
                          f"x{size // flags['small_size']} task, not task={cfg.task.name}")

    torch.manual_seed(cfg.seed)  # parameter initialisation
    model = build_sr_unet(flags).to(device).train()
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay)
    crops = CropSampler(training_photos(cfg.data), size, cfg.data.crop_min, cfg.data.crop_max, cfg.data.min_side,
                        cfg.data.hflip, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # t, eps and measurement noise
    noise = build_noise(cfg.task)
    diffusion = Diffusion(make_betas(cfg.prior.noise_schedule, cfg.prior.diffusion_steps))
    step, losses, wall = 0, [], 0.0

    task = OmegaConf.to_container(cfg.task, resolve=True)
    state = resume_state(ckpt_path, cfg.resume, lambda s: None if (s["unet_flags"], s["task"]) == (flags, task)
                         else "other flags or another task")
    if state is not None:
        model.load_state_dict(state["model"], strict=True)
        ema = {k: v.to(device) for k, v in state["ema"].items()}
        opt.load_state_dict(state["optimizer"])
        crops.set_state(state["data_rng"])
        gen.set_state(state["torch_rng"])
        step, losses, wall = state["step"], list(state["losses"]), state["wall_time"]

    def checkpoint() -> dict:
        state = {"model": model.state_dict(), "ema": ema, "optimizer": opt.state_dict(), "step": step,
                 "data_rng": crops.get_state(), "torch_rng": gen.get_state(), "losses": losses, "wall_time": wall,
                 "unet_flags": flags, "task": task,
                 "config": OmegaConf.to_container(cfg, resolve=True)}
        _save_torch(state, ckpt_path)
        return state

    bar = tqdm(total=cfg.steps, initial=step, desc=f"train reference {cfg.prior.name}", dynamic_ncols=True,
               mininterval=float(cfg.progress_mininterval))
    while step < cfg.steps:
        t0 = time.perf_counter()
        x0 = crops.batch(cfg.batch_size)
        _, y = measurement_batch(cfg, noise, x0, gen)
        t = torch.randint(0, diffusion.num_train_steps, (cfg.batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        x_t = diffusion.q_sample(x0, t, eps)
        loss = F.mse_loss(model(x_t.to(device), t.to(device), low_res=y.to(device)), eps.to(device))
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, model, ema_decay_at(step, cfg))
        step += 1
        losses.append(float(loss.detach()))
        wall += time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.info("step %d/%d loss %.4f (mean of last %d) | %.2f s/step", step, cfg.steps,
                     np.mean(losses[-cfg.log_every:]), cfg.log_every, wall / max(1, step))
        if step % cfg.save_every == 0 or step == cfg.steps:
            checkpoint()
    bar.close()
    return torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.exists() else checkpoint()


def export(cfg: DictConfig, state: dict) -> dict:
    """Write the EMA weights (float16) to export_path, check they load through the prior loader, and
    write the JSON card beside them."""
    path = Path(absolute_path(cfg.export_path))
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().half().contiguous().clone() if v.dtype.is_floating_point else v.cpu()
               for k, v in state["ema"].items()}
    _save_torch(weights, path)
    loaded = build_upsampler_prior(cfg.prior, str(path))  # what users load must load
    card = {"name": path.stem,
            "description": "reference conditional SR x4 diffusion model at tiny scale (openai SuperResModel "
                           "16 -> 64): the reference score of experiments/score_diagnostics.py tiny",
            "file": {"name": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
                     "format": "EMA state dict in float16; torch.load(weights_only=True), strict load into "
                               "sr_create_model(dps_map/conf/prior/tiny_sr4_reference.yaml unet flags)"},
            "parameters": sum(p.numel() for p in loaded.model.parameters()),
            "architecture": {"builder": "guided_diffusion.script_util.sr_create_model", "unet": _flags(cfg)},
            "task": OmegaConf.to_container(cfg.task, resolve=True),
            "data": {**OmegaConf.to_container(cfg.data, resolve=True), "photos": list(training_photos(cfg.data)),
                     "heldout_photos": list(HELDOUT_PHOTOS), "stream": "fresh random crops every step"},
            "training": {"steps": state["step"], "batch_size": cfg.batch_size, "lr": cfg.lr, "ema_decay": cfg.ema_decay,
                         "loss": "eps MSE, t uniform", "seed": cfg.seed, "wall_time_s": round(state["wall_time"], 1)},
            "loss": {"per_tenth": loss_summary(state["losses"])},
            "rebuild": f"python -m dps_map.train_reference steps={cfg.steps}"}
    atomic_write_json(path.with_suffix(".json"), card)
    log.info("exported the reference (%d parameters, sha256 %s) to %s", card["parameters"],
             card["file"]["sha256"][:12], path)
    return card


def run(cfg: DictConfig) -> dict:
    state = train(cfg)
    return export(cfg, state) if cfg.export_path else {}


@hydra.main(version_base="1.3", config_path="conf", config_name="train_reference")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
