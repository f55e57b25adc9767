"""Train the light-weight conditional score estimator (Xu et al., ICLR 2025, method 2) for one task
(the training: dps_map/training/adapter.py; on a latent prior, a ControlNet: dps_map/training/latent_controlnet.py).

    python -m dps_map.train_adapter task=sr4 prior=tiny data.n_images=100
    python -m dps_map.train_adapter task=sr4 prior=adm512 data.kind=folder data.root=/data/train100 device=cuda
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .config import CONF_DIR
from .training.adapter import run
from .training.trainer import run_cli


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train_adapter")
def main(cfg: DictConfig) -> None:
    run_cli("train_adapter", run, cfg)


if __name__ == "__main__":
    main()
