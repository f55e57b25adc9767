"""The small ADM prior shipped with dps-map (``prior=tiny``): training and export as package assets.

An unconditional epsilon-prediction model (Ho et al. 2020, "simple" loss: MSE between the network
output and the noise, t uniform over the training steps) on random 64x64 crops of the scikit-image
training photographs (``dps_map.data.TRAIN_PHOTOS``; the held-out demo photographs are never used).
Crops are squares whose side is a log-uniform fraction of the photo's short side, resized with
antialiasing (PIL bicubic) and randomly flipped; they are sampled on the fly from one seeded numpy
generator, so a run is deterministic given the seed and resumes bit for bit from its checkpoint.

Export writes to dps_map/assets/ (``asset_dir``):
  tiny_prior.pt            EMA state dict (plain tensors; torch.load(weights_only=True), strict load
                           into the UNet built from conf/prior/tiny.yaml)
  tiny_prior.json          model card (architecture, schedule, data, optimisation, loss curve, sha256)
  tiny_prior_samples.png   4x4 grid of unconditional ancestral DDPM samples (100 respaced steps)
  tiny_prior_reference.pt  a fixed input, timesteps and the exported model's eps on them
"""

from __future__ import annotations

import io
import logging
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from .. import ASSETS
from ..data import HELDOUT_PHOTOS
from ..diffusion import Diffusion, make_betas
from ..errors import ConfigError, MissingFileError
from ..io import atomic_write_bytes, atomic_write_json, sha256_file
from ..priors.adm import build_unet
from .common import CropSampler, loss_summary, training_photos, unet_flags
from .trainer import CHECKPOINT, Trainer, num_threads, save_torch

log = logging.getLogger(__name__)

WEIGHTS = "tiny_prior.pt"
CARD = "tiny_prior.json"
SAMPLES = "tiny_prior_samples.png"
REFERENCE = "tiny_prior_reference.pt"
#: the fixed input of the reference file: seed, shape and timesteps
REFERENCE_SEED = 1234
REFERENCE_T = (10, 700)


# -- training -----------------------------------------------------------------------------------
def train(cfg: DictConfig) -> dict:
    """Train (or resume) the prior; returns the last checkpoint dict. Writes out_dir/checkpoint.pt."""
    with num_threads(cfg.threads):
        return _train(cfg)


def _train(cfg: DictConfig) -> dict:
    photos = training_photos(cfg.data)
    flags = unet_flags(cfg)
    if flags.get("learn_sigma", False) or flags.get("class_cond", False):
        raise ConfigError("train_prior trains an unconditional eps-only prior (learn_sigma=false, class_cond=false)")

    torch.manual_seed(cfg.seed)  # parameter initialisation
    model = build_unet(flags)
    model.train()
    sampler = CropSampler(photos, flags["image_size"], cfg.data.crop_min, cfg.data.crop_max,
                          cfg.data.min_side, cfg.data.hflip, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # timesteps and noise
    diffusion = Diffusion(make_betas(cfg.prior.noise_schedule, cfg.prior.diffusion_steps))
    trainer = Trainer(cfg, model, Path(cfg.out_dir), module_key="model", rngs={"data_rng": sampler, "torch_rng": gen},
                      meta={"unet_flags": flags, "config": OmegaConf.to_container(cfg, resolve=True),
                            "photos": list(photos)},
                      mismatch=lambda s: None if s["unet_flags"] == flags else "other UNet flags",
                      name=f"train_prior/{cfg.prior.name}", grad_norms=True)

    def batch_loss() -> torch.Tensor:
        x0 = sampler.batch(cfg.batch_size)
        t = torch.randint(0, diffusion.num_train_steps, (cfg.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = diffusion.q_sample(x0, t, noise)  # no respacing: step index == training index
        return F.mse_loss(model(x_t, t), noise)

    return trainer.fit(batch_loss)


# -- export -------------------------------------------------------------------------------------
@torch.no_grad()
def ddpm_samples(model, betas, num: int, size: int, respacing: str, seed: int, clip_x0: bool = True) -> torch.Tensor:
    """Unconditional ancestral DDPM samples (fixed-small variance) from an eps model, drawn with the
    package's own DDPM sampler (the same code path as `sampler=ddpm`)."""
    from ..priors.adm import ADMPrior
    from ..samplers import DDPMSampler

    prior = ADMPrior(model, betas, learn_sigma=False)
    sampler = DDPMSampler(respacing=respacing, variance="fixed_small", clip_x0=clip_x0)
    x = sampler.sample(prior, None, None, None, (num, model.in_channels, size, size),
                       torch.Generator().manual_seed(seed))
    return x.clamp(-1, 1)


def save_grid(images: torch.Tensor, path, nrow: int = 4, pad: int = 2, upscale: int = 2) -> None:
    """Save (N, 3, H, W) images in [-1, 1] as one PNG grid (white padding, nearest upscaling)."""
    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    n, h, w, c = arr.shape
    ncol = math.ceil(n / nrow)
    grid = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for k in range(n):
        r, q = divmod(k, nrow)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = arr[k]
    img = Image.fromarray(grid)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def reference_input(size: int, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(REFERENCE_SEED)
    x = torch.randn(len(REFERENCE_T), channels, size, size, generator=gen)
    return x, torch.tensor(REFERENCE_T, dtype=torch.long)


def export(cfg: DictConfig) -> dict:
    """Write the EMA weights, the model card, a sample grid and the reference eps to asset_dir."""
    with num_threads(cfg.threads):
        return _export(cfg)


def _export(cfg: DictConfig) -> dict:
    ckpt_path = Path(cfg.out_dir) / CHECKPOINT
    if not ckpt_path.exists():
        raise MissingFileError(ckpt_path, "training checkpoint of the tiny prior",
                               "`python -m dps_map.train_prior` (train it first)", "out_dir=/path/to/run")
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    flags = unet_flags(cfg)
    if state["unet_flags"] != flags:
        raise ConfigError(f"checkpoint {ckpt_path} does not match prior.unet flags of this config")
    asset_dir = Path(cfg.asset_dir) if cfg.get("asset_dir") else ASSETS
    asset_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().float().contiguous().clone() for k, v in state["ema"].items()}
    save_torch(weights, asset_dir / WEIGHTS)

    # reload exactly what a user loads, so the reference and samples come from the shipped file
    model = build_unet(flags)
    model.load_state_dict(torch.load(asset_dir / WEIGHTS, map_location="cpu", weights_only=True), strict=True)
    model.eval()
    betas = make_betas(cfg.prior.noise_schedule, cfg.prior.diffusion_steps)
    size = flags["image_size"]

    x, t = reference_input(size, model.in_channels)
    with torch.no_grad():
        eps = model(x, t)
    save_torch({"x": x, "t": t, "eps": eps, "seed": REFERENCE_SEED}, asset_dir / REFERENCE)

    t0 = time.perf_counter()
    samples = ddpm_samples(model, betas, cfg.sample.num, size, str(cfg.sample.respacing), cfg.sample.seed,
                           cfg.sample.clip_x0)
    sample_time = time.perf_counter() - t0
    save_grid(samples, asset_dir / SAMPLES, nrow=int(math.ceil(math.sqrt(cfg.sample.num))))

    tcfg = state["config"]
    losses = state["losses"]
    n_params = sum(p.numel() for p in model.parameters())
    card = {
        "name": "tiny",
        "description": "small unconditional ADM (openai guided_diffusion UNetModel) epsilon-prediction prior on "
                       "64x64 crops of scikit-image's bundled photographs; for demos and tests of dps-map, "
                       "not for benchmarks",
        "files": {
            WEIGHTS: {"sha256": sha256_file(asset_dir / WEIGHTS), "bytes": (asset_dir / WEIGHTS).stat().st_size,
                      "format": "EMA state dict of float32 tensors; torch.load(weights_only=True), strict load "
                                "into build_unet(conf/prior/tiny.yaml unet flags)"},
            REFERENCE: {"sha256": sha256_file(asset_dir / REFERENCE),
                        "content": f"x ~ N(0, I) of shape {list(x.shape)} (torch.Generator seed {REFERENCE_SEED}), "
                                   f"t = {list(REFERENCE_T)}, eps = model(x, t) in eval mode"},
            SAMPLES: {"sha256": sha256_file(asset_dir / SAMPLES)},
        },
        "architecture": {"builder": "guided_diffusion.script_util.create_model", "unet": flags,
                         "parameters": n_params},
        "schedule": {"noise_schedule": cfg.prior.noise_schedule, "diffusion_steps": cfg.prior.diffusion_steps,
                     "beta_start": float(betas[0]), "beta_end": float(betas[-1]), "prediction": "eps",
                     "loss": "mse(eps_hat, eps), t ~ U{0..T-1}"},
        "data": {"source": "skimage.data (bundled photographs)", "train_photos": state["photos"],
                 "heldout_photos": list(HELDOUT_PHOTOS),
                 "crops": {"side": "log-uniform fraction of the short side, clipped to [min_side, short side]",
                           "crop_min": tcfg["data"]["crop_min"], "crop_max": tcfg["data"]["crop_max"],
                           "min_side": tcfg["data"]["min_side"], "resize": f"PIL bicubic (antialiased) to {size}",
                           "hflip": tcfg["data"]["hflip"], "range": "[-1, 1]",
                           "photo_choice": "uniform over photos"}},
        "training": {"steps": state["step"], "batch_size": tcfg["batch_size"], "optimizer": "AdamW",
                     "lr": tcfg["lr"], "lr_schedule": tcfg["lr_schedule"], "lr_final_frac": tcfg["lr_final_frac"],
                     "warmup": tcfg["warmup"], "weight_decay": tcfg["weight_decay"],
                     "adam_betas": tcfg["adam_betas"], "grad_clip": tcfg["grad_clip"],
                     "ema_decay": tcfg["ema_decay"], "ema_warmup": tcfg["ema_warmup"], "seed": tcfg["seed"],
                     "wall_time_s": round(state["wall_time"], 1),
                     "s_per_step": round(state["wall_time"] / max(1, state["step"]), 3),
                     "device": f"cpu ({platform.processor() or platform.machine()}), {tcfg['threads']} threads",
                     "torch": torch.__version__},
        "loss": {"per_tenth": loss_summary(losses), "first_100_mean": float(np.mean(losses[:100])) if losses else None,
                 "last_10pct_mean": loss_summary(losses)[-1]["mean"] if losses else None},
        "samples": {"file": SAMPLES, "num": cfg.sample.num, "sampler": "ancestral DDPM, fixed-small variance",
                    "respacing": str(cfg.sample.respacing), "seed": cfg.sample.seed, "clip_x0": cfg.sample.clip_x0,
                    "wall_time_s": round(sample_time, 1)},
        "rebuild": "make train-tiny-prior  (python -m dps_map.train_prior)",
    }
    atomic_write_json(asset_dir / CARD, card)
    log.info("exported %s (%d params, sha256 %s) to %s", WEIGHTS, n_params, card["files"][WEIGHTS]["sha256"][:12],
             asset_dir)
    return card


def run(cfg: DictConfig) -> None:
    if not cfg.export_only:
        train(cfg)
    if cfg.export_only or cfg.export:
        export(cfg)
