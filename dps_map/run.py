"""The command `python -m dps_map.run` (console script `dps-map`): check every job of the command line,
then let Hydra run them through :func:`dps_map.runner.run`.

    python -m dps_map.run task=sr4 prior=tiny sampler=dmap data=demo num_samples=2
    python -m dps_map.run -m task=sr4,sr8 sampler=dps,dmap hydra/launcher=gpus
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .config import CONF_DIR, validate
from .errors import ConfigError, UserError
from .runner.execute import run
from .runner.lock import run_lock
from .runner.rundir import check_job_dirs
from .runner.summary import format_summary
from .signals import Interrupted

log = logging.getLogger(__name__)
#: set by main() once every job of the command line has passed its start-up checks: a job Hydra then runs in
#: this process is not checked twice (a job submitit runs in another process imports this module afresh)
_checked_here = False

# -- command line -------------------------------------------------------------------------------------
#: the GPUs of a hydra/launcher=gpus sweep, comma-separated, as the launching process saw them (its
#: CUDA_VISIBLE_DEVICES, or every GPU of the machine). Its jobs inherit this variable: submitit_local
#: overwrites their CUDA_VISIBLE_DEVICES with 0,...,N-1, which would ignore the user's choice.
SWEEP_GPUS_ENV = "DPS_MAP_SWEEP_GPUS"


def _gpu_list(text: str) -> list[str]:
    return [d.strip() for d in text.split(",") if d.strip()]


def visible_gpus() -> list[str]:
    """The GPUs this process may use, named as CUDA_VISIBLE_DEVICES names them (indices or UUIDs): its
    CUDA_VISIBLE_DEVICES entries that CUDA accepts, or every GPU of the machine when it is unset. Counted
    through NVML (torch.cuda.device_count), so CUDA is not initialised."""
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return _gpu_list(listed)[:count]  # CUDA drops the entries from the first one it cannot use


def _launcher(hydra_cfg) -> str | None:
    """The hydra/launcher option (gpus, local, slurm, ...) of Hydra's node of a config."""
    choices = OmegaConf.select(hydra_cfg, "runtime.choices", default=None)
    return None if choices is None else choices.get("hydra/launcher")


def check_gpu_launcher(jobs: list) -> list[str] | None:
    """hydra/launcher=gpus, in the launching process before any job is submitted: refuse a sweep that
    would run on the CPU (no GPU visible, or device=cpu) or on a GPU its jobs do not see (each job sees one,
    as cuda:0), and export the GPUs the jobs are spread over (SWEEP_GPUS_ENV: the first gpus_per_node of
    the visible ones). Returns that list, or None for another launcher. Raises ConfigError."""
    if not jobs or _launcher(jobs[0].cfg.hydra) != "gpus":
        return None
    for device in sorted({str(job.cfg.device) for job in jobs}):
        if device == "cpu":
            raise ConfigError("device=cpu with hydra/launcher=gpus, which runs every job on a GPU: use "
                              "hydra/launcher=local to run on the CPU")
        if device not in ("auto", "cuda", "cuda:0"):
            raise ConfigError(f"device={device} with hydra/launcher=gpus: each job sees one GPU, as cuda:0; "
                              "use device=auto (or cuda)")
    gpus = visible_gpus()
    if not gpus:
        shown = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ConfigError("hydra/launcher=gpus but no GPU is visible here ("
                          + ("CUDA_VISIBLE_DEVICES unset" if shown is None else f"CUDA_VISIBLE_DEVICES='{shown}'")
                          + "): run it on a machine with a GPU, or use hydra/launcher=local to run on the CPU")
    per_node = int(jobs[0].cfg.hydra.launcher.gpus_per_node)
    if per_node < 1:
        raise ConfigError(f"hydra.launcher.gpus_per_node (DPS_MAP_GPUS) must be at least 1, got {per_node}")
    used = gpus[:per_node]
    os.environ[SWEEP_GPUS_ENV] = ",".join(used)
    return used


def pin_local_gpu(job_num: int | None) -> None:
    """In a submitit_local job: keep one GPU, entry job_num mod N of the sweep's GPUs (SWEEP_GPUS_ENV, set
    by the launching process; else the job's own CUDA_VISIBLE_DEVICES), so the jobs of a batch run on
    different GPUs, those the user made visible. Must run before CUDA is initialised; a no-op elsewhere."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "local" or job_num is None:
        return
    gpus = _gpu_list(os.environ.get(SWEEP_GPUS_ENV, os.environ.get("CUDA_VISIBLE_DEVICES", "")))
    if not gpus:
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[job_num % len(gpus)]
    log.info("job %d pinned to GPU %s", job_num, gpus[job_num % len(gpus)])


def cap_threads(cpus: int | None) -> None:
    """Cap this job's CPU threads at the launcher's cpus_per_task: submitit_local does not, and N parallel
    jobs each starting one thread per core would fight over the cores. None: no cap."""
    if cpus is None:
        log.info("CPU threads not capped (hydra.launcher.cpus_per_task is null)")
        return
    import torch

    cpus = int(cpus)
    if cpus < 1:
        raise ConfigError(f"hydra.launcher.cpus_per_task (DPS_MAP_CPUS_PER_JOB) must be at least 1, got {cpus}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # for libraries and processes started later
        os.environ[var] = str(cpus)
    torch.set_num_threads(cpus)
    log.info("CPU threads capped at %d (hydra.launcher.cpus_per_task, DPS_MAP_CPUS_PER_JOB)", cpus)


def check_gpu_job(device: str, job_num: int | None) -> None:
    """A job of hydra/launcher=gpus must compute on its GPU: refuse one that would fall back to the CPU."""
    import torch

    if str(device) == "cpu" or not torch.cuda.is_available():
        raise ConfigError(f"hydra/launcher=gpus: job {job_num} sees no GPU (CUDA_VISIBLE_DEVICES="
                          f"'{os.environ.get('CUDA_VISIBLE_DEVICES', '')}', device={device}) and would run on the "
                          "CPU; check the GPUs (nvidia-smi) and CUDA_VISIBLE_DEVICES, or use hydra/launcher=local")


def start_job(cfg: DictConfig) -> None:
    """What a job does before its run: pin a submitit_local job to its GPU; in a job of hydra/launcher=gpus
    also cap its CPU threads and refuse the CPU. Raises ConfigError."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    job_num = _job_num()
    pin_local_gpu(job_num)
    if os.environ.get("SUBMITIT_EXECUTOR") == "local" and _launcher(hydra_cfg) == "gpus":
        cap_threads(OmegaConf.select(hydra_cfg, "launcher.cpus_per_task", default=None))
        check_gpu_job(cfg.device, job_num)


def _job_num() -> int | None:
    from hydra.core.hydra_config import HydraConfig

    num = OmegaConf.select(HydraConfig.get(), "job.num", default=None)  # missing in single runs
    return None if num is None else int(num)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        start_job(cfg)
        summary = run(cfg, validated=_checked_here)
    except UserError as err:  # one clear line, no traceback (Hydra would print one)
        print(f"dps-map: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except Interrupted as stop:
        why = " (the time limit is near)" if stop.signum == signal.SIGUSR2 else ""
        print(f"dps-map: interrupted by {stop}{why}: finished samples are on disk; rerun the same command to "
              "resume", file=sys.stderr)
        sys.exit(128 + stop.signum)
    print(format_summary(summary))


def check_command_line(args: list[str], multirun: bool = False) -> list:
    """Compose and validate the config of every job of the command line before Hydra starts, so a typo
    (unknown key, group or option) or an impossible combination is one line and exit code 2 in the
    launching process, before any job is submitted. Returns the jobs (:class:`dps_map.config.sweep.Job`);
    raises UserError (naming the job's overrides when a sweep has several)."""
    from .config.sweep import expand_jobs, without_hydra

    jobs = expand_jobs(args, multirun)
    for job in jobs:
        try:
            validate(without_hydra(job.cfg))
        except UserError as err:
            if len(jobs) > 1:
                err.args = (f"job {' '.join(job.overrides)}: {err}",)
            raise
    return jobs


def main() -> None:
    """Console script `dps-map` (user errors print one line and exit 2, no traceback)."""
    args = sys.argv[1:]
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    multirun = len(overrides) < len(args)
    if any(a.startswith("-") for a in overrides):  # --help, --cfg, -cn ...: Hydra's own business
        _hydra_main()
        return
    try:
        jobs = check_command_line(overrides, multirun=multirun)
        gpus = check_gpu_launcher(jobs)
        if gpus is not None and multirun:
            cpus = OmegaConf.select(jobs[0].cfg, "hydra.launcher.cpus_per_task", default=None)
            per_node = int(jobs[0].cfg.hydra.launcher.gpus_per_node)
            print(f"dps-map: hydra/launcher=gpus: {len(jobs)} jobs on GPU {','.join(gpus)}, at most {per_node} at a "
                  f"time, {cpus if cpus is not None else 'uncapped'} CPU threads each", flush=True)
        global _checked_here
        _checked_here = True
        if multirun:
            check_job_dirs(jobs)
        run_dir = None if multirun else lockable_dir(jobs[0])
        with ExitStack() as stack:
            if run_dir is not None:  # locked before Hydra writes .hydra/ and its log into the directory
                stack.enter_context(run_lock(run_dir))
            _hydra_main()
    except UserError as err:
        print(f"dps-map: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


def lockable_dir(job) -> Path | None:
    """A single run's directory as Hydra will set it, or None when it holds a time stamp (Hydra's own
    would differ): then run() alone takes the lock."""
    if "now:" in str(job.cfg.hydra.run._get_node("dir")._value()):
        return None
    return Path(job.run_dir).absolute()


if __name__ == "__main__":
    main()
