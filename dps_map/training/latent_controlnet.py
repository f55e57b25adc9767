"""The conditional estimator on a latent prior as the authors trained it: a diffusers ControlNet copied from
the prior's UNet (priors/latent.py:build_controlnet), reached through ``python -m dps_map.train_adapter`` when
``prior.kind == latent``:

    python -m dps_map.train_adapter prior=sd2_tiny task=sr4 steps=20 batch_size=2 export_path=out/sr4_sd2_tiny

The prior (UNet, VAE) is frozen; the ControlNet learns the eps loss on latents,

    L = E || eps_theta(sqrt(abar_t) E(x0) + sqrt(1 - abar_t) eps, t, naive(y)) - eps ||^2,  y = A(x0) + n,

(per t weighted by 1/abar_t with ``loss_weight=v``, as the adapter), on a fixed set of ``data.n_images``
images, each draw augmented (``augment``): a random square crop of side s * size, s ~ U[crop_scale] (resized
back to size), a horizontal flip with probability 1/2, and colour jitter: brightness, contrast and saturation
factors ~ U[1 - jitter, 1 + jitter] (the paper's recipe: random resized crops, flips, colour jitter; AdamW lr
1e-5, weight decay 1e-2, effective batch 64 = batch_size x accumulate, ~5000 steps). The export is a ControlNet
folder (save_pretrained, safetensors) at ``export_path`` (a trailing ".pt" is dropped) with
``dps_map_card.json`` (task, operator, training) that the adapter samplers check.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from ..config import resolve_device
from ..config.targets import build_noise, build_prior
from ..diffusion import Diffusion
from ..io import absolute_path, atomic_write_json
from ..priors.latent import CARD, LatentControlNetPrior, build_controlnet
from .common import (
    loss_fn,
    loss_summary,
    measurement_batch,
    operator_signature,
    prior_weights_id,
    signature_mismatch,
    training_images,
)
from .trainer import Trainer, num_threads

log = logging.getLogger(__name__)


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


def augmentation(cfg) -> dict:
    """The ``augment`` settings as a plain dict (none: {}, i.e. the defaults of :func:`augment`)."""
    return OmegaConf.to_container(cfg.get("augment") or {}, resolve=True)


def signature(cfg) -> dict:
    """What a resumed checkpoint must share with the config: task, prior (name and weights), data and augmentation."""
    return {"task": OmegaConf.to_container(cfg.task, resolve=True), "prior": cfg.prior.name,
            "prior_weights": prior_weights_id(cfg.prior),
            "data": OmegaConf.to_container(cfg.data, resolve=True), "loss_weight": cfg.loss_weight,
            "augment": augmentation(cfg)}


def train(cfg: DictConfig, prior) -> tuple[dict, torch.nn.Module]:
    """Train (or resume) the ControlNet; returns (the last checkpoint dict, the ControlNet module)."""
    device = resolve_device(cfg.device)
    noise = build_noise(cfg.task)
    images, _ = training_images(cfg, prior.image_size)  # a latent prior takes no class label
    aug = augmentation(cfg)
    crop_scale = tuple(aug.get("crop_scale", (1.0, 1.0)))
    flip, jitter = bool(aug.get("flip", True)), float(aug.get("jitter", 0.0))
    controlnet = build_controlnet(prior).to(device).train().requires_grad_(True)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    diffusion = Diffusion(prior.betas)
    sig = signature(cfg)
    trainer = Trainer(cfg, controlnet, Path(absolute_path(cfg.out_dir)), module_key="controlnet",
                      rngs={"rng": gen}, meta={"signature": sig},
                      mismatch=lambda s: signature_mismatch(s["signature"], sig),
                      name=f"train_controlnet/{cfg.task.name}/{cfg.prior.name}/n{cfg.data.n_images}")

    def batch_loss() -> torch.Tensor:
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=gen)
        x0 = augment(images[idx], gen, crop_scale, flip, jitter)
        operator, y = measurement_batch(cfg, noise, x0, gen)
        conditional = LatentControlNetPrior(prior, controlnet).condition(operator.to(device), y.to(device))
        with torch.no_grad():
            z0 = prior.encode(x0.to(device))
        t = torch.randint(0, diffusion.num_train_steps, (cfg.batch_size,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        z_t = diffusion.q_sample(z0, t.to(device), eps.to(device))
        eps_hat, _ = conditional.predict(z_t, t.to(device))
        return loss_fn(cfg, diffusion, eps_hat, eps.to(device), t.to(device))

    return trainer.fit(batch_loss), controlnet


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
                         "loss_weight": cfg.loss_weight, "augment": augmentation(cfg), "seed": cfg.seed,
                         "wall_time_s": round(state["wall_time"], 1)},
            "parameters": {"controlnet": sum(p.numel() for p in controlnet.parameters()),
                           "prior_unet": sum(p.numel() for p in prior.unet.parameters())},
            "loss": {"per_tenth": tenths, "last_10pct_mean": tenths[-1]["mean"] if tenths else None}}
    atomic_write_json(folder / CARD, card)
    log.info("exported the ControlNet to %s", folder)
    return card


def run(cfg: DictConfig) -> dict:
    with num_threads(cfg.threads):
        prior = build_prior(cfg.prior, resolve_device(cfg.device))
        state, controlnet = train(cfg, prior)
        return export(cfg, state, controlnet, prior) if cfg.export_path else {}
