"""Reference samplers for the Gaussian-mixture problem, where the posterior is known exactly.

- exact:  i.i.d. draws from the closed-form posterior p(x_0 | y).
- oracle: the DDPM reverse chain driven by the exact conditional score grad log p_t(x_t | y); it
  reproduces the posterior up to discretisation error, so it calibrates what a perfect conditional
  score estimator would achieve with the same chain.
"""

from __future__ import annotations

import time

import torch

from ..errors import ConfigError
from ..operators import GaussianNoise, MatrixOperator
from .ddpm import DDPMSampler


def _posterior_prior(prior, operator, noise, y):
    if not hasattr(prior, "condition") or not isinstance(operator, MatrixOperator) \
            or not isinstance(noise, GaussianNoise):
        raise ConfigError("samplers 'exact' and 'oracle' need prior=gmm with a linear Gaussian task (gmm_linear)")
    return prior.condition(operator.matrix, y[0].reshape(-1), noise.sigma)


class ExactSampler(DDPMSampler):
    name = "exact"

    def sample(self, prior, operator, noise, y, shape, generator, hooks=None, x_T=None):
        start = time.perf_counter()
        posterior = _posterior_prior(prior, operator, noise, y).mixture.to(generator.device)
        x = posterior.sample(shape[0], generator).to(y.device, y.dtype)
        self.stats = {"forward": 0, "vjp": 0, "nfe": 0, "steps": 0, "seconds": time.perf_counter() - start}
        self._failed_at = torch.full((shape[0],), -1)
        self._last_misfit = torch.full((shape[0],), float("nan"))
        return x


class OracleSampler(DDPMSampler):
    name = "oracle"

    def sample(self, prior, operator, noise, y, shape, generator, hooks=None, x_T=None):
        return super().sample(_posterior_prior(prior, operator, noise, y), operator, noise, y, shape,
                              generator, hooks, x_T)
