"""Priors: ADM UNets through guided_diffusion, the analytic Gaussian mixture, and latent (Stable Diffusion) priors."""

from __future__ import annotations

from ..errors import ConfigError
from ..io import absolute_path
from .adm import ADMPrior, build_adm_prior, build_unet
from .base import Prior
from .gmm import GaussianMixture, GMMPrior, build_gmm_prior

__all__ = ["Prior", "ADMPrior", "GMMPrior", "GaussianMixture", "build_prior", "build_unet"]


#: prior config keys that are not constructor arguments (read by the runner and the sampler YAMLs)
PRIOR_CONFIG_KEYS = {"name", "kind", "_target_", "respacing", "variance"}


def prior_target(cfg):
    """The class (or function) a prior YAML names with `_target_`, or None for the built-in kinds."""
    from ..targets import locate

    return locate(cfg._target_, f"prior={cfg.get('name')}") if cfg.get("_target_") else None


def prior_keys(cfg) -> set:
    """The keys a `_target_` prior config may hold: its constructor's arguments plus PRIOR_CONFIG_KEYS."""
    from ..targets import signature_keys

    return PRIOR_CONFIG_KEYS | signature_keys(prior_target(cfg))


def build_prior(cfg, device="cpu") -> Prior:
    """The prior of a prior config, on device, frozen: the class its `_target_` names, called with the
    config keys in its signature (a user's prior), or the builder of cfg.kind ('adm', 'adm_upsampler', 'gmm')."""
    fn = prior_target(cfg)
    if fn is not None:
        from ..targets import signature_keys

        prior = fn(**{k: cfg[k] for k in signature_keys(fn) if k in cfg})
        if not isinstance(prior, Prior):
            raise ConfigError(f"prior={cfg.name}: _target_ '{cfg._target_}' returned {type(prior).__name__}, not a "
                              "dps_map.priors.Prior")
        return prior.eval().requires_grad_(False).to(device)
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
