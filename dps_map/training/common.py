"""What several trainers share besides the loop: the training photographs and their crops, the fixed
training set of the conditional trainers, measurements of a batch, the epsilon loss, the signatures a
checkpoint must match to be resumed, and the loss summary of the model cards."""

from __future__ import annotations

import math

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from ..config.targets import build_operator
from ..data import HELDOUT_PHOTOS, TRAIN_PHOTOS, folder_items, load_photo
from ..diffusion import Diffusion
from ..errors import ConfigError
from ..io import absolute_path, prior_weights


# -- data ---------------------------------------------------------------------------------------
def training_photos(cfg_data) -> tuple[str, ...]:
    """The photographs a model is trained on; held-out photographs are refused."""
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


def training_images(cfg, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fixed training set: images (n, C, size, size) in [-1, 1] (bundled crops, or the first n images of
    a folder) and, for a folder, their ImageNet class labels (n,) where every image has one (else None)."""
    n = int(cfg.data.n_images)
    if n < 1:
        raise ConfigError(f"data.n_images must be >= 1, got {n}")
    if cfg.data.kind == "crops":
        d = cfg.data
        crops = CropSampler(training_photos(d), size, d.crop_min, d.crop_max, d.min_side, hflip=False, seed=d.seed)
        return crops.batch(n), None  # the first n crops of the seeded stream: the 25 are inside the 50, inside the 100
    if cfg.data.kind == "folder":
        items = folder_items(absolute_path(cfg.data.root), size, labels=cfg.data.get("labels"))
        if len(items) < n:
            raise ConfigError(f"data.root has {len(items)} readable images, fewer than data.n_images={n}")
        labels = [item.label for item in items[:n]]
        return (torch.stack([item.image for item in items[:n]]),
                None if None in labels else torch.tensor(labels, dtype=torch.long))
    raise ConfigError(f"train_adapter: data.kind must be 'crops' or 'folder', got '{cfg.data.kind}'")


def unet_flags(cfg) -> dict:
    """The prior's UNet flags as a plain dict: what a checkpoint records and is resumed against."""
    return OmegaConf.to_container(cfg.prior.unet, resolve=True)


# -- measurements and loss ----------------------------------------------------------------------
def measurement_batch(cfg, noise, x0: torch.Tensor, gen: torch.Generator):
    """(operator, y) for a training batch: operator drawn from the task (fresh random mask/box/kernel per
    batch), y = A(x0) + n with fresh noise."""
    operator = build_operator(cfg.task, x0.shape[-1], gen)
    y = operator.restrict(noise.sample(operator(x0), gen))
    return operator, y


def operator_signature(cfg, size: int) -> dict:
    """What samplers compare against the operator they meet: class name and scalar parameters."""
    operator = build_operator(cfg.task, size, torch.Generator().manual_seed(0))
    return {"class": type(operator).__name__, **operator.describe()}


def loss_fn(cfg, diffusion: Diffusion, eps_hat, eps, t) -> torch.Tensor:
    """The epsilon loss, per sample weighted by ``cfg.loss_weight``:
    'eps': 1 (Ho et al. 2020); 'v': 1 / abar_t, i.e. the v-prediction loss (Salimans & Ho 2022).

    With 'eps' an adapter learns slowly to use y at high noise: there eps_hat depends on x0_hat only
    through sqrt(abar_t) (~0.03 at t = 900), so the information it must add is nearly invisible in the
    loss; 'v' weights it up (tiny prior, SR x4, held-out crops, x0 MSE at t = 700 after 500 steps:
    0.164 with 'v', 0.176 with 'eps', 0.266 for the prior alone: a small gain, docs/adapters.md)."""
    per_sample = (eps_hat - eps).pow(2).flatten(1).mean(1)
    if cfg.loss_weight == "eps":
        return per_sample.mean()
    if cfg.loss_weight == "v":
        return (diffusion.v_loss_weight(t, per_sample) * per_sample).mean()
    raise ConfigError(f"loss_weight must be 'eps' or 'v', got '{cfg.loss_weight}'")


# -- resume signatures --------------------------------------------------------------------------
def prior_weights_id(prior_cfg) -> str:
    """What identifies the frozen prior's weights, so a checkpoint is never resumed onto other weights
    under the same prior name (e.g. after the tiny prior is retrained): io.weights_id of its checkpoint
    file or model folder, or 'random_init'."""
    return prior_weights(prior_cfg) or f"path:{absolute_path(prior_cfg.get('checkpoint') or prior_cfg.get('path') or '')}"


def signature_mismatch(saved: dict, now: dict) -> str | None:
    """None if a checkpoint's signature fits this config's, else which entries differ (for resume_state);
    scalar entries (prior name, prior weights, ...) with both values."""
    keys = [k for k in dict.fromkeys([*now, *saved]) if saved.get(k) != now.get(k)]
    if not keys:
        return None
    return "another " + ", ".join(k if isinstance(now.get(k), dict) else f"{k} ({saved.get(k)}; now {now.get(k)})"
                                  for k in keys)


# -- model cards --------------------------------------------------------------------------------
def loss_summary(losses, parts: int = 10) -> list[dict]:
    """Mean loss per 1/parts of training: [{'steps': [a, b), 'mean': m}, ...]."""
    losses = np.asarray(losses, dtype=np.float64)
    n = len(losses)
    if n == 0:
        return []
    edges = np.linspace(0, n, min(parts, n) + 1).round().astype(int)
    return [{"steps": [int(a), int(b)], "mean": float(losses[a:b].mean())} for a, b in zip(edges[:-1], edges[1:])]
