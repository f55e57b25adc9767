"""Samplers on the conditional prior (Xu et al., ICLR 2025, method 2): the frozen prior plus a trained
adapter (adapters/controlnet.py) estimates the conditional score s(x_t, y) directly.

  adapter       ancestral DDPM on eps(x_t, t, y): the conditional score estimator alone
  adapter_dps   DPS guidance (dps.py) on top of the conditional prior
  adapter_dmap  DMAP (dmap.py) on top of the conditional prior
  adapter_dsg   DSG (dsg.py) on top of the conditional prior (the authors use w = 0.02 there, 0.08 without)

On a latent prior (prior=sd2_*) the adapter is a diffusers ControlNet folder and the conditional prior is
``priors.latent.LatentControlNetPrior``. Each is the base method run on
``ConditionalPrior(prior, adapter).condition(operator, y)``; the
adapter is loaded (weights_only=True) the first time it meets the prior, and refused if it was
trained for another architecture or another forward operator.
"""

from __future__ import annotations

from ..adapters.controlnet import load_adapter
from ..errors import ConfigError
from ..io import absolute_path
from ..priors.conditional import ConditionalPrior
from .ddpm import DDPMSampler
from .dmap import DMAPSampler
from .dps import DPSSampler
from .dsg import DSGSampler


class _OnConditionalPrior:
    """Mixin: run the base sampler on the prior conditioned by the adapter on the measurement y."""

    def __init__(self, adapter=None, **kw):
        super().__init__(**kw)
        if not adapter:
            raise ConfigError(f"sampler {self.name} needs an adapter checkpoint: set sampler.adapter=/path/to/adapter.pt "
                              "(train one with `python -m dps_map.train_adapter`)")
        self.adapter_path = absolute_path(adapter)
        self.adapter_meta: dict = {}
        self._conditional = None

    def conditional(self, prior) -> ConditionalPrior:
        """The conditional prior for this prior (adapter loaded once, on the prior's device)."""
        if self._conditional is None or self._conditional.prior is not prior:
            if getattr(prior, "kind", None) == "latent":  # a diffusers ControlNet folder (priors/latent.py)
                from ..priors.latent import LatentControlNetPrior, load_controlnet

                device = next(prior.unet.parameters()).device
                controlnet, card = load_controlnet(self.adapter_path)
                self.adapter_meta = {"operator": card["operator"]} if "operator" in card else {}
                self._conditional = LatentControlNetPrior(prior, controlnet.to(device))
                return self._conditional
            model = prior.model if hasattr(prior, "model") else None
            if model is None:
                raise ConfigError(f"sampler {self.name} needs an ADM prior, got {type(prior).__name__}")
            adapter, self.adapter_meta = load_adapter(self.adapter_path, model)
            device = next(model.parameters()).device
            self._conditional = ConditionalPrior(prior, adapter.to(device))
        return self._conditional

    def check_operator(self, operator) -> None:
        """Refuse an operator other than the one the adapter was trained for (its hint would mean
        something else)."""
        trained = self.adapter_meta.get("operator")
        operator = getattr(operator, "operator", operator)  # a latent prior's DecodedOperator: its pixel operator
        here = {"class": type(operator).__name__, **operator.describe()}
        if trained is not None and trained != here:
            raise ConfigError(f"adapter '{self.adapter_path}' was trained for operator {trained}, "
                              f"not {here}: train one for this task (python -m dps_map.train_adapter task=...)")

    def run(self, prior, operator, noise, y, shape, generator, hooks=None, x_T=None):
        conditional = self.conditional(prior)
        self.check_operator(operator)
        return super().run(conditional.condition(operator, y), operator, noise, y, shape, generator,
                           hooks=hooks, x_T=x_T)


class AdapterSampler(_OnConditionalPrior, DDPMSampler):
    name = "adapter"


class AdapterDPSSampler(_OnConditionalPrior, DPSSampler):
    name = "adapter_dps"


class AdapterDMAPSampler(_OnConditionalPrior, DMAPSampler):
    name = "adapter_dmap"


class AdapterDSGSampler(_OnConditionalPrior, DSGSampler):
    name = "adapter_dsg"
