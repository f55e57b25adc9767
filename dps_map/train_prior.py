"""Train the small ADM prior shipped with dps-map (``prior=tiny``) and export it as package assets.

    python -m dps_map.train_prior                      # train (resumes from out_dir/checkpoint.pt), then export
    python -m dps_map.train_prior export_only=true     # export the EMA weights of the last checkpoint only

An unconditional epsilon-prediction model (Ho et al. 2020, "simple" loss: MSE between the network
output and the noise, t uniform over the training steps) on random 64x64 crops of the scikit-image
training photographs (``dps_map.data.TRAIN_PHOTOS``; the held-out demo photographs are never used).
Crops are squares whose side is a log-uniform fraction of the photo's short side, resized with
antialiasing (PIL bicubic) and randomly flipped; they are sampled on the fly from one seeded numpy
generator, so a run is deterministic given the seed and resumes bit for bit from its checkpoint.

Export writes to dps_map/assets/ (``asset_dir``):
  tiny_prior.pt            EMA state dict (plain tensors; torch.load(weights_only=True), strict load
                           into the UNet built from dps_map/conf/prior/tiny.yaml)
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
from contextlib import contextmanager
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm import tqdm

from . import ASSETS
from .data import HELDOUT_PHOTOS, TRAIN_PHOTOS, load_photo
from .diffusion import Diffusion, make_betas
from .errors import ConfigError, MissingFileError
from .io import atomic_write_bytes, atomic_write_json, sha256_file
from .priors.adm import build_unet

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "tiny_prior.pt"
CARD = "tiny_prior.json"
SAMPLES = "tiny_prior_samples.png"
REFERENCE = "tiny_prior_reference.pt"
#: the fixed input of the reference file: seed, shape and timesteps
REFERENCE_SEED = 1234
REFERENCE_T = (10, 700)


# -- data ---------------------------------------------------------------------------------------
def training_photos(cfg_data) -> tuple[str, ...]:
    """The photographs the prior is trained on; held-out photographs are refused."""
    photos = tuple(cfg_data.get("photos") or TRAIN_PHOTOS)
    leaked = sorted(set(photos) & set(HELDOUT_PHOTOS))
    if leaked:
        raise ConfigError(f"held-out photographs {leaked} must never be used to train the prior")
    assert not set(photos) & set(HELDOUT_PHOTOS)
    return photos


class CropSampler:
    """Random square crops of a few photographs, resized to size x size, as float tensors in [-1, 1].

    Side = clip(f * short_side, min_side, short_side) with log f ~ U[log crop_min, log crop_max];
    position uniform; photo uniform over the list (so small photos are not drowned by large ones);
    horizontal flip with probability 1/2. All randomness comes from ``self.rng`` (numpy PCG64).
    """

    def __init__(self, photos, size: int, crop_min: float, crop_max: float, min_side: int, hflip: bool,
                 seed: int):
        if not 0 < crop_min <= crop_max <= 1:
            raise ConfigError(f"crop scales must satisfy 0 < crop_min <= crop_max <= 1, got {crop_min}, {crop_max}")
        self.names = tuple(photos)
        self.arrays = [load_photo(n) for n in self.names]
        self.size, self.crop_min, self.crop_max = size, crop_min, crop_max
        self.min_side, self.hflip = min_side, hflip
        self.rng = np.random.default_rng(seed)

    def one(self) -> np.ndarray:
        arr = self.arrays[self.rng.integers(len(self.arrays))]
        h, w = arr.shape[:2]
        short = min(h, w)
        frac = math.exp(self.rng.uniform(math.log(self.crop_min), math.log(self.crop_max)))
        side = int(min(short, max(self.min_side, round(frac * short))))
        top = int(self.rng.integers(h - side + 1))
        left = int(self.rng.integers(w - side + 1))
        crop = Image.fromarray(arr[top:top + side, left:left + side])
        if side != self.size:
            crop = crop.resize((self.size, self.size), Image.BICUBIC)  # PIL filters with support scaled: antialiased
        out = np.asarray(crop, dtype=np.float32)
        if self.hflip and self.rng.random() < 0.5:
            out = out[:, ::-1]
        return out

    def batch(self, n: int) -> torch.Tensor:
        arr = np.stack([self.one() for _ in range(n)])
        return torch.from_numpy(arr / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous().float()

    def get_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


# -- helpers ------------------------------------------------------------------------------------
def lr_at(step: int, cfg) -> float:
    """Learning rate of optimiser step `step` (0-based): linear warmup, then constant or cosine."""
    if cfg.warmup > 0 and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "cosine":
        span = max(1, cfg.steps - cfg.warmup)
        prog = min(1.0, (step - cfg.warmup) / span)
        final = cfg.lr * cfg.lr_final_frac
        return final + 0.5 * (cfg.lr - final) * (1 + math.cos(math.pi * prog))
    raise ConfigError(f"unknown lr_schedule '{cfg.lr_schedule}' (expected 'constant' or 'cosine')")


@torch.no_grad()
def ema_update(ema: dict, module: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * weights, in place (non-float buffers are copied)."""
    for k, v in module.state_dict().items():
        if v.dtype.is_floating_point:
            ema[k].mul_(decay).add_(v, alpha=1 - decay)
        else:
            ema[k].copy_(v)


def resume_state(path: Path, resume: bool, mismatch) -> dict | None:
    """The training checkpoint at ``path`` to resume from, or None to start afresh (no file, or
    resume=false: the file is then overwritten, with a warning). ``mismatch(state)`` says what the
    checkpoint was trained with that this config does not match (None if it fits): refused."""
    if not path.exists():
        return None
    if not resume:
        log.warning("resume=false: overwriting %s", path)
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    why = mismatch(state)
    if why:
        raise ConfigError(f"checkpoint {path} was trained with {why}; use another out_dir or resume=false")
    log.info("resumed from %s at step %d", path, state["step"])
    return state


def ema_decay_at(step: int, cfg) -> float:
    if cfg.ema_warmup:
        return min(cfg.ema_decay, (1 + step) / (10 + step))
    return cfg.ema_decay


def _save_torch(obj, path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _unet_flags(cfg) -> dict:
    return OmegaConf.to_container(cfg.prior.unet, resolve=True)


def loss_summary(losses, parts: int = 10) -> list[dict]:
    """Mean loss per 1/parts of training: [{'steps': [a, b), 'mean': m}, ...]."""
    losses = np.asarray(losses, dtype=np.float64)
    n = len(losses)
    if n == 0:
        return []
    edges = np.linspace(0, n, min(parts, n) + 1).round().astype(int)
    return [{"steps": [int(a), int(b)], "mean": float(losses[a:b].mean())} for a, b in zip(edges[:-1], edges[1:])]


# -- training -----------------------------------------------------------------------------------
@contextmanager
def _num_threads(n: int):
    """torch.set_num_threads(n) for the duration of a block (callers such as tests keep their own setting)."""
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train(cfg: DictConfig) -> dict:
    """Train (or resume) the prior; returns the last checkpoint dict. Writes out_dir/checkpoint.pt."""
    with _num_threads(cfg.threads):
        return _train(cfg)


def _train(cfg: DictConfig) -> dict:
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT
    photos = training_photos(cfg.data)
    flags = _unet_flags(cfg)
    if flags.get("learn_sigma", False) or flags.get("class_cond", False):
        raise ConfigError("train_prior trains an unconditional eps-only prior (learn_sigma=false, class_cond=false)")

    torch.manual_seed(cfg.seed)  # parameter initialisation
    model = build_unet(flags)
    model.train()
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas),
                            weight_decay=cfg.weight_decay)
    sampler = CropSampler(photos, flags["image_size"], cfg.data.crop_min, cfg.data.crop_max,
                          cfg.data.min_side, cfg.data.hflip, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # timesteps and noise
    diffusion = Diffusion(make_betas(cfg.prior.noise_schedule, cfg.prior.diffusion_steps))
    num_t = diffusion.num_train_steps
    step, losses, grad_norms, wall = 0, [], [], 0.0

    state = resume_state(ckpt_path, cfg.resume, lambda s: None if s["unet_flags"] == flags else "other UNet flags")
    if state is not None:
        model.load_state_dict(state["model"], strict=True)
        ema = state["ema"]
        opt.load_state_dict(state["optimizer"])
        sampler.set_state(state["data_rng"])
        gen.set_state(state["torch_rng"])
        step, losses, grad_norms, wall = state["step"], list(state["losses"]), list(state["grad_norms"]), state["wall_time"]

    def checkpoint() -> dict:
        state = {
            "model": model.state_dict(), "ema": ema, "optimizer": opt.state_dict(), "step": step,
            "data_rng": sampler.get_state(), "torch_rng": gen.get_state(), "losses": losses,
            "grad_norms": grad_norms, "wall_time": wall, "unet_flags": flags,
            "config": OmegaConf.to_container(cfg, resolve=True), "photos": list(photos),
        }
        _save_torch(state, ckpt_path)
        return state

    state = None
    if step < cfg.steps:
        bar = tqdm(total=cfg.steps, initial=step, desc="train tiny prior", dynamic_ncols=True,
                   mininterval=float(cfg.progress_mininterval))
        t_session, start = time.perf_counter(), step
        while step < cfg.steps:
            t0 = time.perf_counter()
            x0 = sampler.batch(cfg.batch_size)
            t = torch.randint(0, num_t, (cfg.batch_size,), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            x_t = diffusion.q_sample(x0, t, noise)  # no respacing: step index == training index
            loss = F.mse_loss(model(x_t, t), noise)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            ema_update(ema, model, ema_decay_at(step, cfg))
            step += 1
            losses.append(float(loss.detach()))
            grad_norms.append(float(gnorm))
            wall += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{lr_at(step - 1, cfg):.2e}", refresh=False)
            if step % cfg.log_every == 0 or step == cfg.steps:
                elapsed = time.perf_counter() - t_session
                log.info("step %d/%d loss %.4f (mean of last %d) gnorm %.2f lr %.2e | %.2f s/step",
                         step, cfg.steps, np.mean(losses[-cfg.log_every:]), cfg.log_every,
                         np.mean(grad_norms[-cfg.log_every:]), lr_at(step - 1, cfg), elapsed / (step - start))
            if step % cfg.save_every == 0 or step == cfg.steps:
                state = checkpoint()
        bar.close()
    if state is None:
        state = checkpoint() if not ckpt_path.exists() or step == 0 else \
            torch.load(ckpt_path, map_location="cpu", weights_only=True)
    return state


# -- export -------------------------------------------------------------------------------------
@torch.no_grad()
def ddpm_samples(model, betas, num: int, size: int, respacing: str, seed: int, clip_x0: bool = True) -> torch.Tensor:
    """Unconditional ancestral DDPM samples (fixed-small variance) from an eps model, drawn with the
    package's own DDPM sampler (the same code path as `sampler=ddpm`)."""
    from .priors.adm import ADMPrior
    from .samplers import DDPMSampler

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
    with _num_threads(cfg.threads):
        return _export(cfg)


def _export(cfg: DictConfig) -> dict:
    ckpt_path = Path(cfg.out_dir) / CHECKPOINT
    if not ckpt_path.exists():
        raise MissingFileError(ckpt_path, "training checkpoint of the tiny prior",
                               "`python -m dps_map.train_prior` (train it first)", "out_dir=/path/to/run")
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    flags = _unet_flags(cfg)
    if state["unet_flags"] != flags:
        raise ConfigError(f"checkpoint {ckpt_path} does not match prior.unet flags of this config")
    asset_dir = Path(cfg.asset_dir) if cfg.get("asset_dir") else ASSETS
    asset_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().float().contiguous().clone() for k, v in state["ema"].items()}
    _save_torch(weights, asset_dir / WEIGHTS)

    # reload exactly what a user loads, so the reference and samples come from the shipped file
    model = build_unet(flags)
    model.load_state_dict(torch.load(asset_dir / WEIGHTS, map_location="cpu", weights_only=True), strict=True)
    model.eval()
    betas = make_betas(cfg.prior.noise_schedule, cfg.prior.diffusion_steps)
    size = flags["image_size"]

    x, t = reference_input(size, model.in_channels)
    with torch.no_grad():
        eps = model(x, t)
    _save_torch({"x": x, "t": t, "eps": eps, "seed": REFERENCE_SEED}, asset_dir / REFERENCE)

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
                                "into build_unet(dps_map/conf/prior/tiny.yaml unet flags)"},
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


@hydra.main(version_base="1.3", config_path="conf", config_name="train_prior")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
