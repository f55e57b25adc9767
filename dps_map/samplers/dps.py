"""Diffusion Posterior Sampling (Chung et al., ICLR 2023, Alg. 1).

  x'_{t-1} = mu_t(x_t, x0_hat) + sigma_t z
  x_{t-1}  = x'_{t-1} - zeta grad_{x_t} ||y - A(x0_hat(x_t))||_2

The gradient goes through the network (a VJP); zeta is constant (not divided by the residual),
as in the authors' released code (docs/methods.md). With guidance_units='euler' zeta is in the units of
Xu et al.'s SD2 code (run_dps, pipe.py:4121-4133): the VP step is zeta sqrt(abar_t abar_{t-1}) g.
"""

from __future__ import annotations

from .base import Sampler, randn


class DPSSampler(Sampler):
    name = "dps"

    def __init__(self, zeta: float = 1.0, **kw):
        super().__init__(**kw)
        self.zeta = float(zeta)

    def step(self, prior, diffusion, operator, noise, y, x, i, generator, hooks):
        grad, misfit, eps, var, x0 = self.measurement_gradient(prior, diffusion, x, i, operator, noise, y)
        self._record_misfit(misfit)
        z = randn(x.shape, generator, x.dtype, x.device)
        x_sampled, mean, std = diffusion.ddpm_step(self._clip(prior, x0), x, i, z, var)
        x_prev = x_sampled - self.zeta * self.step_factor(diffusion, i, x) * grad
        if hooks:  # no per-step Python work when nobody listens
            self._call_hooks(hooks, i=i, t=int(diffusion.timesteps[i]), x_t=x, x0_hat=x0, eps=eps, grad=grad,
                             mean=mean, std=std, x_prev=x_prev)
        return x_prev

    def implied_eps(self, diffusion, step):
        """The noise prediction this DPS update implies (the paper's 'DPS conditional score'):

            x_{t-1} = mu_t(x_t, eps) - zeta g + sigma_t z = mu_t(x_t, eps_DPS) + sigma_t z
            eps_DPS = eps + zeta g / c_t,  c_t = beta_t / (sqrt(alpha_t) sqrt(1 - abar_t))
            s_DPS   = -eps_DPS / sqrt(1 - abar_t) = s - zeta sqrt(alpha_t) g / beta_t

        computed from a hook's Step (x_t, the mean actually used, g) via Diffusion.eps_from_mean (zeta times
        the units' factor, Diffusion.guidance_factor)."""
        step_size = self.zeta * self.step_factor(diffusion, step.i, step.x_t)
        return diffusion.eps_from_mean(step.x_t, step.i, step.mean - step_size * step.grad)
