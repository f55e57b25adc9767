"""A conditional prior: a frozen prior plus a trained adapter (docs/methods.md, docs/adapters.md).

``with_adapter(prior, path)`` is the one place an adapter attaches to a prior (``prior.adapter=FILE``): an
ADM prior takes a dps-map adapter checkpoint (.pt, :class:`ConditionalPrior`), a latent prior a diffusers
ControlNet folder (``priors.latent.LatentControlNetPrior``). The result is a prior that
``needs_measurement``: the runner binds each measurement with ``condition(operator, y)`` (refused if the
adapter was trained for another operator), and its ``predict(x_t, t)`` is then eps(x_t, t, y), with the same
contract as any prior, so every sampler (ddpm, dps, dmap, dsg, ...) runs on it unchanged.
"""

from __future__ import annotations

import torch

from ..adapters.adm_controlnet import (
    Adapter,
    check_trained_operator,
    controlled_forward,
    load_adapter,
    measurement_hint,
)
from ..errors import ConfigError
from ..io import absolute_path
from .adm import ADMPrior
from .base import Prior


def with_adapter(prior: Prior, path, check_operator: bool = True) -> Prior:
    """The conditional prior of `prior` and the adapter at `path`, loaded once (weights_only=True) onto the
    prior's device: a ControlNet folder for a latent prior, an adapter checkpoint for an ADM prior. A run always
    checks that each measurement's operator is the one the adapter was trained for; ``check_operator=False`` is
    for a study that scores an adapter on another operator on purpose (the score diagnostics at adm512)."""
    path = absolute_path(path)
    if getattr(prior, "kind", None) == "latent":
        from .latent import LatentControlNetPrior, load_controlnet

        controlnet, card = load_controlnet(path)
        device = next(prior.unet.parameters()).device
        return LatentControlNetPrior(prior, controlnet.to(device), adapter_path=path,
                                     trained_operator=card.get("operator") if check_operator else None)
    if not isinstance(prior, ADMPrior):
        raise ConfigError(f"prior.adapter needs an ADM or a latent prior, got {type(prior).__name__}")
    adapter, meta = load_adapter(path, prior.model)
    device = next(prior.model.parameters()).device
    return ConditionalPrior(prior, adapter.to(device), adapter_path=path,
                            trained_operator=meta.get("operator") if check_operator else None)


class ConditionalPrior(Prior):
    """eps(x_t, t, y) = frozen UNet with the adapter's residuals (adapters/adm_controlnet.py)."""

    kind = "image"
    needs_measurement = True

    def __init__(self, prior: ADMPrior, adapter: Adapter, hint: torch.Tensor | None = None,
                 adapter_path=None, trained_operator: dict | None = None):
        super().__init__()
        if not isinstance(prior, ADMPrior):
            raise ConfigError(f"adapters need an ADM prior, got {type(prior).__name__}")
        adapter.check_compatible(prior.model)
        self.prior, self.adapter, self.hint = prior, adapter, hint
        self.adapter_path, self.trained_operator = adapter_path, trained_operator
        self.betas, self.learn_sigma = prior.betas, prior.learn_sigma
        self.image_size, self.class_cond = prior.image_size, prior.class_cond

    @property
    def sample_shape(self):
        return self.prior.sample_shape

    def set_class_labels(self, labels) -> None:
        self.prior.set_class_labels(labels)

    def condition(self, operator, y: torch.Tensor) -> "ConditionalPrior":
        """The same prior bound to measurement y (batch 1, or one per sample); refused for an operator the
        adapter was not trained for."""
        check_trained_operator(self.trained_operator, operator, self.adapter_path)
        return ConditionalPrior(self.prior, self.adapter, measurement_hint(operator, y), self.adapter_path,
                                self.trained_operator)

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
