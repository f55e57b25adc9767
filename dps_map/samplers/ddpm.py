"""Unconditional ancestral sampling (Ho et al. 2020, Alg. 2), or DDIM (Song et al. 2021) with eta."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Sampler, Transition, randn


class DDPMSampler(Sampler):
    """x_{t-1} = mu_t(x_t, x0_hat) + sigma_t z; with transition='ddim', the DDIM update with eta.
    Ignores the measurement: the prior alone (and, on a conditional prior, the conditional model)."""

    name = "ddpm"

    def __init__(self, transition: str = "ddpm", eta: float = 0.0, **kw):
        super().__init__(**kw)
        if transition not in ("ddpm", "ddim"):
            raise ConfigError(f"ddpm: transition must be 'ddpm' or 'ddim', got '{transition}'")
        # not `self.transition`: that would hide Sampler.transition (one step from a given x_t)
        self.update, self.eta = transition, eta

    def step(self, prior, diffusion, operator, noise, y, x, i, generator) -> Transition:
        d = self.denoise(prior, diffusion, x, i)
        z = randn(x.shape, generator, x.dtype, x.device)
        x0c = self._clip(prior, d.x0_hat)
        x_prev, mean, std = diffusion.ddpm_step(x0c, x, i, z, d.var_values)
        if self.update == "ddim":
            eps_c = diffusion.eps_from_x0(x, i, x0c)
            x_prev = diffusion.ddim_step(x0c, eps_c, i, z, self.eta)
        return Transition(x_t=x, x0_hat=d.x0_hat, eps=d.eps, grad=None, mean=mean, std=std, x_prev=x_prev)
