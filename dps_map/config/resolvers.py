"""The OmegaConf resolvers the shipped YAMLs use, registered once when dps_map.config is imported (every
command and every composing helper imports it before Hydra composes a config)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def asset(name: str) -> str:
    """``${dps_map_asset:NAME}``: a file shipped in dps_map/assets/."""
    return str(ASSETS / name)


def adapter_path(name: str, checkpoints: str) -> str:
    """``${dps_map_adapter:<task>_<prior>,<checkpoints dir>}``: the shipped adapter dps_map/assets/adapters/NAME.pt
    if there is one, else CHECKPOINTS/adapters/NAME.pt."""
    shipped = ASSETS / "adapters" / f"{name}.pt"
    return str(shipped) if shipped.is_file() else str(Path(checkpoints) / "adapters" / f"{name}.pt")


def num_gpus() -> int:
    """``${dps_map_num_gpus:}``: GPUs on this machine (at least 1; counted through NVML, CUDA is not
    initialised), the default number of parallel jobs of hydra/launcher=gpus."""
    return max(torch.cuda.device_count(), 1)


def _subdir(override_dirname: str) -> str:
    from .sweep import job_subdir

    return job_subdir(override_dirname)


def _tuned(key: str, default=None, like=None, *, _root_):
    from .tuned import lookup

    return lookup(_root_, key, default, like)


RESOLVERS = {"dps_map_asset": asset, "dps_map_adapter": adapter_path, "dps_map_num_gpus": num_gpus,
             "dps_map_subdir": _subdir, "dps_map_tuned": _tuned}


def register() -> None:
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
