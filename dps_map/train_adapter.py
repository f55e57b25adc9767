"""Train the light-weight conditional score estimator (Xu et al., ICLR 2025, method 2) for one task.

    python -m dps_map.train_adapter task=sr4 prior=tiny data.n_images=100
    python -m dps_map.train_adapter task=sr4 prior=adm512 data.kind=folder data.root=/data/train100 device=cuda

The prior is frozen; only the adapter (adapters/controlnet.py: encoder copy, hint net, zero convs)
learns, with the plain epsilon loss (Ho et al. 2020) on pairs (x0, y = A(x0) + n):

    L = E_{x0, n, t, eps} || eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, y) - eps ||^2

(weighted per t by 1/abar_t, the v-prediction loss, unless ``loss_weight=eps``) with fresh t, eps and
measurement noise (and, for random masks, a fresh mask) at every step. The data
are a FIXED set of ``data.n_images`` images: crops of the scikit-image training photographs (never
the held-out demo photographs), or the first n images (sorted) of an image folder. AdamW with warmup
and cosine decay, gradient clipping, EMA of the adapter weights, checkpoint + resume from
out_dir/checkpoint.pt, tqdm, optional wandb. The export (``export_path``) holds the EMA weights and
metadata (task, operator, prior, data) and a JSON card beside it.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .adapters.controlnet import Adapter, adapter_checkpoint, load_adapter, measurement_hint
from .config import check_class_label, resolve_device
from .data import HELDOUT_PHOTOS, folder_items
from .diffusion import Diffusion
from .errors import ConfigError, MissingFileError, UserError
from .io import absolute_path, atomic_write_json, prior_weights, sha256_file
from .operators import build_noise, build_operator
from .priors import build_prior
from .priors.conditional import ConditionalPrior
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


# -- data ---------------------------------------------------------------------------------------
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


# -- training -----------------------------------------------------------------------------------
def frozen_prior(cfg):
    """The prior the adapter conditions, on cfg.device, with its perf knobs (autocast / checkpointing)."""
    prior = build_prior(cfg.prior, resolve_device(cfg.device))
    if prior.kind != "image":
        raise ConfigError("adapters condition image priors (prior=tiny, adm512, adm256_uncond)")
    return prior.configure_perf(**cfg.get("perf", {}))


def train(cfg: DictConfig, prior=None) -> dict:
    """Train (or resume) the adapter; returns the last checkpoint dict. ``prior``: a :func:`frozen_prior`
    to reuse (built here if None)."""
    with _num_threads(cfg.threads):
        return _train(cfg, prior if prior is not None else frozen_prior(cfg))


def _train(cfg: DictConfig, prior) -> dict:
    device = resolve_device(cfg.device)
    out_dir = Path(absolute_path(cfg.out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT
    noise = build_noise(cfg.task)
    size, channels = prior.image_size, prior.in_channels
    images, labels = training_images(cfg, size)
    class_labels = ClassLabels(cfg.prior, prior, labels)

    torch.manual_seed(cfg.seed)  # hint-net initialisation
    adapter = Adapter(prior.model, hint_channels=channels + 1, hint_width=cfg.hint_width).to(device).train()
    conditional = ConditionalPrior(prior, adapter)
    params = [p for p in adapter.parameters() if p.requires_grad]
    ema = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # batches, flips, measurements, t, noise
    diffusion = Diffusion(prior.betas)
    step, losses, wall = 0, [], 0.0

    signature = _signature(cfg)
    state = resume_state(ckpt_path, cfg.resume,
                         lambda s: signature_mismatch(s["signature"], signature))
    if state is not None:
        adapter.load_state_dict(state["adapter"], strict=True)
        ema = {k: v.to(device) for k, v in state["ema"].items()}
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"])
        step, losses, wall = state["step"], list(state["losses"]), state["wall_time"]

    def checkpoint() -> dict:
        state = {"adapter": adapter.state_dict(), "ema": ema, "optimizer": opt.state_dict(), "step": step,
                 "rng": gen.get_state(), "losses": losses, "wall_time": wall, "signature": signature,
                 "class_labels": class_labels.describe(), "config": OmegaConf.to_container(cfg, resolve=True)}
        _save_torch(state, ckpt_path)
        return state

    run = _wandb_run(cfg, out_dir)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train adapter {cfg.task.name}/{cfg.prior.name}",
               dynamic_ncols=True, mininterval=float(cfg.progress_mininterval))
    accumulate = int(cfg.get("accumulate", 1))
    if accumulate < 1:
        raise ConfigError(f"accumulate must be >= 1, got {accumulate}")
    while step < cfg.steps:
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss = 0.0
        for _ in range(accumulate):  # effective batch = batch_size x accumulate
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
            micro = loss_fn(cfg, diffusion, eps_hat, eps.to(device), t.to(device)) / accumulate
            micro.backward()
            loss = loss + micro.detach()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        ema_update(ema, adapter, ema_decay_at(step, cfg))
        step += 1
        losses.append(float(loss.detach()))
        wall += time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
        if run is not None:
            run.log({"train/loss": losses[-1], "train/lr": lr_at(step - 1, cfg)}, step=step)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.info("step %d/%d loss %.4f (mean of last %d) | %.2f s/step", step, cfg.steps,
                     np.mean(losses[-cfg.log_every:]), cfg.log_every, wall / max(1, step))
        if step % cfg.save_every == 0 or step == cfg.steps:
            checkpoint()
    bar.close()
    if run is not None:
        run.finish()
    return checkpoint() if not ckpt_path.exists() else torch.load(ckpt_path, map_location="cpu", weights_only=True)


def loss_fn(cfg, diffusion: Diffusion, eps_hat, eps, t) -> torch.Tensor:
    """The epsilon loss, per sample weighted by ``cfg.loss_weight``:
    'eps': 1 (Ho et al. 2020); 'v': 1 / abar_t, i.e. the v-prediction loss (Salimans & Ho 2022).

    With 'eps' an adapter learns slowly to use y at high noise: there eps_hat depends on x0_hat only
    through sqrt(abar_t) (~0.03 at t = 900), so the information it must add is nearly invisible in the
    loss; 'v' weights it up (tiny prior, SR x4, held-out crops, x0 MSE at t = 700 after 500 steps:
    0.164 with 'v', 0.176 with 'eps', 0.266 for the prior alone: a small gain, see README)."""
    per_sample = (eps_hat - eps).pow(2).flatten(1).mean(1)
    if cfg.loss_weight == "eps":
        return per_sample.mean()
    if cfg.loss_weight == "v":
        return (diffusion.v_loss_weight(t, per_sample) * per_sample).mean()
    raise ConfigError(f"loss_weight must be 'eps' or 'v', got '{cfg.loss_weight}'")


def prior_weights_id(prior_cfg) -> str:
    """What identifies the frozen prior's weights, so a checkpoint is never resumed onto other weights
    under the same prior name (e.g. after the tiny prior is retrained): io.weights_id of its checkpoint
    file or model folder, or 'random_init'."""
    return prior_weights(prior_cfg) or f"path:{absolute_path(prior_cfg.get('checkpoint') or prior_cfg.get('path') or '')}"


def _signature(cfg) -> dict:
    """What a resumed checkpoint must share with the config: task, prior (name and weights) and data."""
    return {"task": OmegaConf.to_container(cfg.task, resolve=True), "prior": cfg.prior.name,
            "prior_weights": prior_weights_id(cfg.prior),
            "data": OmegaConf.to_container(cfg.data, resolve=True), "hint_width": cfg.hint_width,
            "loss_weight": cfg.loss_weight}


def signature_mismatch(saved: dict, now: dict) -> str | None:
    """None if a checkpoint's signature fits this config's, else which entries differ (for resume_state);
    scalar entries (prior name, prior weights, ...) with both values."""
    keys = [k for k in dict.fromkeys([*now, *saved]) if saved.get(k) != now.get(k)]
    if not keys:
        return None
    return "another " + ", ".join(k if isinstance(now.get(k), dict) else f"{k} ({saved.get(k)}; now {now.get(k)})"
                                  for k in keys)


def _wandb_run(cfg, out_dir: Path):
    if cfg.logger.name != "wandb":
        return None
    import wandb

    return wandb.init(project=cfg.logger.project, entity=cfg.logger.get("entity"), mode=cfg.logger.mode,
                      dir=str(out_dir), name=f"train_adapter/{cfg.task.name}/{cfg.prior.name}/n{cfg.data.n_images}",
                      group="train_adapter", config=OmegaConf.to_container(cfg, resolve=True))


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
    _save_torch(adapter_checkpoint(adapter, weights, **meta), path)
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
    if cfg.prior.get("kind") == "latent":  # Stable Diffusion priors: a diffusers ControlNet (train_controlnet.py)
        from .train_controlnet import run as run_controlnet

        return run_controlnet(cfg)
    prior = frozen_prior(cfg)  # built once for training and export (adm512: 2 GB of weights)
    state = train(cfg, prior)
    return export(cfg, state, prior) if cfg.export_path else {}


@hydra.main(version_base="1.3", config_path="conf", config_name="train_adapter")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except UserError as err:  # one clear line, no traceback (as dps_map.run)
        print(f"dps-map train_adapter: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
