"""Start-up checks of a composed config: impossible combinations stop before any model is built."""

from __future__ import annotations

import hashlib

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError

#: keys that do not change what a run computes (excluded from the config digest)
NON_OUTPUT_KEYS = ("hydra", "logger", "progress", "device", "overwrite", "metrics")
NON_OUTPUT_DATA_KEYS = ("num_shards", "shard")


def resolve_device(name: str) -> torch.device:
    """'auto' -> the first CUDA GPU if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=auto or device=cpu")
    return device


def resolved(cfg: DictConfig) -> dict:
    """The config as plain containers, with every interpolation resolved (clear error if one fails)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config: {str(err).splitlines()[0]}") from err


def config_digest(cfg: DictConfig) -> str:
    """sha256 (first 16 hex) of everything that determines a run's samples (shard, logger,
    device and metrics settings excluded, so the shards of one sweep share one digest)."""
    plain = {k: v for k, v in resolved(cfg).items() if k not in NON_OUTPUT_KEYS}
    plain["data"] = {k: v for k, v in plain.get("data", {}).items() if k not in NON_OUTPUT_DATA_KEYS}
    blob = OmegaConf.to_yaml(OmegaConf.create(plain), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for an impossible configuration (before anything is built)."""
    resolved(cfg)
    task, prior, data = cfg.task, cfg.prior, cfg.data
    if cfg.num_samples < 1:
        raise ConfigError(f"num_samples must be >= 1, got {cfg.num_samples}")
    if cfg.get("batch_size") is not None and cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 (or null for all samples at once), got {cfg.batch_size}")
    is_gmm_task = task.operator == "matrix"
    if is_gmm_task != (prior.kind == "gmm") or is_gmm_task != (data.kind == "gmm"):
        raise ConfigError(f"task={task.name}, prior={prior.name} and data={data.name} do not fit together: "
                          "the Gaussian-mixture problem needs task=gmm_linear prior=gmm data=gmm")
    if cfg.sampler.method in ("exact", "oracle") and not is_gmm_task:
        raise ConfigError(f"sampler={cfg.sampler.name} needs the exact posterior: use it with task=gmm_linear")
    if is_gmm_task:
        if not 1 <= task.m:
            raise ConfigError(f"task.m must be >= 1, got {task.m}")
        return
    size = prior.unet.image_size
    if task.operator == "super_resolution" and size % task.factor:
        raise ConfigError(f"task={task.name}: SR factor {task.factor} does not divide the image size {size} "
                          f"of prior={prior.name}")
    if task.operator == "inpaint_box" and not 0 < task.box_fraction < 1:
        raise ConfigError(f"task={task.name}: box_fraction must lie in (0, 1), got {task.box_fraction}")
    if task.operator in ("gaussian_blur", "motion_blur") and task.kernel_size // 2 >= size:
        raise ConfigError(f"task={task.name}: a {task.kernel_size}px kernel is too large for {size}px images "
                          f"(set task.kernel_size below {2 * size})")
    shards = data.get("num_shards", 1)
    if not 0 <= data.get("shard", 0) < shards:
        raise ConfigError(f"data.shard={data.get('shard')} must lie in [0, data.num_shards={shards})")
    if cfg.sampler.get("variance") == "learned_range" and not prior.unet.get("learn_sigma", False):
        raise ConfigError(f"sampler.variance=learned_range needs a prior with learn_sigma (prior={prior.name})")
