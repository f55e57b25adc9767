"""hydra/launcher=gpus: the jobs use the GPUs the user made visible, cap their CPU threads, never fall back to
the CPU; the aggregate flags a group whose jobs ran on different devices. No GPU needed: the job environment
and CUDA's answers are simulated."""

import json
import os
import sys

import pytest
import submitit
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from dps_map.config.sweep import expand_jobs
from dps_map.errors import ConfigError
from dps_map.run import SWEEP_GPUS_ENV, check_gpu_launcher, pin_local_gpu, start_job
from dps_map.runner.rundir import write_marker

from support import compose, run_with_guard

SWEEP = ["hydra/launcher=gpus", "data.num_shards=4", "data.shard=range(4)", "hydra.sweep.dir=/tmp/sweep"]


@pytest.fixture
def machine(monkeypatch):
    """A machine with `count` GPUs visible to this process (through CUDA_VISIBLE_DEVICES when `visible` is
    given); restores the environment the launcher and the jobs change."""
    for var in (SWEEP_GPUS_ENV, "CUDA_VISIBLE_DEVICES", "DPS_MAP_GPUS", "SUBMITIT_EXECUTOR", "OMP_NUM_THREADS",
                "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "")  # recorded, so the value the launcher or a job sets is undone after the test
        monkeypatch.delenv(var)

    def gpus(count: int, visible: str | None = None):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        if visible is not None:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)

    return gpus


def submitit_job_env(monkeypatch, tmp_path, gpus_per_node: int) -> dict:
    """The environment submitit's local executor gives a job submitted from this process (its process is
    not started: Popen only records the environment)."""
    seen = {}

    class Process:
        pid = 4242

        def __init__(self, cmd, shell=False, env=None):
            seen.update(env)

        def poll(self):
            return 0

    monkeypatch.setattr(submitit.local.local.subprocess, "Popen", Process)
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="local")
    executor.update_parameters(gpus_per_node=gpus_per_node, tasks_per_node=1, nodes=1)
    executor._executor._submit_command("true")
    return seen


def test_job_j_runs_on_entry_j_of_the_gpus_the_user_made_visible(machine, monkeypatch, tmp_path):
    machine(2, visible="6,7")  # the user's shell: CUDA_VISIBLE_DEVICES=6,7
    jobs = expand_jobs(SWEEP)
    assert check_gpu_launcher(jobs) == ["6", "7"] and os.environ[SWEEP_GPUS_ENV] == "6,7"
    env = submitit_job_env(monkeypatch, tmp_path, int(jobs[0].cfg.hydra.launcher.gpus_per_node))
    # submitit overwrites the job's list with 0,...,N-1: GPUs 0 and 1 of the machine, not the user's
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and env["SUBMITIT_EXECUTOR"] == "local"
    assert env[SWEEP_GPUS_ENV] == "6,7"  # but the job inherits the launching process's list
    pinned = []
    for job_num in range(4):
        for var in ("CUDA_VISIBLE_DEVICES", "SUBMITIT_EXECUTOR", SWEEP_GPUS_ENV):
            monkeypatch.setenv(var, env[var])
        pin_local_gpu(job_num)
        pinned.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert pinned == ["6", "7", "6", "7"]


def test_the_sweeps_gpus_all_of_the_machine_or_the_first_gpus_per_node(machine, monkeypatch):
    machine(3)  # CUDA_VISIBLE_DEVICES unset: every GPU of the machine
    assert check_gpu_launcher(expand_jobs(SWEEP)) == ["0", "1", "2"]
    assert os.environ[SWEEP_GPUS_ENV] == "0,1,2"
    machine(3, visible="GPU-a,GPU-b,GPU-c")  # UUIDs are kept as the user wrote them
    monkeypatch.setenv("DPS_MAP_GPUS", "2")  # two jobs at a time: on the first two of the user's GPUs
    assert check_gpu_launcher(expand_jobs(SWEEP)) == ["GPU-a", "GPU-b"]
    assert os.environ[SWEEP_GPUS_ENV] == "GPU-a,GPU-b"
    machine(2, visible="4,5,99")  # CUDA ignores an entry it cannot use, and those after it
    monkeypatch.delenv("DPS_MAP_GPUS")
    assert check_gpu_launcher(expand_jobs(SWEEP)) == ["4", "5"]
    assert check_gpu_launcher(expand_jobs(["hydra/launcher=local", "seed=0,1"])) is None  # another launcher


@pytest.mark.parametrize("overrides, message", [
    ([], "no GPU is visible"),
    (["device=cpu"], "device=cpu with hydra/launcher=gpus"),
    (["device=cuda:1"], "device=cuda:1 with hydra/launcher=gpus"),
])
def test_the_launching_process_refuses_a_gpus_sweep_that_would_miss_its_gpus(machine, overrides, message):
    machine(0 if not overrides else 2)
    with pytest.raises(ConfigError, match=message):
        check_gpu_launcher(expand_jobs(SWEEP + overrides))
    assert SWEEP_GPUS_ENV not in os.environ


@pytest.fixture
def gpus_job(machine, monkeypatch):
    """This process as job 3 of a hydra/launcher=gpus sweep started with CUDA_VISIBLE_DEVICES=6,7 and
    DPS_MAP_CPUS_PER_JOB=3 (its CUDA_VISIBLE_DEVICES overwritten by submitit); returns its config."""
    monkeypatch.setenv("DPS_MAP_CPUS_PER_JOB", "3")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv(SWEEP_GPUS_ENV, "6,7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def job(*overrides):
        cfg = compose("hydra/launcher=gpus", *overrides, hydra=True)
        OmegaConf.update(cfg, "hydra.job.num", 3, force_add=True)
        monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # restored after the test
        HydraConfig.instance().set_config(cfg)
        return cfg

    threads = torch.get_num_threads()
    yield job
    torch.set_num_threads(threads)


def test_a_gpus_job_pins_its_gpu_and_caps_its_threads_before_its_run(gpus_job, caplog):
    cfg = gpus_job()
    with caplog.at_level("INFO", logger="dps_map.run"):
        start_job(cfg)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"  # job 3 of two GPUs 6,7
    assert torch.get_num_threads() == 3
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "3"
    assert "CPU threads capped at 3" in caplog.text and "pinned to GPU 7" in caplog.text


def test_a_gpus_job_that_would_run_on_the_cpu_refuses(gpus_job, monkeypatch):
    cfg = gpus_job()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the GPU it was given is not there
    with pytest.raises(ConfigError, match="job 3 sees no GPU .* would run on the CPU"):
        start_job(cfg)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="would run on the CPU"):
        start_job(gpus_job("device=cpu"))


def test_a_single_run_is_not_a_gpus_job(gpus_job, monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR")  # run in the launching process: Hydra ignores the launcher
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    torch.set_num_threads(1)
    start_job(gpus_job())
    assert torch.get_num_threads() == 1 and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_gpus_sweep_on_a_machine_without_gpu_is_one_line_and_no_job(tmp_path):
    sweep = tmp_path / "sweep"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no GPU, even on a machine that has some
    proc = run_with_guard([sys.executable, "-m", "dps_map.run", "-m", "hydra/launcher=gpus", "prior=tiny", "data=demo",
                           "sampler=dps", "sampler.respacing=2", "prior.random_init=true", "data.per_photo=1",
                           "progress=false", f"hydra.sweep.dir={sweep}"],
                          capture_output=True, text=True, cpu_limit=300, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dps-map: error: hydra/launcher=gpus but no GPU"), proc.stderr
    assert not sweep.exists()


# -- the aggregate ------------------------------------------------------------------------------------
def fake_job(root, name: str, digest: str, **summary) -> None:
    """A finished run directory: run.json, one record, and a summary.json with these device fields."""
    job = root / name
    job.mkdir(parents=True)
    write_marker(job, digest, {})
    (job / "metrics.jsonl").write_text(json.dumps({"id": name, "k": 0, "psnr": 20.0, "seconds": 1.0}) + "\n")
    (job / "summary.json").write_text(json.dumps({"n_expected": 1, "metrics": {}, **summary}))


def test_aggregate_flags_a_group_whose_jobs_ran_on_different_devices(tmp_path, capsys):
    from dps_map.aggregate import main

    h100 = {"device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3", "precision": "fp32"}
    fake_job(tmp_path, "a0", "mixed", **h100)
    fake_job(tmp_path, "a1", "mixed", device="cpu", device_name="AMD EPYC 7763", precision="fp32")
    fake_job(tmp_path, "b0", "same", **h100)
    fake_job(tmp_path, "b1", "same", **dict(h100, device="cuda:1"))  # another GPU of the same kind
    fake_job(tmp_path, "b2", "same", device="cuda:0")  # an older summary: no device_name, no precision
    fake_job(tmp_path, "c0", "precision", **h100)
    fake_job(tmp_path, "c1", "precision", **dict(h100, precision="bf16"))
    assert main([str(tmp_path)]) == 0
    table = capsys.readouterr().out
    result = json.loads((tmp_path / "aggregate.json").read_text())
    groups = result["groups"]
    assert groups["mixed"]["mixed_devices"] == ["device", "device_name"]
    assert groups["mixed"]["devices"]["device"] == {"cpu": [str(tmp_path / "a1")], "cuda": [str(tmp_path / "a0")]}
    assert groups["same"]["mixed_devices"] == [] and groups["same"]["devices"]["device"] == {
        "cuda": [str(tmp_path / d) for d in ("b0", "b1", "b2")]}
    assert groups["precision"]["mixed_devices"] == ["precision"]
    assert result["mixed_device_groups"] == ["a0", "c0"]
    assert "| a0 **MIXED DEVICES** | 2 |" in table and "| c0 **MIXED DEVICES** | 2 |" in table
    assert "| b0 | 3 |" in table
    assert "- a0: device cpu (1 job), cuda (1 job); device_name AMD EPYC 7763 (1 job), NVIDIA H100" in table
    assert "- c0: precision bf16 (1 job), fp32 (1 job)" in table
