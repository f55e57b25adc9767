"""The tiny-scale reference conditional model: an SR x4 diffusion model (openai's ``SuperResModel``
16 -> 64, built by ``sr_create_model`` exactly as the 128 -> 512 upsampler that is the reference at
512) on fresh crops of ALL the training photographs.

It is the reference conditional score of ``experiments/score_diagnostics.py tiny``: the best conditional
model we can afford on a CPU (a full UNet that reads y directly and sees a fresh crop every step, unlike
the adapter's frozen prior and 100 fixed crops). Loss: the epsilon loss of Ho et al. 2020 with the
measurement as the model's ``low_res`` input,

    L = E_{x0, n, t, eps} || eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, y = A x0 + n) - eps ||^2,

with the task's operator and noise (conf/task/sr4.yaml: bicubic x4, sigma_y = 0.05). The export is
the EMA state dict in float16 (half the bytes; it is loaded into the float32 model) and a JSON card beside it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from ..config import resolve_device
from ..config.targets import build_noise, build_operator, build_prior
from ..data import HELDOUT_PHOTOS
from ..diffusion import Diffusion, make_betas
from ..errors import ConfigError
from ..io import absolute_path, atomic_write_json, sha256_file
from ..operators import SuperResolution
from ..priors.upsampler import build_sr_unet
from .common import CropSampler, loss_summary, measurement_batch, training_photos, unet_flags
from .trainer import Trainer, num_threads, save_torch

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict:
    """Train (or resume) the reference; returns the last checkpoint dict (out_dir/checkpoint.pt)."""
    with num_threads(cfg.threads):
        return _train(cfg)


def _train(cfg: DictConfig) -> dict:
    flags = unet_flags(cfg)
    if cfg.prior.kind != "adm_upsampler" or flags["learn_sigma"] or flags["class_cond"]:
        raise ConfigError("train_reference trains an unconditional-class, eps-only SuperResModel "
                          "(prior.kind=adm_upsampler, learn_sigma=false, class_cond=false)")
    device = resolve_device(cfg.device)
    size = int(flags["large_size"])
    probe = build_operator(cfg.task, size, torch.Generator())
    if not isinstance(probe, SuperResolution) or size // probe.factor != flags["small_size"]:
        raise ConfigError(f"the reference SuperResModel maps {flags['small_size']} -> {size}: it needs an SR "
                          f"x{size // flags['small_size']} task, not task={cfg.task.name}")

    torch.manual_seed(cfg.seed)  # parameter initialisation
    model = build_sr_unet(flags).to(device).train()
    crops = CropSampler(training_photos(cfg.data), size, cfg.data.crop_min, cfg.data.crop_max, cfg.data.min_side,
                        cfg.data.hflip, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # t, eps and measurement noise
    noise = build_noise(cfg.task)
    diffusion = Diffusion(make_betas(cfg.prior.noise_schedule, cfg.prior.diffusion_steps))
    task = OmegaConf.to_container(cfg.task, resolve=True)
    trainer = Trainer(cfg, model, Path(absolute_path(cfg.out_dir)), module_key="model",
                      rngs={"data_rng": crops, "torch_rng": gen},
                      meta={"unet_flags": flags, "task": task, "config": OmegaConf.to_container(cfg, resolve=True)},
                      mismatch=lambda s: None if (s["unet_flags"], s["task"]) == (flags, task)
                      else "other flags or another task",
                      name=f"train_reference/{cfg.task.name}/{cfg.prior.name}")

    def batch_loss() -> torch.Tensor:
        x0 = crops.batch(cfg.batch_size)
        _, y = measurement_batch(cfg, noise, x0, gen)
        t = torch.randint(0, diffusion.num_train_steps, (cfg.batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        x_t = diffusion.q_sample(x0, t, eps)
        return F.mse_loss(model(x_t.to(device), t.to(device), low_res=y.to(device)), eps.to(device))

    return trainer.fit(batch_loss)


def export(cfg: DictConfig, state: dict) -> dict:
    """Write the EMA weights (float16) to export_path, check they load through the prior loader, and
    write the JSON card beside them."""
    path = Path(absolute_path(cfg.export_path))
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().half().contiguous().clone() if v.dtype.is_floating_point else v.cpu()
               for k, v in state["ema"].items()}
    save_torch(weights, path)
    loaded = build_prior(OmegaConf.merge(cfg.prior, {"checkpoint": str(path)}))  # what users load must load
    card = {"name": path.stem,
            "description": "reference conditional SR x4 diffusion model at tiny scale (openai SuperResModel "
                           "16 -> 64): the reference score of experiments/score_diagnostics.py tiny",
            "file": {"name": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
                     "format": "EMA state dict in float16; torch.load(weights_only=True), strict load into "
                               "sr_create_model(conf/prior/tiny_sr4_reference.yaml unet flags)"},
            "parameters": sum(p.numel() for p in loaded.model.parameters()),
            "architecture": {"builder": "guided_diffusion.script_util.sr_create_model", "unet": unet_flags(cfg)},
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
