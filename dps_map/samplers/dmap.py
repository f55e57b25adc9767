"""DMAP: explicit maximisation of the posterior at each diffusion step (Xu et al., ICLR 2025, method 1).

Start from the DDPM sample x_{t-1} = mu_t + sigma_t z, then K times:
  g  = grad_{x_{t-1}} ||y - A(x0_hat(x_{t-1}, t-1))||      (denoiser at t-1; at t on the last step)
  x* = x_{t-1} - zeta g                                     (or one Adam step on the same objective)
  x_{t-1} = mu_t + r (x* - mu_t) / ||x* - mu_t||,  r = sqrt(d) sigma_t   (projection, optional)
The sphere is where a Gaussian sample of the step concentrates, so iterates stay on the noisy-data
manifold. With learned variances r = ||sigma_t||_2 (equal to sqrt(d) sigma_t when isotropic). At the
final step sigma_t = 0: the sphere is the point mu_t and the step returns mu_t (as the authors' code).
Cost per diffusion step: 1 forward + K VJPs.
With guidance_units='euler' zeta is in the units of the authors' SD2 "max" (run_dsg_max, pipe.py:5764-5780):
their step zeta grad_{x~_{t-1}} on x~_{t-1} = x_{t-1} / sqrt(abar_{t-1}) is the VP step zeta abar_{t-1} g.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Sampler, Transition, flat_norm, project_to_sphere, randn


class DMAPSampler(Sampler):
    name = "dmap"

    def __init__(self, zeta: float = 1.0, num_inner: int = 3, optimizer: str = "sgd", project: bool = True,
                 adam_betas=(0.9, 0.999), **kw):
        super().__init__(**kw)
        if num_inner < 0:
            raise ValueError(f"dmap: num_inner must be >= 0, got {num_inner}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"dmap: optimizer must be 'sgd' or 'adam', got '{optimizer}'")
        self.zeta, self.num_inner, self.optimizer, self.project = float(zeta), int(num_inner), optimizer, project
        self.adam_betas = tuple(adam_betas)
        if optimizer == "adam" and self.guidance_units != "vp":
            raise ConfigError("dmap: optimizer=adam has no Euler-units form (the authors' code has no Adam variant): "
                              "use sampler.guidance_units=vp")

    def step(self, prior, diffusion, operator, noise, y, x, i, generator) -> Transition:
        d = self.denoise(prior, diffusion, x, i)
        z = randn(x.shape, generator, x.dtype, x.device)
        x_prev, mean, std = diffusion.ddpm_step(self._clip(prior, d.x0_hat), x, i, z, d.var_values)
        radius = flat_norm(std.expand_as(x))
        grad = None
        if self.project and i == 0:
            x_prev = mean  # radius 0: the sphere is its centre
        elif self.num_inner > 0:
            factor = diffusion.inner_guidance_factor(self.guidance_units, i, x)
            x_prev, grad = self._maximise(prior, diffusion, operator, noise, y, x_prev, max(i - 1, 0), mean, radius,
                                          factor)
        return Transition(x_t=x, x0_hat=d.x0_hat, eps=d.eps, grad=grad, mean=mean, std=std, x_prev=x_prev)

    def _maximise(self, prior, diffusion, operator, noise, y, x, j, mean, radius, factor=1.0):
        """K gradient (or Adam) steps on ||y - A(x0_hat(x, j))||, each followed by the projection; a gradient
        step is zeta * factor (the units' factor, Diffusion.inner_guidance_factor)."""
        opt = None
        if self.optimizer == "adam":  # state reset at every diffusion step
            x = x.clone()
            opt = torch.optim.Adam([x], lr=self.zeta, betas=self.adam_betas)
        grad = None
        for _ in range(self.num_inner):
            g = self.measurement_gradient(prior, diffusion, operator, noise, y, x, j)
            self.record_misfit(g.misfit)
            grad = g.grad
            with torch.no_grad():
                if opt is None:
                    x_star = x - self.zeta * factor * grad
                else:
                    x.grad = grad
                    opt.step()
                    x_star = x
                new = project_to_sphere(x_star, mean, radius) if self.project else x_star
                if opt is None:
                    x = new
                else:
                    x.copy_(new)
        return x.detach(), grad
