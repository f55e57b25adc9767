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

from .config import validate
from .errors import UserError
from .io import Interrupted
from .runner.execute import run
from .runner.lock import run_lock
from .runner.rundir import check_job_dirs
from .runner.summary import format_summary

log = logging.getLogger(__name__)
#: set by main() once every job of the command line has passed its start-up checks: a job Hydra then runs in
#: this process is not checked twice (a job submitit runs in another process imports this module afresh)
_checked_here = False

# -- command line -------------------------------------------------------------------------------------
def pin_local_gpu(job_num: int | None) -> None:
    """hydra/launcher=gpus: submitit_local shows every job all GPUs (CUDA_VISIBLE_DEVICES=0,...,N-1);
    keep GPU job_num mod N only, so the N jobs of a batch run on N different GPUs. Must run before
    CUDA is initialised; a no-op outside submitit_local jobs."""
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if os.environ.get("SUBMITIT_EXECUTOR") != "local" or job_num is None or len(visible) < 2:
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[job_num % len(visible)]
    log.info("job %d pinned to GPU %s", job_num, visible[job_num % len(visible)])


def _job_num() -> int | None:
    from hydra.core.hydra_config import HydraConfig

    num = OmegaConf.select(HydraConfig.get(), "job.num", default=None)  # missing in single runs
    return None if num is None else int(num)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    pin_local_gpu(_job_num())
    try:
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
