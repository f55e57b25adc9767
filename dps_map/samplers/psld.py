"""PSLD: Posterior Sampling with Latent Diffusion (Rout et al., NeurIPS 2023), DPS plus the "gluing" term.

On a latent prior with decoder D, encoder E and a linear A (with adjoint A^T), from z_t:
  z0_hat   = (z_t - sqrt(1 - abar_t) eps(z_t)) / sqrt(abar_t)
  z'_{t-1} = mu_t(z_t, z0_hat) + sigma_t n                                         (ancestral step)
  x_glued  = A^T y + (I - A^T A) D(z0_hat)        (the measured part from y, the rest from the decoder)
  z_{t-1}  = z'_{t-1} - grad_{z_t} [ zeta ||y - A(D(z0_hat))||_2 + gamma ||z0_hat - E(x_glued)||_2 ]
(Rout et al. eq. 9 / Alg. 2; plain norms and constant weights as in the authors' code, omega = zeta,
gamma = 0.1 there). The gradient is one VJP through the UNet, the decoder and the encoder. On a
pixel prior D = E = I and the gluing term is ||A^T (y - A x0_hat)||.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Sampler, randn


class PSLDSampler(Sampler):
    name = "psld"

    def __init__(self, zeta: float = 1.0, gamma: float = 0.1, **kw):
        super().__init__(**kw)
        self.zeta, self.gamma = float(zeta), float(gamma)

    @staticmethod
    def parts(operator):
        """(A, D, E): a latent prior's DecodedOperator gives its pixel operator and the autoencoder;
        a pixel operator is its own A with D = E = identity."""
        inner = getattr(operator, "operator", operator)
        if not getattr(inner, "linear", False):
            raise ConfigError(f"psld needs a linear operator (its gluing term uses A^T), got {type(inner).__name__}")
        if hasattr(operator, "decode"):
            return inner, operator.decode, operator.encode
        return inner, (lambda z: z), (lambda x: x)

    def step(self, prior, diffusion, operator, noise, y, x, i, generator, hooks):
        A, decode, encode = self.parts(operator)
        t = self.model_t(diffusion, i, x.shape[0], x.device)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps, var = prior.predict(x_in, t)
            z0 = diffusion.x0_from_eps(x_in, i, eps)
            image = decode(z0)
            misfit = noise.misfit(y, A(image))
            glued = A.adjoint(y) + image - A.adjoint(A(image))
            gluing = (z0 - encode(glued)).reshape(x.shape[0], -1).norm(dim=1)
            (grad,) = torch.autograd.grad((self.zeta * misfit + self.gamma * gluing).sum(), x_in)
        self.stats["vjp"] += 1
        self._record_misfit(misfit)
        eps, z0 = eps.detach(), z0.detach()
        var = None if var is None else var.detach()
        z = randn(x.shape, generator, x.dtype, x.device)
        x_sampled, mean, std = diffusion.ddpm_step(self._clip(prior, z0), x, i, z, var)
        x_prev = x_sampled - grad
        if hooks:
            self._call_hooks(hooks, i=i, t=int(diffusion.timesteps[i]), x_t=x, x0_hat=z0, eps=eps, grad=grad,
                             mean=mean, std=std, x_prev=x_prev)
        return x_prev
