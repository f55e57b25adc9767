"""Priors: ADM UNets through guided_diffusion, the analytic Gaussian mixture, and latent (Stable Diffusion) priors."""

from __future__ import annotations

from ..errors import ConfigError
from ..io import absolute_path
from .adm import ADMPrior, build_adm_prior, build_unet
from .base import Prior
from .gmm import GaussianMixture, GMMPrior, build_gmm_prior

__all__ = ["Prior", "ADMPrior", "GMMPrior", "GaussianMixture", "build_prior", "build_unet"]


def build_prior(cfg, device="cpu") -> Prior:
    """The prior named by cfg.kind ('adm' or 'gmm'), on device, frozen."""
    if cfg.kind == "adm":
        prior = build_adm_prior(cfg, absolute_path(cfg.checkpoint))
    elif cfg.kind == "adm_upsampler":
        from .upsampler import build_upsampler_prior

        prior = build_upsampler_prior(cfg, absolute_path(cfg.checkpoint))
    elif cfg.kind == "gmm":
        prior = build_gmm_prior(cfg)
    elif cfg.kind == "latent":
        from .latent import build_latent_prior

        prior = build_latent_prior(cfg)
    else:
        raise ConfigError(f"unknown prior kind '{cfg.kind}' (adm, adm_upsampler, gmm, latent)")
    return prior.to(device)
