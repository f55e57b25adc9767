"""Samplers, one file per method, by the names the papers use (SAMPLERS). A conf/sampler/*.yaml names
its class with `_target_` (dps_map.config.targets builds it)."""

from __future__ import annotations

from .adapter import AdapterDMAPSampler, AdapterDPSSampler, AdapterDSGSampler, AdapterSampler
from .base import Denoised, MeasurementGradient, Sampler, SampleResult, Step, Transition
from .ddpm import DDPMSampler
from .dmap import DMAPSampler
from .dps import DPSSampler
from .dsg import DSGSampler
from .freedom import FreeDoMSampler
from .gmm_reference import ExactSampler, OracleSampler
from .psld import PSLDSampler

#: the built-in samplers by method name
SAMPLERS = {"ddpm": DDPMSampler, "dps": DPSSampler, "dsg": DSGSampler, "dmap": DMAPSampler,
           "exact": ExactSampler, "oracle": OracleSampler, "adapter": AdapterSampler,
           "adapter_dps": AdapterDPSSampler, "adapter_dmap": AdapterDMAPSampler, "adapter_dsg": AdapterDSGSampler, "psld": PSLDSampler,
           "freedom": FreeDoMSampler}
#: methods that run on the conditional prior and need `adapter:` (a checkpoint path)
ADAPTER_METHODS = ("adapter", "adapter_dps", "adapter_dmap", "adapter_dsg")

__all__ = ["Sampler", "SampleResult", "Step", "Transition", "Denoised", "MeasurementGradient", "SAMPLERS",
           "ADAPTER_METHODS", *(cls.__name__ for cls in SAMPLERS.values())]
