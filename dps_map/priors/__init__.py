"""Priors: ADM UNets through guided_diffusion, the analytic Gaussian mixture, and latent (Stable Diffusion) priors.

Every prior config names the callable that builds it with `_target_` (a class, or a function returning a
`Prior`: adm.adm_prior, gmm.gmm_prior, latent.latent_prior, upsampler.upsampler_prior); dps_map.config.targets
calls it with the config keys of its signature.
"""

from __future__ import annotations

from .adm import ADMPrior, build_unet
from .base import Prior
from .gmm import GaussianMixture, GMMPrior

__all__ = ["Prior", "ADMPrior", "GMMPrior", "GaussianMixture", "build_unet"]
