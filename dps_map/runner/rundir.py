"""A run directory's marker, run.json: which config (digest) and which weight files (by content) made the
outputs beside it. One config per directory: outputs of another are refused, never mixed or re-run.

run.json is ``{"schema": 2, "digest": ..., "version": ..., "weights": {...}, "compute": {...},
"class_label_policy": ...}`` (compute: the device, its name and the resolved precision, dps_map.config.device;
class_label_policy: :func:`class_label_policy`, absent for an unconditional prior). A directory written by
dps-map 0.1 (no "schema": its digest was computed another way) is refused with one line that names
``python -m dps_map.migrate``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..config.digest import SCHEMA
from ..config.keys import DIRNAME_EXCLUDED
from ..config.targets import adapter_of
from ..errors import ConfigError, UserError
from ..io import atomic_write_json, prior_weights, read_json, weights_id
from .lock import RunDirLocked, lock_holder, locked_message

log = logging.getLogger(__name__)
RUN_FILE = "run.json"
#: the files of a run that belong to one config (removed when overwrite=true replaces the config)
OUTPUT_FILES = ("metrics.jsonl", "summary.json", "samples.npy", "problem.npz")


def run_dirs(root) -> list[Path]:
    """The run directories at or below root (those holding run.json), sorted."""
    root = Path(root)
    if (root / RUN_FILE).is_file():
        return [root]
    return sorted(p.parent for p in root.rglob(RUN_FILE) if ".submitit" not in p.parts)


def old_schema_message(out: Path) -> str:
    return (f"run dir '{out}' was written by dps-map 0.1 (another config digest): migrate it with "
            f"`python -m dps_map.migrate {out}`, or pass overwrite=true to replace its outputs")


def read_marker(out: Path) -> dict | None:
    """The run.json of a run directory (None if there is none); a schema-1 or corrupt marker raises ConfigError."""
    marker = Path(out) / RUN_FILE
    if not marker.exists():
        return None
    try:
        saved = read_json(marker, f"it says which config made the outputs beside it; restore it, or choose another "
                                  f"hydra.run.dir (overwrite=true would delete the outputs of '{out}')")
    except UserError as err:  # a ConfigError, so that overwrite=true can still replace the directory
        raise ConfigError(str(err)) from err
    if saved.get("schema") != SCHEMA:
        raise ConfigError(old_schema_message(Path(out)))
    return saved


def run_weights(cfg) -> dict:
    """The weights a run's outputs depend on, by content (io.weights_id): the prior's checkpoint and an
    prior's adapter (prior.adapter, or an adapter preset's sampler.adapter). The digest leaves their paths out: a
    path keeps its name when the file changes (a retrained prior, a re-downloaded checkpoint), and a moved checkout
    changes the path of the same file."""
    return {"prior": prior_weights(cfg.prior), "adapter": weights_id(adapter_of(cfg.prior, cfg.sampler))}


def class_label_policy(prior_cfg) -> str | None:
    """Which class a class-conditional prior is given: "data" (each image's own ImageNet class: information
    about x0 that neither the authors' SD2 prior, given the empty prompt, nor DPS2022's unconditional model
    has), "random" (one drawn from the measurement's stream), "fixed:N"; None for an unconditional prior.
    Recorded in run.json, summary.json, the aggregate and the restoration table, so a table says which."""
    unet = prior_cfg.get("unet") if prior_cfg is not None else None
    if not (unet is not None and unet.get("class_cond", False)):
        return None
    choice = prior_cfg.get("class_label")
    if choice is None or choice in ("data", "random"):  # None: validate() refuses it before a run starts
        return None if choice is None else str(choice)
    return f"fixed:{int(choice)}"


def write_marker(out: Path, digest: str, weights: dict, compute: dict | None = None,
                 class_policy: str | None = None) -> None:
    from .. import __version__

    atomic_write_json(Path(out) / RUN_FILE, {"schema": SCHEMA, "digest": digest, "version": __version__,
                                             **({"weights": weights} if weights else {}),
                                             **({"compute": compute} if compute else {}),
                                             **({"class_label_policy": class_policy} if class_policy else {})})


def claim_run_dir(out: Path, digest: str, overwrite: bool, weights: dict | None = None,
                  compute: dict | None = None, class_policy: str | None = None) -> None:
    """Refuse to mix outputs of two configs, of one config with other weights, or of two precisions (perf.precision
    =auto resumed on another kind of device) in one directory (unless overwrite=true, which removes the old
    outputs). A weight unknown on either side (None: no file) is not compared."""
    weights = {k: v for k, v in (weights or {}).items() if v is not None}
    try:
        saved = read_marker(out)
    except ConfigError:
        if not overwrite:
            raise
        saved = {"digest": None, "weights": {}}
    if saved is not None:
        old, old_weights = saved.get("digest"), saved.get("weights") or {}
        changed = {k: (old_weights[k], v) for k, v in weights.items() if old_weights.get(k) not in (None, v)}
        old_precision = (saved.get("compute") or {}).get("precision")
        if compute and old_precision not in (None, compute["precision"]) and not overwrite and old == digest:
            raise ConfigError(f"run dir '{out}' holds samples computed in {old_precision} "
                              f"({saved['compute'].get('device_name')}); this run computes in {compute['precision']} "
                              f"on {compute['device_name']}: resume it where perf.precision gives {old_precision}, "
                              "or pass overwrite=true")
        if old != digest and not overwrite:
            raise ConfigError(f"run dir '{out}' holds outputs of another config (digest {old}, this one {digest});"
                              " choose another hydra.run.dir or pass overwrite=true")
        if changed and not overwrite:
            what = "; ".join(f"{k} {a[:19]}... now {b[:19]}..." for k, (a, b) in changed.items())
            raise ConfigError(f"run dir '{out}' holds outputs made with other weights ({what}): the file at the "
                              "configured path changed; choose another hydra.run.dir or pass overwrite=true")
        if old != digest or changed or (compute and old_precision not in (None, compute["precision"])):
            log.warning("overwrite=true: discarding outputs of config %s (weights %s) in %s", old, old_weights, out)
            for name in OUTPUT_FILES:
                (Path(out) / name).unlink(missing_ok=True)
        else:
            weights = {**old_weights, **weights}
    write_marker(out, digest, weights, compute, class_policy)


def check_job_dirs(jobs) -> None:
    """Before any job of a sweep is submitted: refuse jobs that would share one output directory (they
    would write into each other's run), and job directories another process is writing (a second
    sweep into the same hydra.sweep.dir, or a job of this one still running). Raises UserError."""
    seen = {}
    for job in jobs:
        key = os.path.realpath(job.run_dir)
        if key in seen:
            raise ConfigError(
                f"jobs '{' '.join(seen[key].overrides)}' and '{' '.join(job.overrides)}' would both write to "
                f"'{job.run_dir}': their overrides differ only in keys left out of the directory name "
                f"({', '.join(DIRNAME_EXCLUDED)}), or hydra.sweep.subdir does not use ${{hydra.job.override_dirname}}")
        seen[key] = job
    for job in jobs:
        holder = lock_holder(job.run_dir)
        if holder is not None:
            raise RunDirLocked(f"job '{' '.join(job.overrides)}': {locked_message(job.run_dir, holder)}")
