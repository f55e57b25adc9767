"""Reference samplers for the Gaussian-mixture problem, where the posterior is known exactly.

- exact:  i.i.d. draws from the closed-form posterior p(x_0 | y).
- oracle: the DDPM reverse chain driven by the exact conditional score grad log p_t(x_t | y); it
  reproduces the posterior up to discretisation error, so it calibrates what a perfect conditional
  score estimator would achieve with the same chain.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..operators import GaussianNoise, MatrixOperator
from .base import SampleResult
from .ddpm import DDPMSampler


def _posterior_prior(prior, operator, noise, y):
    if not hasattr(prior, "condition") or not isinstance(operator, MatrixOperator) \
            or not isinstance(noise, GaussianNoise):
        raise ConfigError("samplers 'exact' and 'oracle' need prior=gmm with a linear Gaussian task (gmm_linear)")
    return prior.condition(operator.matrix, y[0].reshape(-1), noise.sigma)


class ExactSampler(DDPMSampler):
    name = "exact"

    def run(self, prior, operator, noise, y, shape, generator, hooks=None, x_T=None) -> SampleResult:
        """Closed-form draws: no chain, no network call, no hook."""
        posterior = _posterior_prior(prior, operator, noise, y).mixture.to(generator.device)
        x = posterior.sample(shape[0], generator).to(y.device, y.dtype)
        return SampleResult(x0=x, stats={"forward": 0, "vjp": 0, "nfe": 0, "steps": 0},
                            failed_at=torch.full((shape[0],), -1), last_misfit=torch.full((shape[0],), float("nan")))


class OracleSampler(DDPMSampler):
    name = "oracle"

    def run(self, prior, operator, noise, y, shape, generator, hooks=None, x_T=None) -> SampleResult:
        return super().run(_posterior_prior(prior, operator, noise, y), operator, noise, y, shape,
                           generator, hooks, x_T)
