"""What the tests share: where the repository and its config tree are, and one way to compose a config.

    from support import CONF, ROOT, compose
    cfg = compose("task=sr4", "prior=tiny")                       # conf/config.yaml + overrides
    cfg = compose("steps=2", config="train_reference")            # another primary config
    cfg = compose("hydra/launcher=slurm", hydra=True)              # with Hydra's own node (launchers, sweeps)
    sampler = built_sampler({"method": "dps", "zeta": 0.5})        # a sampler from a config node, as a run builds it
    prior = shipped_prior("gmm")                                  # a shipped prior YAML, built (gmm, sd2_tiny)
    prior = small_adm()                                           # a 16x16 ADM with random, non-zero weights
    proc = run_with_guard([sys.executable, "-m", "dps_map.run", ...])  # a subprocess, ended only if it hangs

(pytest puts tests/ on sys.path, so `import support` works from every test file.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from omegaconf import DictConfig, OmegaConf
from PIL import Image

import dps_map.config  # noqa: F401  (registers the resolvers the YAMLs use)
from dps_map.config.sweep import compose_jobs, without_hydra
from dps_map.config.targets import build_prior, build_sampler
from dps_map.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose(*overrides: str, config: str = "config", hydra: bool = False, conf_dir: Path | str = CONF) -> DictConfig:
    """The primary config `config` of `conf_dir` (conf/) with these Hydra overrides, composed the way the
    commands compose it (dps_map.config.sweep); `hydra=True` keeps Hydra's node, as a launcher or a sweep reads it."""
    (cfg,) = compose_jobs([list(overrides)], config=config, conf_dir=conf_dir)
    return cfg if hydra else without_hydra(cfg)


def built_sampler(node) -> object:
    """The sampler of a config node that names its method (`method: dps`), built the way a run builds
    conf/sampler/*.yaml: through its `_target_` (the method's class) with the node's other keys."""
    node = OmegaConf.to_container(node) if isinstance(node, DictConfig) else dict(node)
    cls = SAMPLERS[node["method"]]
    return build_sampler(OmegaConf.create({"name": node["method"], "_target_": f"{cls.__module__}.{cls.__name__}",
                                           **node}))


def shipped_prior(name: str, **overrides):
    """The prior of conf/prior/NAME.yaml (its own keys; `overrides` replace some), built on the CPU. For
    priors whose YAML needs no `${paths.*}` (gmm, sd2_tiny); the tiny prior: dps_map.load_prior("tiny")."""
    return build_prior(OmegaConf.merge(OmegaConf.load(CONF / "prior" / f"{name}.yaml"), overrides))


#: a 16x16 ADM UNet (create_model flags) small enough for unit tests of the samplers and adapters
SMALL_UNET = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
                  num_head_channels=32, learn_sigma=True, use_scale_shift_norm=True, resblock_updown=True)


def small_adm():
    """An unconditional ADMPrior around SMALL_UNET with seeded random weights (priors.adm.random_network: the
    zero-initialised layers re-drawn, so eps depends on x_t and t)."""
    from dps_map.diffusion import make_betas
    from dps_map.priors.adm import ADMPrior, build_unet, random_network

    return ADMPrior(random_network(build_unet, SMALL_UNET), make_betas(), learn_sigma=True)


def png_psnr(recon, label) -> float:
    """PSNR in dB of two 8-bit PNGs on [0, 1], 10 log10(1 / MSE), computed in numpy from the files (a run scores its
    unrounded samples, so its PSNR lies within about 0.1 dB of this)."""
    a, b = (np.asarray(Image.open(p), dtype=np.float64) / 255 for p in (recon, label))
    return float(10 * np.log10(1 / np.mean((a - b) ** 2)))


# -- subprocesses: guarded against hangs, never against a slow machine ------------------------------------------
class Hung(AssertionError):
    """A test's subprocess ended by run_with_guard's hang guard (the message says which guard, and the output)."""


def _family(proc: subprocess.Popen) -> list[psutil.Process]:
    """proc and every process it started that still descends from it (empty once proc has ended)."""
    try:
        top = psutil.Process(proc.pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_seconds(process: psutil.Process) -> float | None:
    """The CPU time (user + system) the process has used itself; None once it has ended."""
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return None
    return times.user + times.system


def _end_family(proc: subprocess.Popen, seen: list[psutil.Process]) -> None:
    """SIGKILL proc's process group (a shell's, make's and a Hydra multirun's children stay in it, also once
    orphaned), then every process of its family seen (`seen`) or still there that moved to a group of its own."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group has ended
        pass
    killed = []
    for member in {*seen, *_family(proc)}:
        try:
            member.kill()  # psutil checks the pid still names the process it saw (no reused pid is killed)
        except psutil.NoSuchProcess:  # ended already
            continue
        killed.append(member)
    proc.wait()
    psutil.wait_procs(killed, timeout=10)  # gone, so none uses a core after the test


def run_with_guard(args, *, cpu_limit: float = 600, idle: float = 600, cwd=None, env=None, input: str | None = None,
                   check: bool = False, capture_output: bool = True, text: bool = True,
                   poll: float = 1.0) -> subprocess.CompletedProcess:
    """subprocess.run(args, capture_output=True, text=True) for a test, guarded against hangs only (it always
    captures text: capture_output and text may be given, as to subprocess.run, but only as True).

    The command runs in a session of its own. It is ended, with everything it started (SIGKILL to its process
    group and to every descendant, so no grandchild goes on using a core after the test), and Hung is raised, only
    when it hangs:
    - `idle`: none of its processes has used any CPU time, and none has started, for that many seconds of wall
      time (a deadlock, a wait that never ends);
    - `cpu_limit`: its processes together have used that many CPU seconds (a loop that never ends); give several
      times what a correct run uses (the default suits commands of a minute or less): CPU time, unlike wall
      time, hardly grows when other work shares the cores.
    Neither guard counts wall time as such, so a busy machine only makes a correct run slower, never failed.
    When the command ends by itself, any process it left running (in its group, or a descendant seen) is ended too.
    Output goes to temporary files (no pipe to fill and block on), returned as text like subprocess.run's."""
    assert capture_output and text, "support.run_with_guard always captures the output as text"
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, cwd=cwd, env=env, text=True, start_new_session=True, stdout=out, stderr=err,
                                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        if input is not None:
            proc.stdin.write(input)
            proc.stdin.close()
        seen: dict[psutil.Process, float] = {}  # every process of the family seen -> its CPU seconds
        last_progress, hung = time.monotonic(), None
        while True:
            try:
                proc.wait(timeout=poll)
                break
            except subprocess.TimeoutExpired:
                pass
            for member in _family(proc):  # psutil.Process: equal only for the same pid and start time
                cpu = _cpu_seconds(member)
                if cpu is not None and seen.get(member) != cpu:  # CPU used, or a new process
                    seen[member], last_progress = cpu, time.monotonic()
            if sum(seen.values()) > cpu_limit:
                hung = f"used more than {cpu_limit:.0f} CPU seconds (cpu_limit)"
            elif time.monotonic() - last_progress > idle:
                hung = f"used no CPU for {idle:.0f} s (idle)"
            if hung:
                break
        _end_family(proc, list(seen))  # on a hang: all of it; otherwise whatever the command left running
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(args, proc.returncode, out.read(), err.read())
    if hung:
        raise Hung(f"{args!r} {hung}: ended with every process it started\n"
                   f"stdout: ...{result.stdout[-2000:]}\nstderr: ...{result.stderr[-3000:]}")
    if check:
        result.check_returncode()
    return result
