"""FreeDoM: training-free energy-guided sampling with time-travel (Yu et al., ICCV 2023, Alg. 1).

Energy E(x0) = ||y - A(x0)||_2 (on a latent prior the operator is A(D(.)): the decoder is inside E).
At step t (chain index i), repeated R_i times:
  x0_hat   = (x_t - sqrt(1 - abar_t) eps(x_t)) / sqrt(abar_t)
  x'_{t-1} = mu_t(x_t, x0_hat) + sigma_t z                                   (ancestral step)
  x_{t-1}  = x'_{t-1} - rho grad_{x_t} E(x0_hat(x_t))                        (energy guidance, eq. 9)
  and, unless it is the last repeat, time-travel back: x_t = sqrt(alpha_t) x_{t-1} + sqrt(1 - alpha_t) n
  (one forward step q(x_t | x_{t-1}) of the (respaced) chain, eq. 11), then the step is redone.
R_i = repeat when i / S lies in [travel_start, travel_end) (the middle of the chain, where the layout is
decided), else 1; repeat=1 is DPS. rho (`zeta`) is constant. Cost: one VJP per (repeated) step.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Sampler, randn


class FreeDoMSampler(Sampler):
    name = "freedom"

    def __init__(self, zeta: float = 1.0, repeat: int = 2, travel_start: float = 0.3, travel_end: float = 0.7, **kw):
        super().__init__(**kw)
        if int(repeat) < 1:
            raise ConfigError(f"freedom: repeat must be >= 1, got {repeat}")
        if not 0 <= travel_start <= travel_end <= 1:
            raise ConfigError(f"freedom: need 0 <= travel_start <= travel_end <= 1, got {travel_start}, {travel_end}")
        self.zeta, self.repeat = float(zeta), int(repeat)
        self.travel_start, self.travel_end = float(travel_start), float(travel_end)

    def repeats(self, i: int, num_steps: int) -> int:
        """R_i: `repeat` inside the time-travel window (as a fraction of the chain), else 1."""
        return self.repeat if self.travel_start <= i / num_steps < self.travel_end else 1

    def step(self, prior, diffusion, operator, noise, y, x, i, generator, hooks):
        beta = diffusion._at("betas", i, x)
        for r in range(self.repeats(i, diffusion.num_steps)):
            if r > 0:  # time-travel: diffuse x_{t-1} one step forward, back to x_t
                x = (1 - beta).sqrt() * x_prev + beta.sqrt() * randn(x.shape, generator, x.dtype, x.device)
            grad, misfit, eps, var, x0 = self.measurement_gradient(prior, diffusion, x, i, operator, noise, y)
            self._record_misfit(misfit)
            z = randn(x.shape, generator, x.dtype, x.device)
            x_sampled, mean, std = diffusion.ddpm_step(self._clip(prior, x0), x, i, z, var)
            x_prev = x_sampled - self.zeta * grad
        if hooks:
            self._call_hooks(hooks, i=i, t=int(diffusion.timesteps[i]), x_t=x, x0_hat=x0, eps=eps, grad=grad,
                             mean=mean, std=std, x_prev=x_prev)
        return x_prev
