"""Diffusion Posterior Sampling (Chung et al., ICLR 2023, Alg. 1).

  x'_{t-1} = mu_t(x_t, x0_hat) + sigma_t z
  x_{t-1}  = x'_{t-1} - zeta grad_{x_t} ||y - A(x0_hat(x_t))||_2

The gradient goes through the network (a VJP); zeta is constant (not divided by the residual),
as in the authors' released code (docs/methods.md). With guidance_units='euler' zeta is in the units of
Xu et al.'s SD2 code (run_dps, pipe.py:4121-4133): the VP step is zeta sqrt(abar_t abar_{t-1}) g.
"""

from __future__ import annotations

from .base import Sampler, Transition, randn


class DPSSampler(Sampler):
    name = "dps"

    def __init__(self, zeta: float = 1.0, **kw):
        super().__init__(**kw)
        self.zeta = float(zeta)

    def step(self, prior, diffusion, operator, noise, y, x, i, generator) -> Transition:
        g = self.measurement_gradient(prior, diffusion, operator, noise, y, x, i)
        self.record_misfit(g.misfit)
        z = randn(x.shape, generator, x.dtype, x.device)
        x_sampled, mean, std = diffusion.ddpm_step(self._clip(prior, g.x0_hat), x, i, z, g.var_values)
        x_prev = x_sampled - self.zeta * self.step_factor(diffusion, i, x) * g.grad
        return Transition(x_t=x, x0_hat=g.x0_hat, eps=g.eps, grad=g.grad, mean=mean, std=std, x_prev=x_prev)

    def likelihood_weight(self, diffusion, i, x):
        """zeta_t of the paper's DPS score, grad log p(y | x_t) ~ -zeta_t g, in the sampler's own step.

        The DDPM mean is mu_t = (x_t + beta_t s) / sqrt(alpha_t) (Ho eq. 11 with eps = -sqrt(1 - abar_t) s), so a
        score shifted by delta_s moves the mean by beta_t delta_s / sqrt(alpha_t). DPS moves the draw by
        -zeta factor_t g (factor_t: 1 in VP units, sqrt(abar_t abar_{t-1}) in Euler units, Diffusion.guidance_factor),
        i.e. delta_s = -zeta factor_t sqrt(alpha_t) g / beta_t: zeta_t = zeta factor_t sqrt(alpha_t) / beta_t."""
        beta = diffusion._at("betas", i, x)
        return self.zeta * self.step_factor(diffusion, i, x) * (1 - beta).sqrt() / beta

    def implied_eps(self, diffusion, step):
        """Xu et al. 2025's "DPS conditional score": the DPS approximation (Chung et al. 2023, Alg. 1 and Thm. 1)
        grad log p_t(x_t | y) ~ grad log p_t(x_t) + grad log p(y | x0_hat(x_t)) with grad log p(y | .) = -zeta_t g,
        in eps units (eps = -sqrt(1 - abar_t) s):

            s_DPS   = s - zeta_t g,   zeta_t = zeta factor_t sqrt(alpha_t) / beta_t   (:meth:`likelihood_weight`)
            eps_DPS = eps_hat + sqrt(1 - abar_t) zeta_t g

        built from the network's eps_hat (step.eps), not from the transition mean: with clip_x0 the mean
        uses the clamped x0_hat, which is a change of the sampler's transition, not of its score, so a
        score read off that mean would differ from eps_hat even at zeta = 0. Without clipping the DDPM
        transition with eps_DPS is exactly the DPS update (mean shifted by -zeta factor_t g)."""
        abar = diffusion._at("alphas_cumprod", step.i, step.x_t)
        return step.eps + (1 - abar).sqrt() * self.likelihood_weight(diffusion, step.i, step.x_t) * step.grad
