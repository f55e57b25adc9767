"""The per-sample metrics, registered once: the evaluator scores with them, the summary and the aggregate
average them, wandb logs them (a record's numeric fields). A metric is called with (x_hat, x), float tensors in
[-1, 1] of shape (B, C, H, W), and returns one value per sample.

The built-ins are :data:`BUILTIN`. A user's own metric joins with one config entry,
``metrics.extra.NAME._target_=mypkg.MyMetric`` (a class instantiated with hydra.utils.instantiate; its other
keys are its arguments), and lands in metrics.jsonl as NAME (and naive_NAME: the no-prior baseline's score),
in summary.json, the sweep aggregate and wandb. Its class may say ``higher_is_better = True`` (else unknown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ConfigError, UserError


@dataclass(frozen=True)
class Metric:
    """One per-sample metric: its name (the record field), whether a higher value is better (None: unknown),
    the weight-file keys it needs (dps_map.metrics.weight_files), and whether every image run computes it."""

    name: str
    higher_is_better: bool | None
    weights: tuple[str, ...] = ()
    always: bool = False  # psnr and ssim are cheap and need nothing: scored even when metrics.names omits them


#: the built-in per-sample metrics; their callables are dps_map.metrics.psnr, .ssim and the LPIPS network
BUILTIN = {m.name: m for m in (
    Metric("psnr", True, always=True),
    Metric("ssim", True, always=True),
    Metric("lpips", False, weights=("lpips_backbone", "lpips_linear")),
)}
#: run-level metrics (from all images of a run): summary.json's metrics holds them beside the per-sample ones
RUN_LEVEL = ("fid", "kid", "diversity")
#: the fields a sample's record holds besides its scores (dps_map.runner.execute.write_units)
RECORD_FIELDS = ("id", "k", "class_label", "misfit", "seconds", "nfe", "forward", "vjp", "steps", "decoder_forward",
                 "decoder_vjp", "orig_size", "orig_mode", "resized", "file", "measurement_batch", "failed",
                 "fail_step", "last_misfit", "cost", "failures")
NAME = re.compile(r"[a-z][a-z0-9_]*")


def extra_names(mcfg) -> list[str]:
    """The names of the user's metrics in a metrics config (metrics.extra), in config order."""
    return [str(name) for name in ((mcfg or {}).get("extra") or {})]


def score_fields(names) -> list[str]:
    """The record fields of these metrics: each name and its naive_ (no-prior baseline) counterpart."""
    return [f for name in names for f in (name, f"naive_{name}")]


def check_extra(mcfg) -> None:
    """Start-up check of metrics.extra (ConfigError, one line): each name is new (not a built-in or run-level
    metric, not a record field, lower-case letters, digits and _), each node names an importable class with
    `_target_`, and its other keys are arguments of that class."""
    from .targets import locate, signature_keys

    taken = set(BUILTIN) | set(RUN_LEVEL) | set(RECORD_FIELDS) | set(score_fields(BUILTIN))
    for name, node in ((mcfg or {}).get("extra") or {}).items():
        where = f"metrics.extra.{name}"
        if not NAME.fullmatch(str(name)) or str(name).startswith("naive_"):
            raise ConfigError(f"{where}: a metric name is lower-case letters, digits and _ (not starting with "
                              f"naive_, the baseline's prefix), got {name!r}")
        if name in taken:
            raise ConfigError(f"{where}: '{name}' is already a built-in metric or a field of metrics.jsonl's records "
                              f"(taken: {', '.join(sorted(taken))}); name it differently")
        if not hasattr(node, "get") or not node.get("_target_"):
            raise ConfigError(f"{where}: needs _target_, the class of the metric (e.g. "
                              f"+{where}._target_=mypkg.metrics.MyMetric)")
        cls = locate(node["_target_"], where)
        unknown = sorted(set(node) - {"_target_"} - signature_keys(cls))
        if unknown:
            raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (known: "
                              f"{', '.join(sorted(signature_keys(cls))) or 'none'})")


@dataclass(frozen=True)
class Scorer:
    """A metric and its callable: (x_hat, x) -> one value per sample."""

    metric: Metric
    fn: Callable

    def __call__(self, x_hat, x) -> list[float]:
        values = self.fn(x_hat, x)
        if hasattr(values, "detach"):
            values = values.detach().cpu().numpy()
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (x_hat.shape[0],):  # a batch mean (shape ()) is the common mistake
            raise UserError(f"metric '{self.metric.name}' returned values of shape {values.shape} for a batch of "
                            f"{x_hat.shape[0]} images: it must return one value per sample, shape "
                            f"({x_hat.shape[0]},)")
        return [float(v) for v in values]


def extra_scorers(mcfg) -> list[Scorer]:
    """The user's metrics of a metrics config, instantiated (checked first: :func:`check_extra`)."""
    from hydra.utils import instantiate

    check_extra(mcfg)
    scorers = []
    for name, node in ((mcfg or {}).get("extra") or {}).items():
        fn = instantiate(node, _convert_="all")
        if not callable(fn):
            raise ConfigError(f"metrics.extra.{name}: _target_ '{node['_target_']}' built a {type(fn).__name__}, "
                              "which cannot be called with (x_hat, x)")
        scorers.append(Scorer(Metric(str(name), getattr(fn, "higher_is_better", None)), fn))
    return scorers
