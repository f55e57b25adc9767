"""Tuned sampler values (step sizes) in one place: the `tuned` config group (conf/tuned/default.yaml).

A sampler YAML reads a tuned value with ``${dps_map_tuned:KEY,DEFAULT}``, e.g. ``zeta: ${dps_map_tuned:zeta,1.0}``.
A step size belongs to a prior (its scale and number of steps), so the value is looked up for the run's
(prior, task, sampler) in this order:

  1. tuned.priors.<prior>.<task>.<sampler>.<KEY>     (a value tuned for this prior and task)
  2. tuned.priors.<prior>.all_tasks.<sampler>.<KEY>  (for this prior, any task)
  3. with ``${dps_map_tuned:KEY,DEFAULT,LIKE}``: 1-2 for the sampler named LIKE (a variant of it);
  4. DEFAULT, the sampler YAML's own value; for a step size (zeta, w), with one warning naming the value and
     where it came from.

A value tuned for one prior is never used for another (the tiny prior's 50-step zeta would be far too large
for the 512 ADM at 1000 steps). Adding a sampler touches no task file: its YAML names its defaults, and tuned
values are added to conf/tuned/ when someone tunes them. ``sampler.zeta=...`` on the command line
replaces the lookup. The `tuned` group itself is left out of the config digest: the value a run uses is in
sampler.*, which is in it.
"""

from __future__ import annotations

import logging

from omegaconf import OmegaConf

log = logging.getLogger(__name__)
_logged: set = set()


#: the keys whose untuned default is worth a warning: step sizes (a sampler's other tabled settings, e.g. FreeDoM's
#: repeat or PSLD's gamma, have defaults that are the method's own)
STEP_SIZES = ("zeta", "w")


def table_value(root, key: str, sampler: str):
    """The tuned `key` of `sampler` for the config root's prior and task, or None."""
    table = OmegaConf.select(root, "tuned", default=None)
    if table is None:
        return None
    prior, task = (OmegaConf.select(root, f"{g}.name", default=None) for g in ("prior", "task"))
    for path in (f"priors.{prior}.{task}.{sampler}.{key}", f"priors.{prior}.all_tasks.{sampler}.{key}"):
        value = OmegaConf.select(table, path, default=None)
        if value is not None:
            return value
    return None


def lookup(root, key: str, default, like: str | None = None):
    """The tuned `key` of the config root's (prior, task, sampler), else (with `like`) that of the sampler
    `like` names (e.g. a DPS variant that takes DPS's step size until it is tuned itself), else default."""
    names = {g: OmegaConf.select(root, f"{g}.name", default=None) for g in ("prior", "task", "sampler")}
    for sampler in (names["sampler"], like):
        value = None if sampler is None else table_value(root, key, sampler)
        if value is not None:
            return value
    where = tuple(names.values()) + (key,)
    if where not in _logged and key in STEP_SIZES and logging.getLogger().handlers:  # once logging is set up
        # (Hydra's job, not the launcher's pre-start checks, which would swallow the one message)
        _logged.add(where)
        log.warning("sampler=%s, task=%s, prior=%s: %s=%s is the default of the sampler's YAML (%s.yaml), not a "
                    "value tuned for this prior (none under tuned.priors.%s in conf/tuned/default.yaml); "
                    "tune it on validation images and set sampler.%s", names["sampler"], names["task"],
                    names["prior"], key, default, names["sampler"], names["prior"], key)
    return default
