"""FreeDoM: training-free energy-guided sampling with time-travel (Yu et al., ICCV 2023, Alg. 1).

Energy E(x0) = ||y - A(x0)||_2 (on a latent prior the operator is A(D(.)): the decoder is inside E).
At step t (chain index i), repeated R_i times:
  x0_hat   = (x_t - sqrt(1 - abar_t) eps(x_t)) / sqrt(abar_t)
  x'_{t-1} = mu_t(x_t, x0_hat) + sigma_t z                                   (ancestral step)
  x_{t-1}  = x'_{t-1} - rho_t grad_{x_t} E(x0_hat(x_t))                      (energy guidance, eq. 9)
  and, unless it is the last repeat, time-travel back to x_t (re-noise), then the step is redone.
R_i = repeat when i / S lies in [travel_start, travel_end) (the middle of the chain, where the layout is
decided), else 1; repeat=1 is DPS. Cost: one VJP per (repeated) step.

Re-noise (`renoise`):
  forward  x_t = sqrt(alpha_t) x_{t-1} + sqrt(1 - alpha_t) n, one forward step q(x_t | x_{t-1}) of the
           (respaced) chain (eq. 11; Yu et al.'s code, e.g. Face-GD functions/denoising.py:79-81)
  xu       the authors' SD2 run_fdm (pipe.py:4371-4375): the training beta at the loop index applied to the
           Euler latent, then the step redone from sigma_t (Diffusion.euler_renoise): far less noise than a
           forward step, so in effect the guided step is applied twice
  default (null): xu with guidance_units='euler', forward otherwise.
Step size (`rho`):
  constant  rho_t = zeta (times the units' factor, Sampler.step_factor)
  adaptive  rho_t = zeta rms(eps) coef1_t sqrt(1 - abar_t) / sqrt(abar_t) / rms(g), per sample: Yu et al.'s
            rule for guidance without classifier-free guidance (Face-GD functions/denoising.py:67-69, with
            their 0.02 as zeta); their Stable Diffusion rule (SD_style ddim.py:263) scales by the CFG
            correction, which the empty prompt does not have.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Sampler, Transition, flat_norm, randn

RENOISE = ("forward", "xu")
RHO = ("constant", "adaptive")


class FreeDoMSampler(Sampler):
    name = "freedom"

    def __init__(self, zeta: float = 1.0, repeat: int = 2, travel_start: float = 0.3, travel_end: float = 0.7,
                 renoise: str | None = None, rho: str = "constant", **kw):
        super().__init__(**kw)
        if int(repeat) < 1:
            raise ConfigError(f"freedom: repeat must be >= 1, got {repeat}")
        if not 0 <= travel_start <= travel_end <= 1:
            raise ConfigError(f"freedom: need 0 <= travel_start <= travel_end <= 1, got {travel_start}, {travel_end}")
        renoise = renoise or ("xu" if self.guidance_units == "euler" else "forward")
        if renoise not in RENOISE:
            raise ConfigError(f"freedom: renoise must be one of {', '.join(RENOISE)}, got '{renoise}'")
        if rho not in RHO:
            raise ConfigError(f"freedom: rho must be one of {', '.join(RHO)}, got '{rho}'")
        self.zeta, self.repeat = float(zeta), int(repeat)
        self.travel_start, self.travel_end = float(travel_start), float(travel_end)
        self.renoise, self.rho = renoise, rho

    def repeats(self, i: int, num_steps: int) -> int:
        """R_i: `repeat` inside the time-travel window (as a fraction of the chain), else 1."""
        return self.repeat if self.travel_start <= i / num_steps < self.travel_end else 1

    def step_size(self, diffusion, i, eps, grad):
        """rho_t (constant: zeta; adaptive: Yu et al.'s normalised step), per sample."""
        if self.rho == "constant":
            return self.zeta
        def rms(v):
            return flat_norm(v) / v[0].numel() ** 0.5
        return self.zeta * rms(eps) * diffusion.eps_weight_in_mean(i, eps) / rms(grad).clamp_min(torch.finfo(grad.dtype).tiny)

    def step(self, prior, diffusion, operator, noise, y, x, i, generator) -> Transition:
        factor = self.step_factor(diffusion, i, x)
        x_prev = x  # set by every pass; a repeat (r > 0) re-noises the previous pass's x_{t-1}
        for r in range(self.repeats(i, diffusion.num_steps)):
            if r > 0:  # time-travel: back from x_{t-1} to x_t
                n = randn(x.shape, generator, x.dtype, x.device)
                x = diffusion.forward_step(x_prev, i, n) if self.renoise == "forward" else diffusion.euler_renoise(x_prev, i, n)
            g = self.measurement_gradient(prior, diffusion, operator, noise, y, x, i)
            self.record_misfit(g.misfit)
            z = randn(x.shape, generator, x.dtype, x.device)
            x_sampled, mean, std = diffusion.ddpm_step(self._clip(prior, g.x0_hat), x, i, z, g.var_values)
            x_prev = x_sampled - self.step_size(diffusion, i, g.eps, g.grad) * factor * g.grad
        # the last pass: x is the x_t its network pass read (re-noised when it was a repeat)
        return Transition(x_t=x, x0_hat=g.x0_hat, eps=g.eps, grad=g.grad, mean=mean, std=std, x_prev=x_prev)
