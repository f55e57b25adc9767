"""The light-weight conditional score estimator (Xu et al., ICLR 2025, method 2) for one task.

The prior is frozen; only the adapter (adapters/adm_controlnet.py: encoder copy, hint net, zero convs)
learns, with the plain epsilon loss (Ho et al. 2020) on pairs (x0, y = A(x0) + n):

    L = E_{x0, n, t, eps} || eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, y) - eps ||^2

(weighted per t by 1/abar_t, the v-prediction loss, unless ``loss_weight=eps``) with fresh t, eps and
measurement noise (and, for random masks, a fresh mask) at every step. The data
are a FIXED set of ``data.n_images`` images: crops of the scikit-image training photographs (never
the held-out demo photographs), or the first n images (sorted) of an image folder. The export
(``export_path``) holds the EMA weights and metadata (task, operator, prior, data) and a JSON card beside it.
A latent (Stable Diffusion) prior trains a diffusers ControlNet instead (latent_controlnet.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..adapters.adm_controlnet import Adapter, adapter_checkpoint, load_adapter, measurement_hint
from ..config import check_class_label, prepare_perf, resolve_device
from ..config.targets import build_noise, build_prior
from ..data import HELDOUT_PHOTOS
from ..diffusion import Diffusion
from ..errors import ConfigError, MissingFileError
from ..io import absolute_path, atomic_write_json, sha256_file
from ..priors.conditional import ConditionalPrior
from . import latent_controlnet
from .common import (
    loss_fn,
    loss_summary,
    measurement_batch,
    operator_signature,
    prior_weights_id,
    signature_mismatch,
    training_images,
    training_photos,
)
from .trainer import Trainer, num_threads, save_torch

log = logging.getLogger(__name__)


# -- data ---------------------------------------------------------------------------------------
def as_run_data(data_cfg) -> DictConfig:
    """The training data as the runner's data config (kind folder: path, max_images, labels), so the start-up
    checks of class labels are the runner's own (config.check_class_label)."""
    if data_cfg.kind != "folder":
        return OmegaConf.create({"name": f"train_adapter {data_cfg.kind}", "kind": data_cfg.kind})
    return OmegaConf.create({"name": "train_adapter folder", "kind": "folder", "path": data_cfg.root,
                             "max_images": int(data_cfg.n_images), "labels": data_cfg.get("labels")})


def check_training_config(cfg) -> None:
    """Start-up checks before any network is built, with the runner's messages: the training folder exists,
    and a class-conditional prior gets the class label it is told to use (prior.class_label)."""
    data = as_run_data(cfg.data)
    if data.kind == "folder" and not Path(absolute_path(data.path)).is_dir():
        raise MissingFileError(absolute_path(data.path), "folder of training images (data.root)",
                               "your training set: e.g. the first 100 images of a seeded shuffle of ImageNet train, "
                               "as <wnid>/<file> for a class-conditional prior",
                               "data.root=/path/to/images (or paths.train_images / env DPS_MAP_TRAIN_IMAGES)")
    check_class_label(cfg.prior, data)


class ClassLabels:
    """The class labels a class-conditional prior sees during training (prior.class_label): each image's own
    label ('data'), one drawn per training sample ('random'), or one index for all; None for other priors."""

    def __init__(self, prior_cfg, prior, labels: torch.Tensor | None):
        self.choice = prior_cfg.get("class_label") if getattr(prior, "class_cond", False) else None
        self.labels = labels

    def bind(self, prior, idx: torch.Tensor, gen: torch.Generator) -> None:
        if self.choice is None:
            return
        if self.choice == "data":
            prior.set_class_labels(self.labels[idx])
        elif self.choice == "random":
            prior.set_class_labels(torch.randint(0, 1000, (len(idx),), generator=gen))
        else:
            prior.set_class_labels(int(self.choice))

    def describe(self) -> dict | None:
        """What the adapter card records."""
        if self.choice is None:
            return None
        if self.choice == "data":
            return {"source": "folder", "n_labelled": int(self.labels.numel())}
        return {"source": str(self.choice)}


# -- training -----------------------------------------------------------------------------------
def frozen_prior(cfg):
    """The prior the adapter conditions, on cfg.device, with its perf knobs (precision / checkpointing)."""
    device = resolve_device(cfg.device)
    prior = build_prior(cfg.prior, device)
    if prior.kind != "image":
        raise ConfigError("adapters condition image priors (prior=tiny, adm512, adm256_uncond)")
    perf = OmegaConf.to_container(cfg.perf, resolve=True) if cfg.get("perf") is not None else {}
    prepare_perf(perf, device, prior)
    return prior


def signature(cfg) -> dict:
    """What a resumed checkpoint must share with the config: task, prior (name and weights) and data."""
    return {"task": OmegaConf.to_container(cfg.task, resolve=True), "prior": cfg.prior.name,
            "prior_weights": prior_weights_id(cfg.prior),
            "data": OmegaConf.to_container(cfg.data, resolve=True), "hint_width": cfg.hint_width,
            "loss_weight": cfg.loss_weight}


def train(cfg: DictConfig, prior=None) -> dict:
    """Train (or resume) the adapter; returns the last checkpoint dict. ``prior``: a :func:`frozen_prior`
    to reuse (built here if None)."""
    with num_threads(cfg.threads):
        return _train(cfg, prior if prior is not None else frozen_prior(cfg))


def _train(cfg: DictConfig, prior) -> dict:
    device = resolve_device(cfg.device)
    noise = build_noise(cfg.task)
    size, channels = prior.image_size, prior.in_channels
    images, labels = training_images(cfg, size)
    class_labels = ClassLabels(cfg.prior, prior, labels)

    torch.manual_seed(cfg.seed)  # hint-net initialisation
    adapter = Adapter(prior.model, hint_channels=channels + 1, hint_width=cfg.hint_width).to(device).train()
    conditional = ConditionalPrior(prior, adapter)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # batches, flips, measurements, t, noise
    diffusion = Diffusion(prior.betas)
    sig = signature(cfg)
    trainer = Trainer(cfg, adapter, Path(absolute_path(cfg.out_dir)), module_key="adapter", rngs={"rng": gen},
                      meta={"signature": sig, "class_labels": class_labels.describe(),
                            "config": OmegaConf.to_container(cfg, resolve=True)},
                      mismatch=lambda s: signature_mismatch(s["signature"], sig),
                      name=f"train_adapter/{cfg.task.name}/{cfg.prior.name}/n{cfg.data.n_images}")

    def batch_loss() -> torch.Tensor:
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=gen)
        x0 = images[idx]
        class_labels.bind(prior, idx, gen)
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        operator, y = measurement_batch(cfg, noise, x0, gen)
        t = torch.randint(0, diffusion.num_train_steps, (cfg.batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        x_t = diffusion.q_sample(x0, t, eps)
        conditional.hint = measurement_hint(operator, y).to(device)
        eps_hat, _ = conditional.predict(x_t.to(device), t.to(device))
        return loss_fn(cfg, diffusion, eps_hat, eps.to(device), t.to(device))

    return trainer.fit(batch_loss)


# -- export -------------------------------------------------------------------------------------
def export(cfg: DictConfig, state: dict, prior=None) -> dict:
    """Write the EMA adapter (plain tensors + metadata) to export_path and its JSON card beside it.
    ``prior``: the trained-on :func:`frozen_prior` (built here if None)."""
    path = Path(absolute_path(cfg.export_path))
    path.parent.mkdir(parents=True, exist_ok=True)
    prior_file = absolute_path(cfg.prior.checkpoint)
    prior = prior if prior is not None else frozen_prior(cfg)
    adapter = Adapter(prior.model, hint_channels=prior.in_channels + 1, hint_width=cfg.hint_width)
    weights = {k: v.detach().float().cpu().contiguous().clone() if v.dtype.is_floating_point else v.cpu()
               for k, v in state["ema"].items()}
    meta = {
        "task": OmegaConf.to_container(cfg.task, resolve=True),
        "operator": operator_signature(cfg, prior.image_size),
        "prior": {"name": cfg.prior.name, "unet": OmegaConf.to_container(cfg.prior.unet, resolve=True),
                  "checkpoint_sha256": sha256_file(prior_file) if prior_file and Path(prior_file).is_file() else None},
        "data": {**OmegaConf.to_container(cfg.data, resolve=True),
                 **({"photos": list(training_photos(cfg.data)), "heldout_photos": list(HELDOUT_PHOTOS)}
                    if cfg.data.kind == "crops" else {}),
                 **({"class_labels": state["class_labels"]} if state.get("class_labels") else {})},
        "training": {"steps": state["step"], "batch_size": cfg.batch_size, "lr": cfg.lr, "ema_decay": cfg.ema_decay,
                     "loss_weight": cfg.loss_weight,
                     "seed": cfg.seed, "wall_time_s": round(state["wall_time"], 1)},
    }
    save_torch(adapter_checkpoint(adapter, weights, **meta), path)
    loaded, _ = load_adapter(path, prior.model)  # what users load must load
    trainable = sum(p.numel() for p in loaded.parameters())
    tenths = loss_summary(state["losses"])
    card = {"name": path.stem, "description": "ControlNet-style conditional adapter (dps_map/adapters) on a frozen "
                                             f"{cfg.prior.name} prior for task {cfg.task.name}",
            "file": {"name": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
                     "format": "dict(format, hint_channels, hint_width, meta, state_dict); torch.load(weights_only=True)"},
            "parameters": {"adapter": trainable, "prior": sum(p.numel() for p in prior.model.parameters())},
            **meta,
            "loss": {"per_tenth": tenths, "last_10pct_mean": tenths[-1]["mean"] if tenths else None},
            "rebuild": f"python -m dps_map.train_adapter task={cfg.task.name} prior={cfg.prior.name} "
                       f"data.n_images={cfg.data.n_images} steps={cfg.steps}"}
    atomic_write_json(path.with_suffix(".json"), card)
    log.info("exported adapter (%d parameters, sha256 %s) to %s", trainable, card["file"]["sha256"][:12], path)
    return card


def run(cfg: DictConfig) -> dict:
    check_training_config(cfg)  # before any network is built
    if cfg.prior.get("kind") == "latent":  # Stable Diffusion priors: a diffusers ControlNet
        return latent_controlnet.run(cfg)
    prior = frozen_prior(cfg)  # built once for training and export (adm512: 2 GB of weights)
    state = train(cfg, prior)
    return export(cfg, state, prior) if cfg.export_path else {}
