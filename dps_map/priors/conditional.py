"""A conditional prior: the frozen ADM prior plus a trained adapter (docs/methods.md).

``ConditionalPrior(prior, adapter).condition(operator, y)`` binds one measurement; its
``predict(x_t, t)`` is then eps(x_t, t, y) from the adapter-controlled UNet, with the same contract
as any prior, so every sampler (ddpm, dps, dmap, ...) runs on it unchanged.
"""

from __future__ import annotations

import torch

from ..adapters.controlnet import Adapter, controlled_forward, measurement_hint
from ..errors import ConfigError
from .adm import ADMPrior
from .base import Prior


class ConditionalPrior(Prior):
    """eps(x_t, t, y) = frozen UNet with the adapter's residuals (adapters/controlnet.py)."""

    kind = "image"

    def __init__(self, prior: ADMPrior, adapter: Adapter, hint: torch.Tensor | None = None):
        super().__init__()
        if not isinstance(prior, ADMPrior):
            raise ConfigError(f"adapters need an ADM prior, got {type(prior).__name__}")
        adapter.check_compatible(prior.model)
        self.prior, self.adapter, self.hint = prior, adapter, hint
        self.betas, self.learn_sigma = prior.betas, prior.learn_sigma

    @property
    def sample_shape(self):
        return self.prior.sample_shape

    def condition(self, operator, y: torch.Tensor) -> "ConditionalPrior":
        """The same prior bound to measurement y (batch 1, or one per sample)."""
        return ConditionalPrior(self.prior, self.adapter, measurement_hint(operator, y))

    def predict(self, x_t, t):
        if self.hint is None:
            raise ConfigError("a conditional prior needs a measurement: call condition(operator, y) first")
        hint = self.hint.to(x_t.device)
        if hint.shape[0] != x_t.shape[0]:
            hint = hint.expand(x_t.shape[0], *hint.shape[1:])
        labels = self.prior.labels_for(x_t) if self.prior.class_cond else None
        with self.prior.autocast(x_t.device):  # the prior's precision applies to both networks
            residuals, middle = self.adapter(x_t, t, hint, labels)
            out = controlled_forward(self.prior.model, x_t, t, residuals, middle, labels)
        return self.prior.split_output(out.to(x_t.dtype))
