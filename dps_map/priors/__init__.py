"""Priors: ADM UNets through guided_diffusion, the analytic Gaussian mixture, and latent (Stable Diffusion) priors.

Every prior config names the callable that builds it with `_target_` (a class, or a function returning a
`Prior`); the keys of its signature are the config keys it is called with. The shipped YAMLs name the
builders below; a YAML without `_target_` but with a built-in `kind` gets that kind's builder
(BUILTIN_PRIORS), so older YAMLs still work. One code path after that mapping.
"""

from __future__ import annotations

from ..errors import ConfigError
from .adm import ADMPrior, build_unet
from .base import Prior
from .gmm import GaussianMixture, GMMPrior

__all__ = ["Prior", "ADMPrior", "GMMPrior", "GaussianMixture", "build_prior", "build_unet", "BUILTIN_PRIORS"]


#: prior config keys that are not arguments of its builder: read by the runner, the start-up checks and the
#: sampler YAMLs (name, kind, respacing, variance), or descriptive (what, url, override: how to get the files)
PRIOR_CONFIG_KEYS = {"name", "kind", "_target_", "respacing", "variance", "what", "url", "override"}
#: the builder of each built-in kind (what the shipped YAMLs name with _target_)
BUILTIN_PRIORS = {"adm": "dps_map.priors.adm.adm_prior", "adm_upsampler": "dps_map.priors.upsampler.upsampler_prior",
                  "gmm": "dps_map.priors.gmm.gmm_prior", "latent": "dps_map.priors.latent.latent_prior"}


def prior_target(cfg):
    """The callable a prior config names: its `_target_`, else the builder of its built-in `kind`."""
    from ..targets import locate

    where = f"prior={cfg.get('name')}"
    target = cfg.get("_target_") or BUILTIN_PRIORS.get(cfg.get("kind"))
    if not target:
        raise ConfigError(f"{where}: no _target_ and unknown kind '{cfg.get('kind')}' (known: "
                          f"{', '.join(BUILTIN_PRIORS)}; or name your class with _target_)")
    return locate(target, where)


def prior_keys(cfg) -> set:
    """The keys a prior config may hold: its builder's arguments plus PRIOR_CONFIG_KEYS."""
    from ..targets import signature_keys

    return PRIOR_CONFIG_KEYS | signature_keys(prior_target(cfg))


def build_prior(cfg, device="cpu") -> Prior:
    """The prior of a prior config, on device, frozen: the callable :func:`prior_target` names, called with
    the config keys in its signature."""
    from ..targets import call_target, config_kwargs

    fn = prior_target(cfg)
    prior = call_target(fn, config_kwargs(fn, cfg), f"prior={cfg.get('name')}")
    if not isinstance(prior, Prior):
        raise ConfigError(f"prior={cfg.get('name')}: _target_ '{cfg.get('_target_')}' returned {type(prior).__name__}, "
                          "not a dps_map.priors.Prior")
    return prior.eval().requires_grad_(False).to(device)
