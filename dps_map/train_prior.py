"""Train the small ADM prior shipped with dps-map (``prior=tiny``) and export it as package assets
(the training: dps_map/training/prior.py).

    python -m dps_map.train_prior                      # train (resumes from out_dir/checkpoint.pt), then export
    python -m dps_map.train_prior export_only=true     # export the EMA weights of the last checkpoint only
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .config import CONF_DIR
from .training.prior import run
from .training.trainer import run_cli


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train_prior")
def main(cfg: DictConfig) -> None:
    run_cli("train_prior", run, cfg)


if __name__ == "__main__":
    main()
