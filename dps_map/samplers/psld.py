"""PSLD: Posterior Sampling with Latent Diffusion (Rout et al., NeurIPS 2023), DPS plus the "gluing" term.

On a latent prior with decoder D, encoder E and a linear A, from z_t:
  z0_hat   = (z_t - sqrt(1 - abar_t) eps(z_t)) / sqrt(abar_t)
  z'_{t-1} = mu_t(z_t, z0_hat) + sigma_t n               (ancestral step; transition='ddim': DDIM with eta)
  x_glued  = T y + (I - T A) D(z0_hat)            (the measured part from y, the rest from the decoder)
  z_{t-1}  = z'_{t-1} - f_t grad_{z_t} [ zeta ||y - A(D(z0_hat))||_2 + gamma ||z0_hat - E(x_glued)||_2 ]
(Rout et al. eq. 9 / Alg. 2; plain norms and constant weights as in both PSLD codes). f_t is the units'
factor (1 in VP units; sqrt(abar_t abar_{t-1}) in Euler units, Sampler.step_factor). The gradient is one VJP
through the UNet, the decoder and the encoder. On a pixel prior D = E = I.

T (`gluing`):
  adjoint    the exact adjoint A^T. x_glued is the projection onto {A x = y} only when A A^T = I (masks);
             for antialiased SR A A^T ~ I / f^2 and the gluing removes almost none of the residual.
  transpose  the operator's `transpose`, the map the PSLD code calls "transpose" (nearest upsampling for
             SR, identity for blur, the mask for inpainting; operators/base.py); A T ~ I for SR, so
             x_glued nearly fits y (docs/methods.md gives the residual fractions).
E(x) (`encoding`): 'mean' (the encoder's mean) or 'sample' (a draw from the encoder's Gaussian, as both PSLD
codes: latent_dist.sample(); on a pixel prior E = I either way).
Defaults (null): with guidance_units='euler' the authors' run_psld (pipe.py:6250-6263): transpose, sample;
otherwise adjoint, mean. noise_on_prediction: Gaussian noise of the task's sigma_y added to A(D(z0_hat))
before the misfit (Rout's code, psld.py:319-320).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Sampler, Transition, randn

GLUING = ("adjoint", "transpose")
ENCODING = ("mean", "sample")


class PSLDSampler(Sampler):
    name = "psld"

    def __init__(self, zeta: float = 1.0, gamma: float = 0.1, gluing: str | None = None, encoding: str | None = None,
                 transition: str = "ddpm", eta: float = 0.0, noise_on_prediction: bool = False, **kw):
        super().__init__(**kw)
        euler = self.guidance_units == "euler"
        gluing = gluing or ("transpose" if euler else "adjoint")
        encoding = encoding or ("sample" if euler else "mean")
        if gluing not in GLUING:
            raise ConfigError(f"psld: gluing must be one of {', '.join(GLUING)}, got '{gluing}'")
        if encoding not in ENCODING:
            raise ConfigError(f"psld: encoding must be one of {', '.join(ENCODING)}, got '{encoding}'")
        if transition not in ("ddpm", "ddim"):
            raise ConfigError(f"psld: transition must be 'ddpm' or 'ddim', got '{transition}'")
        self.zeta, self.gamma = float(zeta), float(gamma)
        self.gluing, self.encoding, self.update, self.eta = gluing, encoding, transition, float(eta)
        self.noise_on_prediction = bool(noise_on_prediction)

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

    def glue(self, A, y, image):
        """x_glued = T y + image - T A(image), T = A^T (gluing='adjoint') or A's `transpose`."""
        T = A.transpose if self.gluing == "transpose" else A.adjoint
        return T(y) + image - T(A(image))

    def encoded(self, operator, encode, x, generator):
        """E(x): the encoder's mean, or (encoding='sample', a latent prior) mean + std n with n from the
        run's generator, scaled as the prior's latents (diffusers' latent_dist.sample())."""
        prior = getattr(operator, "prior", None)
        if self.encoding == "mean" or prior is None:
            return encode(x)
        operator.stats["encoder"] = operator.stats.get("encoder", 0) + 1
        mean, std = prior.encode_distribution(x)
        n = randn(mean.shape, generator, mean.dtype, mean.device)
        return (mean + std * n).to(x.dtype) * prior.scaling_factor

    def predicted_measurement(self, Ax, noise, generator):
        """A(D(z0_hat)), plus Gaussian noise of the task's sigma_y when noise_on_prediction (Rout's code)."""
        if not self.noise_on_prediction:
            return Ax
        if not hasattr(noise, "sigma"):
            raise ConfigError(f"psld: noise_on_prediction needs Gaussian noise, got {type(noise).__name__}")
        return Ax + noise.sigma * randn(Ax.shape, generator, Ax.dtype, Ax.device)

    def step(self, prior, diffusion, operator, noise, y, x, i, generator) -> Transition:
        A, decode, encode = self.parts(operator)
        t = self.model_t(diffusion, i, x.shape[0], x.device)
        z = randn(x.shape, generator, x.dtype, x.device)  # the ancestral draw first, as scheduler.step in both codes
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps, var = prior.predict(x_in, t)
            z0 = diffusion.x0_from_eps(x_in, i, eps)
            image = decode(z0)
            misfit = noise.misfit(y, self.predicted_measurement(A(image), noise, generator))
            gluing = (z0 - self.encoded(operator, encode, self.glue(A, y, image), generator))
            gluing = gluing.reshape(x.shape[0], -1).norm(dim=1)
            (grad,) = torch.autograd.grad((self.zeta * misfit + self.gamma * gluing).sum(), x_in)
        self.calls["vjp"] += 1
        self.record_misfit(misfit)
        eps, z0 = eps.detach(), z0.detach()
        var = None if var is None else var.detach()
        z0c = self._clip(prior, z0)
        x_sampled, mean, std = diffusion.ddpm_step(z0c, x, i, z, var)
        if self.update == "ddim":
            x_sampled = diffusion.ddim_step(z0c, diffusion.eps_from_x0(x, i, z0c), i, z, self.eta)
        x_prev = x_sampled - self.step_factor(diffusion, i, x) * grad
        return Transition(x_t=x, x0_hat=z0, eps=eps, grad=grad, mean=mean, std=std, x_prev=x_prev)
