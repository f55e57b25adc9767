"""Samplers, one file per method, by the names the papers use (SAMPLERS). A conf/sampler/*.yaml names
its class with `_target_` (dps_map.config.targets builds it)."""

from __future__ import annotations

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
           "exact": ExactSampler, "oracle": OracleSampler, "psld": PSLDSampler, "freedom": FreeDoMSampler}
#: the presets conf/sampler/adapter*.yaml: a base method run on the conditional prior (the prior plus the adapter
#: their `adapter:` key names, attached by the runner as prior.adapter is: priors.conditional.with_adapter)
ADAPTER_PRESETS = {"adapter": "ddpm", "adapter_dps": "dps", "adapter_dmap": "dmap", "adapter_dsg": "dsg"}
SAMPLERS.update({preset: SAMPLERS[base] for preset, base in ADAPTER_PRESETS.items()})
#: the preset method names (they need an adapter)
ADAPTER_METHODS = tuple(ADAPTER_PRESETS)

__all__ = ["Sampler", "SampleResult", "Step", "Transition", "Denoised", "MeasurementGradient", "SAMPLERS",
           "ADAPTER_METHODS", "ADAPTER_PRESETS", *sorted({cls.__name__ for cls in SAMPLERS.values()})]
