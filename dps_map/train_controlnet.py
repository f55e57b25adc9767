"""Train the conditional estimator on a latent prior as the authors did: a diffusers ControlNet copied from
the prior's UNet (priors/latent.py:build_controlnet), reached through ``python -m dps_map.train_adapter`` when
``prior.kind == latent``:

    python -m dps_map.train_adapter prior=sd2_tiny task=sr4 steps=20 batch_size=2 export_path=out/sr4_sd2_tiny

The prior (UNet, VAE) is frozen; the ControlNet learns the eps loss on latents,

    L = E || eps_theta(sqrt(abar_t) E(x0) + sqrt(1 - abar_t) eps, t, naive(y)) - eps ||^2,  y = A(x0) + n,

(per t weighted by 1/abar_t with ``loss_weight=v``, as train_adapter), on a fixed set of ``data.n_images``
images, each draw augmented (``augment``): a random square crop of side s * size, s ~ U[crop_scale] (resized
back to size), a horizontal flip with probability 1/2, and colour jitter: brightness, contrast and saturation
factors ~ U[1 - jitter, 1 + jitter] (the paper's recipe: random resized crops, flips, colour jitter; AdamW lr
1e-5, weight decay 1e-2, effective batch 64 = batch_size x accumulate, ~5000 steps). EMA weights, checkpoint and
resume (out_dir/checkpoint.pt) as train_adapter. The export is a ControlNet folder (save_pretrained,
safetensors) at ``export_path`` (a trailing ".pt" is dropped) with ``dps_map_card.json`` (task, operator,
training) that the adapter samplers check.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .config import resolve_device
from .diffusion import Diffusion
from .errors import ConfigError
from .io import absolute_path, atomic_write_json
from .operators import build_noise
from .priors import build_prior
from .priors.latent import CARD, LatentControlNetPrior, build_controlnet
from .train_adapter import (
    loss_fn,
    measurement_batch,
    operator_signature,
    prior_weights_id,
    signature_mismatch,
    training_images,
)
from .train_prior import _num_threads, _save_torch, ema_decay_at, ema_update, loss_summary, lr_at, resume_state

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


def augment(x0: torch.Tensor, gen: torch.Generator, crop_scale=(1.0, 1.0), flip: bool = True,
            jitter: float = 0.0) -> torch.Tensor:
    """Random resized square crops, horizontal flips and colour jitter of images in [-1, 1] (see module doc)."""
    b, _, size, _ = x0.shape
    out = []
    for k in range(b):
        s = float(crop_scale[0] + (crop_scale[1] - crop_scale[0]) * torch.rand((), generator=gen))
        side = max(1, min(size, round(s * size)))
        top, left = (int(torch.randint(0, size - side + 1, (), generator=gen)) for _ in range(2))
        crop = x0[k:k + 1, :, top:top + side, left:left + side]
        if side != size:
            crop = F.interpolate(crop, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        out.append(crop)
    x = torch.cat(out)
    if flip:
        mask = torch.rand(b, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    if jitter > 0:
        def factor():
            return (1 + jitter * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)).to(x.dtype)

        img = (x + 1) / 2
        img = img * factor()                                           # brightness
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        img = mean + factor() * (img - mean)                           # contrast
        gray = (0.299 * img[:, :1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:3]) if img.shape[1] == 3 else img
        img = gray + factor() * (img - gray)                           # saturation
        x = img.clamp(0, 1) * 2 - 1
    return x.clamp(-1, 1)


def _signature(cfg) -> dict:
    return {"task": OmegaConf.to_container(cfg.task, resolve=True), "prior": cfg.prior.name,
            "prior_weights": prior_weights_id(cfg.prior),
            "data": OmegaConf.to_container(cfg.data, resolve=True), "loss_weight": cfg.loss_weight,
            "augment": OmegaConf.to_container(cfg.get("augment") or {}, resolve=True)}


def train(cfg: DictConfig, prior) -> tuple[dict, object]:
    """Train (or resume) the ControlNet; returns (the last checkpoint dict, the ControlNet module)."""
    device = resolve_device(cfg.device)
    out_dir = Path(absolute_path(cfg.out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT
    noise = build_noise(cfg.task)
    images, _ = training_images(cfg, prior.image_size)  # a latent prior takes no class label
    aug = OmegaConf.to_container(cfg.get("augment") or {}, resolve=True)
    controlnet = build_controlnet(prior).to(device).train().requires_grad_(True)
    params = [p for p in controlnet.parameters() if p.requires_grad]
    ema = {k: v.detach().clone() for k, v in controlnet.state_dict().items()}
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    diffusion = Diffusion(prior.betas)
    step, losses, wall = 0, [], 0.0
    state = resume_state(ckpt_path, cfg.resume,
                         lambda s: signature_mismatch(s["signature"], _signature(cfg)))
    if state is not None:
        controlnet.load_state_dict(state["controlnet"], strict=True)
        ema = {k: v.to(device) for k, v in state["ema"].items()}
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"])
        step, losses, wall = state["step"], list(state["losses"]), state["wall_time"]

    def checkpoint() -> dict:
        state = {"controlnet": controlnet.state_dict(), "ema": ema, "optimizer": opt.state_dict(), "step": step,
                 "rng": gen.get_state(), "losses": losses, "wall_time": wall, "signature": _signature(cfg)}
        _save_torch(state, ckpt_path)
        return state

    accumulate = int(cfg.get("accumulate", 1))
    if accumulate < 1:
        raise ConfigError(f"accumulate must be >= 1, got {accumulate}")
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train controlnet {cfg.task.name}/{cfg.prior.name}",
               dynamic_ncols=True, mininterval=float(cfg.progress_mininterval))
    while step < cfg.steps:
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss = 0.0
        for _ in range(accumulate):  # effective batch = batch_size x accumulate
            idx = torch.randint(0, len(images), (cfg.batch_size,), generator=gen)
            x0 = augment(images[idx], gen, tuple(aug.get("crop_scale", (1.0, 1.0))), bool(aug.get("flip", True)),
                         float(aug.get("jitter", 0.0)))
            operator, y = measurement_batch(cfg, noise, x0, gen)
            conditional = LatentControlNetPrior(prior, controlnet).condition(operator.to(device), y.to(device))
            with torch.no_grad():
                z0 = prior.encode(x0.to(device))
            t = torch.randint(0, diffusion.num_train_steps, (cfg.batch_size,), generator=gen)
            eps = torch.randn(z0.shape, generator=gen)
            z_t = diffusion.q_sample(z0, t.to(device), eps.to(device))
            eps_hat, _ = conditional.predict(z_t, t.to(device))
            micro = loss_fn(cfg, diffusion, eps_hat, eps.to(device), t.to(device)) / accumulate
            micro.backward()
            loss = loss + micro.detach()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        ema_update(ema, controlnet, ema_decay_at(step, cfg))
        step += 1
        losses.append(float(loss))
        wall += time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
        if step % cfg.save_every == 0 or step == cfg.steps:
            checkpoint()
    bar.close()
    state = checkpoint() if not ckpt_path.exists() else torch.load(ckpt_path, map_location="cpu", weights_only=True)
    return state, controlnet


def export(cfg: DictConfig, state: dict, controlnet, prior) -> dict:
    """The EMA ControlNet as a diffusers folder (safetensors) with its card (dps_map_card.json)."""
    path = Path(absolute_path(cfg.export_path))
    folder = path.with_suffix("") if path.suffix == ".pt" else path
    controlnet.load_state_dict({k: v.to(next(controlnet.parameters()).device) for k, v in state["ema"].items()})
    controlnet.save_pretrained(folder, safe_serialization=True)
    tenths = loss_summary(state["losses"])
    card = {"description": f"ControlNet (diffusers ControlNetModel.from_unet) on the frozen {cfg.prior.name} prior "
                           f"for task {cfg.task.name}",
            "task": OmegaConf.to_container(cfg.task, resolve=True),
            "operator": operator_signature(cfg, prior.image_size),
            "prior": cfg.prior.name,
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "training": {"steps": state["step"], "batch_size": cfg.batch_size, "accumulate": cfg.get("accumulate", 1),
                         "lr": cfg.lr, "weight_decay": cfg.weight_decay, "ema_decay": cfg.ema_decay,
                         "loss_weight": cfg.loss_weight, "augment": _signature(cfg)["augment"], "seed": cfg.seed,
                         "wall_time_s": round(state["wall_time"], 1)},
            "parameters": {"controlnet": sum(p.numel() for p in controlnet.parameters()),
                           "prior_unet": sum(p.numel() for p in prior.unet.parameters())},
            "loss": {"per_tenth": tenths, "last_10pct_mean": tenths[-1]["mean"] if tenths else None}}
    atomic_write_json(folder / CARD, card)
    log.info("exported the ControlNet to %s", folder)
    return card


def run(cfg: DictConfig) -> dict:
    with _num_threads(cfg.threads):
        prior = build_prior(cfg.prior, resolve_device(cfg.device))
        state, controlnet = train(cfg, prior)
        return export(cfg, state, controlnet, prior) if cfg.export_path else {}
