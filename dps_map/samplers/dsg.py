"""Diffusion with Spherical Gaussian constraint (DSG; Yang et al., ICML 2024).

With g = grad_{x_t} ||y - A(x0_hat(x_t))|| (as DPS), r = sqrt(d) sigma_t, the steepest-descent point
on the sphere d* = -r g / ||g||, the sampled direction d_s = x'_{t-1} - mu_t = sigma_t z:
  m = d_s + w (d* - d_s),   x_{t-1} = mu_t + r m / ||m||.
At the final step sigma_t = 0, so r = 0 and x_{t-1} = mu_t.
guidance_units changes nothing here: the authors' SD2 DSG (run_dsg, pipe.py:5505-5525) works in Euler-ancestral
coordinates x~ = x_t / sqrt(abar_t), where the sphere's radius sqrt(d) sigma_up is r / sqrt(abar_{t-1}) and the
gradient has the direction of g, so mapped back to x_{t-1} it is this step with the same w (docs/methods.md).
"""

from __future__ import annotations

import torch

from .base import Sampler, Transition, flat_norm, project_to_sphere, randn


class DSGSampler(Sampler):
    name = "dsg"

    def __init__(self, w: float = 0.08, **kw):
        super().__init__(**kw)
        if not 0 <= w <= 1:
            raise ValueError(f"dsg: mixing weight w must lie in [0, 1], got {w}")
        self.w = float(w)

    def step(self, prior, diffusion, operator, noise, y, x, i, generator) -> Transition:
        g = self.measurement_gradient(prior, diffusion, operator, noise, y, x, i)
        self.record_misfit(g.misfit)
        grad = g.grad
        z = randn(x.shape, generator, x.dtype, x.device)
        x_sampled, mean, std = diffusion.ddpm_step(self._clip(prior, g.x0_hat), x, i, z, g.var_values)
        radius = flat_norm(std.expand_as(x))  # = sqrt(d) sigma_t for isotropic noise
        d_star = -radius * grad / flat_norm(grad).clamp_min(torch.finfo(x.dtype).tiny)
        d_sample = x_sampled - mean
        x_prev = project_to_sphere(mean + d_sample + self.w * (d_star - d_sample), mean, radius)
        return Transition(x_t=x, x0_hat=g.x0_hat, eps=g.eps, grad=grad, mean=mean, std=std, x_prev=x_prev)
