"""Noise models: how y is drawn from A(x), and the misfit ||y - A(x)|| whose gradient guides sampling.

A noise model is any object with ``sample(Ax, generator) -> y`` and ``misfit(y, Ax) -> (batch,)``. A task
selects one with ``noise: gaussian`` / ``noise: poisson`` (built-ins, arguments sigma_y / poisson_rate
from the task) or with a node ``noise: {_target_: mypkg.MyNoise, arg: ...}`` (any class, e.g. the user's
own; its arguments from the node); dps_map.config.targets.build_noise builds it."""

from __future__ import annotations

import torch

from ..errors import ConfigError


def _flat(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1)


class GaussianNoise:
    """y = A(x) + sigma_y n, n ~ N(0, I); misfit = ||y - A(x)||_2 per sample (the DPS loss, not squared)."""

    def __init__(self, sigma: float = 0.05):
        if sigma < 0:
            raise ConfigError(f"noise sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)

    def sample(self, Ax: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = torch.randn(Ax.shape, generator=generator, dtype=Ax.dtype, device=Ax.device)
        return Ax + self.sigma * n

    def misfit(self, y: torch.Tensor, Ax: torch.Tensor) -> torch.Tensor:
        return _flat(y - Ax).norm(dim=1)


class PoissonNoise:
    """Photon counts at `rate` photons per unit intensity: c ~ Poisson(rate (A(x) + 1) / 2),
    y = 2 c / rate - 1 (back on the [-1, 1] scale). misfit is the Gaussian approximation of the
    Poisson likelihood, a norm weighted by the inverse variance var(y) = 2 (y + 1) / rate:
    ||(y - A(x)) / sqrt(max(2 (y + 1) / rate, 2 / rate))||_2 (the floor avoids division by zero)."""

    def __init__(self, rate: float = 100.0):
        if rate <= 0:
            raise ConfigError(f"poisson rate must be > 0, got {rate}")
        self.rate = float(rate)

    def sample(self, Ax: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        lam = (self.rate * (Ax.clamp(-1, 1) + 1) / 2).clamp(min=0)
        counts = torch.poisson(lam, generator=generator)
        return 2 * counts / self.rate - 1

    def misfit(self, y: torch.Tensor, Ax: torch.Tensor) -> torch.Tensor:
        var = (2 * (y + 1) / self.rate).clamp(min=2 / self.rate)
        return _flat((y - Ax) / var.sqrt()).norm(dim=1)


def gaussian_noise(sigma_y: float = 0.05) -> GaussianNoise:
    """task.noise=gaussian: y = A(x) + sigma_y n."""
    return GaussianNoise(sigma_y)


def poisson_noise(poisson_rate: float = 100.0) -> PoissonNoise:
    """task.noise=poisson: photon counts at poisson_rate photons per unit intensity."""
    return PoissonNoise(poisson_rate)
