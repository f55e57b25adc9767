"""Noise models: how y is drawn from A(x), and the misfit ||y - A(x)|| whose gradient guides sampling.

A noise model is any object with ``sample(Ax, generator) -> y`` and ``misfit(y, Ax) -> (batch,)``. A task
selects one with ``noise: gaussian`` / ``noise: poisson`` (built-ins, arguments sigma_y / poisson_rate
from the task) or with a node ``noise: {_target_: mypkg.MyNoise, arg: ...}`` (any class, e.g. the user's
own; its arguments from the node). Either way :func:`build_noise` calls the named callable with the keys
of its signature."""

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


#: the built-in noise models by name (`task.noise: gaussian`): the function that builds each; their
#: arguments are keys of the task itself (sigma_y, poisson_rate), as in every task YAML
NOISES = {"gaussian": "dps_map.operators.noise.gaussian_noise", "poisson": "dps_map.operators.noise.poisson_noise"}


def gaussian_noise(sigma_y: float = 0.05) -> GaussianNoise:
    """task.noise=gaussian: y = A(x) + sigma_y n."""
    return GaussianNoise(sigma_y)


def poisson_noise(poisson_rate: float = 100.0) -> PoissonNoise:
    """task.noise=poisson: photon counts at poisson_rate photons per unit intensity."""
    return PoissonNoise(poisson_rate)


def noise_target(cfg):
    """(the callable that builds a task's noise model, the config node holding its arguments):
    `task.noise` names a built-in (its arguments are task keys), or is a node with `_target_` (a class or
    function, e.g. the user's own) and its arguments."""
    from omegaconf import DictConfig

    from ..targets import locate

    where = f"task={cfg.get('name')}"
    spec = cfg.get("noise", "gaussian")
    if isinstance(spec, (dict, DictConfig)):
        if not spec.get("_target_"):
            raise ConfigError(f"{where}: a noise node needs _target_ (the class of the noise model), got keys "
                              f"{', '.join(sorted(spec)) or 'none'}")
        return locate(spec["_target_"], f"{where} noise"), spec
    if spec not in NOISES:
        raise ConfigError(f"{where}: unknown noise model '{spec}' (known: {', '.join(NOISES)}; or a node "
                          "noise: {_target_: mypkg.MyNoise, ...})")
    return locate(NOISES[spec], where), cfg


def builtin_noise_keys() -> set:
    """Task keys of the built-in noise models (sigma_y, poisson_rate): always accepted in a task, so a task
    YAML's noise can be switched on the command line (task.noise=poisson) and the Gaussian-mixture task
    keeps the sigma_y its exact posterior uses."""
    from ..targets import locate, signature_keys

    return set().union(*(signature_keys(locate(t, "noise")) for t in NOISES.values()))


def noise_keys(cfg) -> set | None:
    """The keys a task's noise node may hold (its class's arguments and _target_), or None when
    task.noise names a built-in (its keys are task keys: builtin_noise_keys)."""
    from ..targets import signature_keys

    fn, source = noise_target(cfg)
    return None if source is cfg else {"_target_"} | signature_keys(fn)


def build_noise(cfg):
    """The noise model of a task config: the callable `task.noise` names (a built-in, or a node's
    `_target_`), called with the keys of its signature (from the task, or from the node). The result
    must have `sample(Ax, generator)` and `misfit(y, Ax)`."""
    from ..targets import call_target, config_kwargs

    fn, source = noise_target(cfg)
    noise = call_target(fn, config_kwargs(fn, source), f"task={cfg.get('name')} noise")
    if not all(callable(getattr(noise, m, None)) for m in ("sample", "misfit")):
        raise ConfigError(f"task={cfg.get('name')}: the noise model {type(noise).__name__} needs sample(Ax, generator) "
                          "and misfit(y, Ax) methods")
    return noise
