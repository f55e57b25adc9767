"""What the tests share: where the repository and its config tree are, and one way to compose a config.

    from support import CONF, ROOT, compose
    cfg = compose("task=sr4", "prior=tiny")                       # dps_map/conf/config.yaml + overrides
    cfg = compose("steps=2", config="train_reference")            # another primary config
    cfg = compose("hydra/launcher=slurm", hydra=True)              # with Hydra's own node (launchers, sweeps)

(pytest puts tests/ on sys.path, so `import support` works from every test file.)
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "dps_map" / "conf"


def compose(*overrides: str, config: str = "config", hydra: bool = False, conf_dir: Path | str = CONF) -> DictConfig:
    """The primary config `config` of `conf_dir` (dps_map/conf) with these Hydra overrides; `hydra=True` keeps
    Hydra's node (return_hydra_config), as a launcher or a sweep reads it."""
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return hydra_compose(config, overrides=list(overrides), return_hydra_config=hydra)
