"""A command line expanded into its jobs, the way Hydra's basic sweeper expands a multirun.

``python -m dps_map.run -m task=sr4,sr8 sampler=dps,dmap`` is four jobs. :func:`expand_jobs` composes
each job's config from the same overrides Hydra would pass it (the cartesian product of every swept
key, ``range(N)`` included) and works out the directory Hydra would give it (``hydra.sweep.dir`` /
``hydra.sweep.subdir``, or ``hydra.run.dir`` for a single run). The launching process uses it to check
a whole sweep before any job is submitted (``dps_map.run``, ``dps_map.preflight``).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError


def _config_tree() -> Path:
    """The Hydra config tree: conf/ at the top of the repository, which pyproject.toml ships as the package
    dps_map.conf (a package-dir mapping). Every command, Hydra's included, and every loader of a YAML reads it
    through :data:`CONF_DIR`.

    importlib.resources finds the package in both installs: site-packages/dps_map/conf/ in a wheel,
    <repository>/conf/ in an editable install (setuptools' import finder maps dps_map.conf there, so an edited
    YAML is read without reinstalling). A checkout on PYTHONPATH with nothing installed (`make gpu-check` on a
    GPU machine without pip) has no dps_map.conf to import: its own conf/ then. conf/ has an __init__.py: the
    editable finder maps only a regular package, and Hydra's pkg://dps_map.conf wants one too. The commands give
    Hydra this folder's path (config_path=str(CONF_DIR)), so Hydra and the loaders read the same YAML."""
    try:
        tree = importlib.resources.files("dps_map.conf")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "conf"
    if not isinstance(tree, Path):
        # a folder dps_map/conf/ still in a checkout (its __pycache__ from before conf/ moved to the top) is a
        # namespace package that Python finds before the mapped conf/: no YAML in it
        raise ImportError(f"dps_map.conf resolves to {tree}, not conf/: delete the folder left over in the "
                          "checkout, dps_map/conf/")
    return tree


CONF_DIR = _config_tree()


@dataclass
class Job:
    overrides: list[str]   # this job's overrides, as Hydra passes them to it
    cfg: DictConfig        # its composed config (with Hydra's node, so hydra.* can be read)
    run_dir: Path          # the output directory Hydra gives it


def job_overrides(args: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job (one list for a single run), in Hydra's order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(args))
        if not multirun:
            sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
            if sweeps:
                raise ConfigError(f"{sweeps[0]} sweeps over several values: add -m (multirun)")
            return [list(args)]
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except HydraException as err:
        raise ConfigError(" ".join(str(err).split())) from err


def compose_job(overrides: list[str]) -> DictConfig:
    """The config Hydra composes for one job's overrides (unknown keys and groups: one ConfigError)."""
    return compose_jobs([overrides])[0]


def compose_jobs(jobs: list[list[str]], config: str = "config", conf_dir=CONF_DIR) -> list[DictConfig]:
    """:func:`compose_job` of every override list, under one initialisation of Hydra's config search (the
    primary config `config` of `conf_dir`: conf/config.yaml unless a tool or a test names another)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return [compose(config, overrides=list(overrides), return_hydra_config=True) for overrides in jobs]
    except (HydraException, OmegaConfBaseException) as err:
        if isinstance(err.__cause__, (ConfigAttributeError, ConfigKeyError)) and "Could not override" in str(err):
            key = str(err).split("'")[1]
            raise ConfigError(f"unknown key '{key}' (see the known keys with `python -m dps_map.run --cfg job`)") \
                from err
        raise ConfigError(" ".join(str(err).split("Config search path")[0].split())) from err


#: the longest sweep job directory name (file systems allow 255 bytes per name)
MAX_SUBDIR = 200
#: the overrides a shortened job directory name shows first
LEADING_KEYS = ("task", "sampler", "prior", "data.shard")


def job_subdir(override_dirname: str) -> str:
    """A sweep job's directory name (``hydra.sweep.subdir: ${dps_map_subdir:${hydra.job.override_dirname}}``): the
    job's overrides, or, past MAX_SUBDIR bytes (long ARGS such as the toy flags of make rehearse-paper, or paths),
    task/sampler/prior/shard first, cut, then '~' and a hash of the whole: unique per job, and the same for the
    same overrides, so a sweep still resumes."""
    if len(override_dirname.encode()) <= MAX_SUBDIR:
        return override_dirname
    import hashlib

    items = override_dirname.split(",")
    items.sort(key=lambda item: LEADING_KEYS.index(item.split("=")[0]) if item.split("=")[0] in LEADING_KEYS
               else len(LEADING_KEYS))
    head = ",".join(items).encode()[:MAX_SUBDIR - 17].decode(errors="ignore")
    return f"{head}~{hashlib.sha256(override_dirname.encode()).hexdigest()[:16]}"


def job_dir(cfg: DictConfig, multirun: bool) -> Path:
    """hydra.sweep.dir/hydra.sweep.subdir of a multirun job, hydra.run.dir of a single run."""
    node = cfg.hydra.sweep if multirun else cfg.hydra.run
    try:
        path = Path(str(node.dir)) / str(node.subdir) if multirun else Path(str(node.dir))
    except Exception as err:  # an interpolation that cannot resolve outside a running job
        raise ConfigError(f"cannot work out the job's output directory: {err}") from err
    return path


def expand_jobs(args: list[str], multirun: bool = True) -> list[Job]:
    """Every job of the command line ``args`` (overrides only), composed but not validated."""
    jobs = []
    overrides_of = job_overrides(args, multirun)
    for overrides, cfg in zip(overrides_of, compose_jobs(overrides_of)):
        if multirun and jobs:  # one sweep dir for all jobs, as Hydra resolves it (it may hold ${now:...})
            OmegaConf.update(cfg, "hydra.sweep.dir", str(jobs[0].cfg.hydra.sweep.dir), force_add=True)
        jobs.append(Job(overrides, cfg, job_dir(cfg, multirun)))
    return jobs


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The job's config as the job sees it (Hydra's own node removed)."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
