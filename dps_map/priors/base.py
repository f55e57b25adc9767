"""The Prior contract (docs/architecture.md).

A prior predicts the noise of a noisy state: ``predict(x_t, t) -> (eps_hat, var_values)`` where ``t``
is the index on the training schedule (LongTensor of shape (B,)) and ``var_values`` are ADM's
learned-variance channels (or None). ``betas`` is the training schedule. Everything derived from
eps (x0_hat, score, transition means) lives in :mod:`dps_map.diffusion`, never here.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


class Prior(nn.Module):
    """Base class for eps-prediction priors."""

    betas: np.ndarray
    learn_sigma: bool = False
    #: what a sample looks like: 'image' (C, H, W in [-1, 1]) or 'vector' (d,)
    kind: str = "image"
    #: a conditional model eps(x_t, t | y) (e.g. the SR upsamplers): the runner binds each measurement
    #: with ``condition(operator, y)`` before any sampler sees it, so `sampler=ddpm` samples p(x | y)
    needs_measurement: bool = False

    def predict(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noise prediction eps_hat(x_t, t)."""
        return self.predict(x_t, t)[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def sampling_operator(self, operator):
        """The operator the samplers see (A itself; a latent prior composes A with its decoder)."""
        return operator

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Images from the chain's final state (the identity; a latent prior decodes z)."""
        return x

    def configure_perf(self, **knobs) -> "Prior":
        """Performance knobs (conf/perf/default.yaml). Only network priors (ADM) have any; others ignore
        them, with a warning when one is switched on."""
        on = sorted(k for k, v in knobs.items() if v and k not in ("compile_mode", "compile_backend"))
        if on:
            log.warning("prior %s has no network: perf knobs %s are ignored", type(self).__name__, on)
        return self

    def autocast(self, device) -> contextlib.AbstractContextManager:
        """The mixed-precision context of the network call (none for priors without a network)."""
        return contextlib.nullcontext()
