"""Samplers, one file per method. `build_sampler(cfg)` maps conf/sampler/*.yaml to a class."""

from __future__ import annotations

from ..errors import ConfigError
from .adapter import AdapterDMAPSampler, AdapterDPSSampler, AdapterDSGSampler, AdapterSampler
from .base import Sampler, Step
from .ddpm import DDPMSampler
from .dmap import DMAPSampler
from .dps import DPSSampler
from .dsg import DSGSampler
from .freedom import FreeDoMSampler
from .gmm_reference import ExactSampler, OracleSampler
from .psld import PSLDSampler

METHODS = {"ddpm": DDPMSampler, "dps": DPSSampler, "dsg": DSGSampler, "dmap": DMAPSampler,
           "exact": ExactSampler, "oracle": OracleSampler, "adapter": AdapterSampler,
           "adapter_dps": AdapterDPSSampler, "adapter_dmap": AdapterDMAPSampler, "adapter_dsg": AdapterDSGSampler, "psld": PSLDSampler,
           "freedom": FreeDoMSampler}
#: methods that run on the conditional prior and need `adapter:` (a checkpoint path)
ADAPTER_METHODS = ("adapter", "adapter_dps", "adapter_dmap", "adapter_dsg")

__all__ = ["Sampler", "Step", "build_sampler", "METHODS", "ADAPTER_METHODS", *(cls.__name__ for cls in METHODS.values())]


def build_sampler(cfg) -> Sampler:
    """cfg.method picks the class; every other key except name is a constructor argument
    (``adapter`` only for the adapter methods)."""
    method = cfg.method
    if method not in METHODS:
        raise ConfigError(f"unknown sampler method '{method}' (known: {sorted(METHODS)})")
    kwargs = {k: v for k, v in cfg.items() if k not in ("name", "method")}
    if method not in ADAPTER_METHODS and kwargs.pop("adapter", None) is not None:
        raise ConfigError(f"sampler {cfg.name}: method '{method}' does not use an adapter (use adapter_{method})")
    try:
        return METHODS[method](**kwargs)
    except TypeError as err:
        raise ConfigError(f"sampler {cfg.name}: {err}") from err
