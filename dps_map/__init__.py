"""dps-map: diffusion priors for imaging inverse problems (DPS, DSG, DMAP, conditional adapters).

Reproduces and extends Xu et al., "Rethinking Diffusion Posterior Sampling: From Conditional Score
Estimator to Maximizing a Posterior" (ICLR 2025). The Python API (README "Use it from Python"):
:func:`load_prior`, :func:`example_image`, :func:`save_image`, :func:`psnr`, and the classes of
:mod:`dps_map.operators` and :mod:`dps_map.samplers`.
"""

__version__ = "0.2.0"

import warnings as _warnings
from pathlib import Path as _Path

ASSETS = _Path(__file__).resolve().parent / "assets"

# guided_diffusion's import-time deprecation warnings are noise for users (not their code, not fixable)
_warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.custom_(fwd|bwd).*", category=FutureWarning)

# the resolvers of the shipped YAMLs (${dps_map_asset:...}, ${dps_map_tuned:...}, ...), registered before any
# config is composed
from .config import resolvers as _resolvers  # noqa: E402

_resolvers.register()

_API = {"load_prior", "example_image", "save_image", "psnr"}


def __getattr__(name):
    """The Python API, imported on first use (so `import dps_map.diffusion` stays light)."""
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'dps_map' has no attribute {name!r}")
