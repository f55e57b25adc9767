"""Samplers, one file per method. `build_sampler(cfg)` maps conf/sampler/*.yaml to a class."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Sampler, Step
from .ddpm import DDPMSampler
from .dmap import DMAPSampler
from .dps import DPSSampler
from .dsg import DSGSampler
from .gmm_reference import ExactSampler, OracleSampler

METHODS = {"ddpm": DDPMSampler, "dps": DPSSampler, "dsg": DSGSampler, "dmap": DMAPSampler,
           "exact": ExactSampler, "oracle": OracleSampler}

__all__ = ["Sampler", "Step", "build_sampler", "METHODS", *(cls.__name__ for cls in METHODS.values())]


def build_sampler(cfg) -> Sampler:
    """cfg.method picks the class; every other key except name/adapter is a constructor argument."""
    method = cfg.method
    if method not in METHODS:
        raise ConfigError(f"unknown sampler method '{method}' (known: {sorted(METHODS)})")
    kwargs = {k: v for k, v in cfg.items() if k not in ("name", "method", "adapter")}
    try:
        return METHODS[method](**kwargs)
    except TypeError as err:
        raise ConfigError(f"sampler {cfg.name}: {err}") from err
