"""What the tests share: where the repository and its config tree are, and one way to compose a config.

    from support import CONF, ROOT, compose
    cfg = compose("task=sr4", "prior=tiny")                       # dps_map/conf/config.yaml + overrides
    cfg = compose("steps=2", config="train_reference")            # another primary config
    cfg = compose("hydra/launcher=slurm", hydra=True)              # with Hydra's own node (launchers, sweeps)
    sampler = built_sampler({"method": "dps", "zeta": 0.5})        # a sampler from a config node, as a run builds it
    prior = shipped_prior("gmm")                                  # a shipped prior YAML, built (gmm, sd2_tiny)
    prior = small_adm()                                           # a 16x16 ADM with random, non-zero weights

(pytest puts tests/ on sys.path, so `import support` works from every test file.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image

import dps_map.config  # noqa: F401  (registers the resolvers the YAMLs use)
from dps_map.config.sweep import compose_jobs, without_hydra
from dps_map.config.targets import build_prior, build_sampler
from dps_map.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose(*overrides: str, config: str = "config", hydra: bool = False, conf_dir: Path | str = CONF) -> DictConfig:
    """The primary config `config` of `conf_dir` (dps_map/conf) with these Hydra overrides, composed the way the
    commands compose it (dps_map.config.sweep); `hydra=True` keeps Hydra's node, as a launcher or a sweep reads it."""
    (cfg,) = compose_jobs([list(overrides)], config=config, conf_dir=conf_dir)
    return cfg if hydra else without_hydra(cfg)


def built_sampler(node) -> object:
    """The sampler of a config node that names its method (`method: dps`), built the way a run builds
    dps_map/conf/sampler/*.yaml: through its `_target_` (the method's class) with the node's other keys."""
    node = OmegaConf.to_container(node) if isinstance(node, DictConfig) else dict(node)
    cls = SAMPLERS[node["method"]]
    return build_sampler(OmegaConf.create({"name": node["method"], "_target_": f"{cls.__module__}.{cls.__name__}",
                                           **node}))


def shipped_prior(name: str, **overrides):
    """The prior of dps_map/conf/prior/NAME.yaml (its own keys; `overrides` replace some), built on the CPU. For
    priors whose YAML needs no `${paths.*}` (gmm, sd2_tiny); the tiny prior: dps_map.load_prior("tiny")."""
    return build_prior(OmegaConf.merge(OmegaConf.load(CONF / "prior" / f"{name}.yaml"), overrides))


#: a 16x16 ADM UNet (create_model flags) small enough for unit tests of the samplers and adapters
SMALL_UNET = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
                  num_head_channels=32, learn_sigma=True, use_scale_shift_norm=True, resblock_updown=True)


def small_adm():
    """An unconditional ADMPrior around SMALL_UNET with seeded random weights (priors.adm.random_network: the
    zero-initialised layers re-drawn, so eps depends on x_t and t)."""
    from dps_map.diffusion import make_betas
    from dps_map.priors.adm import ADMPrior, build_unet, random_network

    return ADMPrior(random_network(build_unet, SMALL_UNET), make_betas(), learn_sigma=True)


def png_psnr(recon, label) -> float:
    """PSNR in dB of two 8-bit PNGs on [0, 1], 10 log10(1 / MSE), computed in numpy from the files (a run scores its
    unrounded samples, so its PSNR lies within about 0.1 dB of this)."""
    a, b = (np.asarray(Image.open(p), dtype=np.float64) / 255 for p in (recon, label))
    return float(10 * np.log10(1 / np.mean((a - b) ** 2)))
