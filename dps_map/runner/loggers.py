"""Experiment loggers: wandb (offline unless WANDB_MODE says otherwise) or none.

The same summary always lands in summary.json; a logger only mirrors it.
"""

from __future__ import annotations

import logging
import os

from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class NullLogger:
    def log_sample(self, record: dict) -> None:
        pass

    def log_images(self, key: str, image_path) -> None:
        pass

    def log_summary(self, summary: dict) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger(NullLogger):
    """wandb run named <task>/<prior>/<sampler>/seed<seed>, grouped by the sweep (or task/prior/sampler)."""

    def __init__(self, cfg, run_dir):
        import wandb

        lcfg = cfg.logger
        mode = lcfg.get("mode") or os.environ.get("WANDB_MODE", "offline")
        name = f"{cfg.task.name}/{cfg.prior.name}/{cfg.sampler.name}/seed{cfg.seed}"
        shard = cfg.data.get("shard", 0)
        if cfg.data.get("num_shards", 1) > 1:
            name += f"/shard{shard}"
        self.wandb = wandb
        self.run = wandb.init(
            project=lcfg.project, entity=lcfg.get("entity"), mode=mode, dir=str(run_dir), name=name,
            group=lcfg.get("group") or f"{cfg.task.name}/{cfg.prior.name}/{cfg.sampler.name}",
            tags=list(lcfg.get("tags") or []), reinit="finish_previous",
            config=OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False),
        )
        self._step = 0

    def log_sample(self, record: dict) -> None:
        values = {f"sample/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "k"}
        self.run.log(values, step=self._step)
        self._step += 1

    def log_images(self, key: str, image_path) -> None:
        self.run.log({key: self.wandb.Image(str(image_path))}, step=self._step)

    def log_summary(self, summary: dict) -> None:
        for key, value in flatten(summary).items():
            self.run.summary[key] = value

    def finish(self) -> None:
        self.run.finish()


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def make_logger(cfg, run_dir):
    if cfg.logger.name == "wandb":
        return WandbLogger(cfg, run_dir)
    return NullLogger()
