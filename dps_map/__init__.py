"""dps-map: diffusion priors for imaging inverse problems (DPS, DSG, DMAP, conditional adapters).

Reproduces and extends Xu et al., "Rethinking Diffusion Posterior Sampling: From
Conditional Score Estimator to Maximizing a Posterior" (ICLR 2025).
"""

__version__ = "0.1.0"

import warnings as _warnings
from pathlib import Path as _Path

from omegaconf import OmegaConf as _OmegaConf

ASSETS = _Path(__file__).resolve().parent / "assets"

# guided_diffusion's import-time deprecation warnings are noise for users (not their code, not fixable)
_warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.custom_(fwd|bwd).*", category=FutureWarning)

# ${dps_map_asset:NAME} in configs resolves to a file shipped in dps_map/assets/
if not _OmegaConf.has_resolver("dps_map_asset"):
    _OmegaConf.register_new_resolver("dps_map_asset", lambda name: str(ASSETS / name))


def _adapter_path(name: str, checkpoints: str) -> str:
    """The shipped adapter dps_map/assets/adapters/NAME.pt if there is one, else CHECKPOINTS/adapters/NAME.pt."""
    shipped = ASSETS / "adapters" / f"{name}.pt"
    return str(shipped) if shipped.is_file() else str(_Path(checkpoints) / "adapters" / f"{name}.pt")


# ${dps_map_adapter:<task>_<prior>,<checkpoints dir>} in dps_map/conf/paths: where a task/prior's adapter lives
if not _OmegaConf.has_resolver("dps_map_adapter"):
    _OmegaConf.register_new_resolver("dps_map_adapter", _adapter_path)

# ${dps_map_subdir:${hydra.job.override_dirname}} in dps_map/conf/config.yaml: a sweep job's directory name
if not _OmegaConf.has_resolver("dps_map_subdir"):
    from .sweep import job_subdir as _job_subdir

    _OmegaConf.register_new_resolver("dps_map_subdir", _job_subdir)

# ${dps_map_tuned:KEY,DEFAULT} in dps_map/conf/sampler: the tuned value of KEY for the run's (prior, task, sampler)
from . import tuned as _tuned  # noqa: E402

_tuned.register()
