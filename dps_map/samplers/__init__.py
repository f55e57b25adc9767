"""Samplers, one file per method. `build_sampler(cfg)` builds the class a dps_map/conf/sampler/*.yaml names with
`_target_` (docs/extending.md); METHODS maps the `method` names of YAMLs without one."""

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

__all__ = ["Sampler", "Step", "build_sampler", "sampler_class", "sampler_keys", "METHODS", "ADAPTER_METHODS", *(cls.__name__ for cls in METHODS.values())]


def sampler_class(cfg) -> type:
    """The class of a sampler config: its `_target_` (a dotted path: built-ins and user classes alike),
    else METHODS[cfg.method] (YAMLs written before `_target_`)."""
    from ..targets import locate

    where = f"sampler={cfg.get('name')}"
    if cfg.get("_target_"):
        cls = locate(cfg._target_, where)
        if not (isinstance(cls, type) and issubclass(cls, Sampler)):
            raise ConfigError(f"{where}: _target_ '{cfg._target_}' is not a subclass of dps_map.samplers.Sampler")
        return cls
    method = cfg.get("method")
    if method not in METHODS:
        raise ConfigError(f"{where}: no _target_ and unknown method '{method}' (known: {', '.join(sorted(METHODS))})")
    return METHODS[method]


def sampler_keys(cfg) -> set:
    """The keys a sampler config may hold: its class's constructor arguments, plus name, method, _target_."""
    from ..targets import signature_keys

    return {"name", "method", "_target_"} | signature_keys(sampler_class(cfg))


def build_sampler(cfg) -> Sampler:
    """The sampler of a dps_map/conf/sampler/*.yaml: every key except name, method and _target_ is a constructor
    argument (``adapter`` only for the classes that take one)."""
    cls = sampler_class(cfg)
    kwargs = {k: v for k, v in cfg.items() if k not in ("name", "method", "_target_")}
    if "adapter" not in sampler_keys(cfg) and kwargs.pop("adapter", None) is not None:
        raise ConfigError(f"sampler {cfg.name}: method '{cfg.get('method')}' does not use an adapter "
                          f"(use adapter_{cfg.get('method')})")
    from ..targets import call_target

    return call_target(cls, kwargs, f"sampler {cfg.get('name')}")
