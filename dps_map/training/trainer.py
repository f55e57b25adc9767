"""The one training loop of dps-map: AdamW with warmup and a constant or cosine learning rate, gradient
accumulation and clipping, an EMA of the weights, checkpoints written atomically to out_dir/checkpoint.pt and
resumed bit for bit, tqdm, log lines and optional wandb.

A trainer (prior.py, adapter.py, latent_controlnet.py, reference.py) builds its network after seeding, gives
:class:`Trainer` the names its checkpoint uses for the network, its random streams and its metadata, and a
function that draws one micro-batch from those streams and returns its loss. Every random draw happens in
that function, so a resumed run draws what the uninterrupted run draws.
"""

from __future__ import annotations

import io
import logging
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from ..errors import ConfigError, UserError
from ..io import atomic_write_bytes

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@contextmanager
def num_threads(n: int):
    """torch.set_num_threads(n) for the duration of a block (callers such as tests keep their own setting)."""
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def lr_at(step: int, cfg) -> float:
    """Learning rate of optimiser step `step` (0-based): linear warmup, then constant or cosine."""
    if cfg.warmup > 0 and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "cosine":
        span = max(1, cfg.steps - cfg.warmup)
        prog = min(1.0, (step - cfg.warmup) / span)
        final = cfg.lr * cfg.lr_final_frac
        return final + 0.5 * (cfg.lr - final) * (1 + math.cos(math.pi * prog))
    raise ConfigError(f"unknown lr_schedule '{cfg.lr_schedule}' (expected 'constant' or 'cosine')")


def ema_decay_at(step: int, cfg) -> float:
    """EMA decay after optimiser step `step`; with ema_warmup the early average forgets the random init faster."""
    if cfg.ema_warmup:
        return min(cfg.ema_decay, (1 + step) / (10 + step))
    return cfg.ema_decay


@torch.no_grad()
def ema_update(ema: dict, module: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * weights, in place (non-float buffers are copied)."""
    for k, v in module.state_dict().items():
        if v.dtype.is_floating_point:
            ema[k].mul_(decay).add_(v, alpha=1 - decay)
        else:
            ema[k].copy_(v)


def resume_state(path: Path, resume: bool, mismatch: Callable[[dict], str | None]) -> dict | None:
    """The training checkpoint at ``path`` to resume from, or None to start afresh (no file, or
    resume=false: the file is then overwritten, with a warning). ``mismatch(state)`` says what the
    checkpoint was trained with that this config does not match (None if it fits): refused."""
    if not path.exists():
        return None
    if not resume:
        log.warning("resume=false: overwriting %s", path)
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    why = mismatch(state)
    if why:
        raise ConfigError(f"checkpoint {path} was trained with {why}; use another out_dir or resume=false")
    log.info("resumed from %s at step %d", path, state["step"])
    return state


def save_torch(obj, path) -> None:
    """torch.save through a temporary file and a rename: a run killed mid-save leaves the previous file whole."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def wandb_run(cfg, out_dir: Path, name: str):
    """A wandb run when the config selects logger=wandb (offline unless its mode or WANDB_MODE says otherwise),
    else None. The group is the trainer, the first part of ``name``."""
    logger = cfg.get("logger")
    if logger is None or logger.name != "wandb":
        return None
    import wandb

    return wandb.init(project=logger.project, entity=logger.get("entity"),
                      mode=logger.get("mode") or os.environ.get("WANDB_MODE", "offline"), dir=str(out_dir),
                      name=name, group=name.split("/")[0], config=OmegaConf.to_container(cfg, resolve=True))


def run_cli(prog: str, run: Callable, cfg) -> None:
    """``run(cfg)`` for a command line: a UserError is one line on stderr and exit code 2, not a traceback."""
    try:
        run(cfg)
    except UserError as err:
        print(f"dps-map {prog}: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


class Trainer:
    """Optimiser, EMA, checkpoint and step loop around one trainable module.

    cfg: the trainer's config (steps, batch_size, accumulate, lr, lr_schedule, lr_final_frac, warmup, weight_decay,
      adam_betas, grad_clip, ema_decay, ema_warmup, resume, save_every, log_every, progress_mininterval, logger).
    module: the network being trained, already built (seeded), on its device; its parameters that require
      grad are optimised.
    out_dir: where checkpoint.pt is written and resumed from.
    module_key: the checkpoint entry of the module's weights ('model', 'adapter', 'controlnet').
    rngs: checkpoint entry -> random stream (a torch.Generator or a CropSampler: get_state/set_state) the
      batches are drawn from.
    meta: entries saved with every checkpoint (what the run was trained with), read by the exports.
    mismatch: checkpoint -> why it cannot be resumed under this config, or None (see :func:`resume_state`).
    name: the progress bar's label and the wandb run name ('<trainer>/...').
    grad_norms: save the per-step gradient norms in the checkpoint (the prior's card reads them).
    """

    def __init__(self, cfg, module: torch.nn.Module, out_dir: Path, *, module_key: str, rngs: dict, meta: dict,
                 mismatch: Callable[[dict], str | None], name: str, grad_norms: bool = False):
        self.accumulate = int(cfg.get("accumulate", 1))
        if self.accumulate < 1:
            raise ConfigError(f"accumulate must be >= 1, got {self.accumulate}")
        self.cfg, self.module, self.out_dir = cfg, module, out_dir
        self.module_key, self.rngs, self.meta, self.name = module_key, rngs, meta, name
        self.save_grad_norms = grad_norms
        out_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = out_dir / CHECKPOINT
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.ema = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                     weight_decay=cfg.weight_decay)
        self.step, self.losses, self.grad_norms, self.wall = 0, [], [], 0.0

        state = resume_state(self.ckpt_path, cfg.resume, mismatch)
        self.on_disk = state is not None  # out_dir/checkpoint.pt holds this run's current state
        if state is not None:
            module.load_state_dict(state[module_key], strict=True)
            self.ema = {k: v.to(self.ema[k].device) for k, v in state["ema"].items()}  # the module's device
            self.opt.load_state_dict(state["optimizer"])
            for key, rng in rngs.items():
                rng.set_state(state[key])
            self.step, self.losses, self.wall = state["step"], list(state["losses"]), state["wall_time"]
            if grad_norms:
                self.grad_norms = list(state["grad_norms"])

    def checkpoint(self) -> dict:
        """Save the training state to out_dir/checkpoint.pt (atomically) and return it."""
        state = {self.module_key: self.module.state_dict(), "ema": self.ema, "optimizer": self.opt.state_dict(),
                 "step": self.step, **{key: rng.get_state() for key, rng in self.rngs.items()},
                 "losses": self.losses, **({"grad_norms": self.grad_norms} if self.save_grad_norms else {}),
                 "wall_time": self.wall, **self.meta}
        save_torch(state, self.ckpt_path)
        self.on_disk = True
        return state

    def fit(self, batch_loss: Callable[[], torch.Tensor]) -> dict:
        """Train up to cfg.steps optimiser steps, each of ``accumulate`` micro-batches; ``batch_loss()`` draws
        one and returns its mean loss. Returns the final checkpoint as saved (CPU tensors, not the live
        weights), writing it first if no step was trained and nothing was resumed."""
        if self.step < self.cfg.steps:
            self._loop(batch_loss)
        if self.on_disk:
            return torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
        return self.checkpoint()

    def _loop(self, batch_loss: Callable[[], torch.Tensor]) -> None:
        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.name, dynamic_ncols=True,
                   mininterval=float(cfg.progress_mininterval))
        run = wandb_run(cfg, self.out_dir, self.name)
        t_session, start = time.perf_counter(), self.step
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            lr = lr_at(self.step, cfg)
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.opt.zero_grad(set_to_none=True)  # neither draws: the streams see only batch_loss's draws
            loss = 0.0
            for _ in range(self.accumulate):  # effective batch = batch_size x accumulate
                micro = batch_loss() / self.accumulate
                micro.backward()
                loss = loss + micro.detach()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.opt.step()
            ema_update(self.ema, self.module, ema_decay_at(self.step, cfg))
            self.step += 1
            self.losses.append(float(loss))
            self.grad_norms.append(float(grad_norm))
            self.wall += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(self.losses[-50:]):.4f}", lr=f"{lr:.2e}", refresh=False)
            if run is not None:
                run.log({"train/loss": self.losses[-1], "train/lr": lr, "train/grad_norm": self.grad_norms[-1]},
                        step=self.step)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                log.info("%s step %d/%d loss %.4f (mean of last %d) gnorm %.2f lr %.2e | %.2f s/step", self.name,
                         self.step, cfg.steps, np.mean(self.losses[-cfg.log_every:]), cfg.log_every,
                         np.mean(self.grad_norms[-cfg.log_every:]), lr, (time.perf_counter() - t_session) /
                         (self.step - start))
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.checkpoint()
        bar.close()
        if run is not None:
            run.finish()
