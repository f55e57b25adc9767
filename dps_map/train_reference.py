"""Train the tiny-scale reference conditional model, an SR x4 SuperResModel 16 -> 64 (the training:
dps_map/training/reference.py).

    python -m dps_map.train_reference            # make train-tiny-reference; resumes from out_dir
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .config import CONF_DIR
from .training.reference import run
from .training.trainer import run_cli


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train_reference")
def main(cfg: DictConfig) -> None:
    run_cli("train_reference", run, cfg)


if __name__ == "__main__":
    main()
