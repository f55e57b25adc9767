"""Sweeps at scale: launcher configs, sharded multirun == unsharded run, resume, refusal, aggregation."""

import json
import os
import sys

import pytest
import submitit
from hydra.utils import instantiate
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from dps_map.errors import ConfigError
from dps_map.io import read_jsonl
from dps_map.run import pin_local_gpu
from dps_map.runner import run

from support import CONF, compose, run_with_guard

ROOT = CONF.parent
# tiny sizes: 4 demo crops, random-init tiny prior, 3 DPS steps, 2 samples per crop
SMALL = ["sampler=dps", "sampler.respacing=3", "prior.random_init=true", "data.per_photo=2", "num_samples=2",
         "progress=false"]


def compose_cfg(*overrides, hydra=False):
    return compose(*overrides, hydra=hydra)


def launcher_params(*overrides) -> tuple[str, dict, dict]:
    """The launcher class Hydra instantiates for these overrides, its parameters, and the sweeper config."""
    cfg = compose_cfg(*overrides, hydra=True)
    OmegaConf.update(cfg, "hydra.sweep.dir", "/tmp/sweep", force_add=True)
    OmegaConf.update(cfg, "hydra.job.name", "run", force_add=True)
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    if cfg.hydra.launcher._target_.endswith("BasicLauncher"):  # Hydra's own: not instantiable from config
        return cfg.hydra.launcher._target_, {}, sweeper
    launcher = instantiate(cfg.hydra.launcher)
    return type(launcher).__name__, dict(launcher.params), sweeper


def submitit_params(params: dict) -> dict:
    """The executor parameters as hydra-submitit-launcher passes them (generic or executor-prefixed)."""
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    return {k: v for k, v in params.items() if k in base} | {k: v for k, v in params.items() if k not in base}


def test_local_launcher_is_the_default_and_serial():
    launcher, _, sweeper = launcher_params()
    assert launcher == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert sweeper["max_batch_size"] is None
    assert launcher_params("hydra/launcher=local")[0] == launcher


def test_gpus_launcher_runs_one_job_per_gpu_in_parallel(monkeypatch, tmp_path):
    monkeypatch.setenv("DPS_MAP_GPUS", "4")
    launcher, params, sweeper = launcher_params("hydra/launcher=gpus")
    assert launcher == "LocalLauncher"
    assert params["gpus_per_node"] == 4 and params["tasks_per_node"] == 1 and params["nodes"] == 1
    assert sweeper["max_batch_size"] == 4  # at most one running job per GPU
    # submitit's local executor accepts these parameters and shows each job all 4 GPUs ...
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="local")
    executor.update_parameters(**{k: v for k, v in submitit_params(params).items() if k != "submitit_folder"})
    assert executor._executor.parameters["gpus_per_node"] == 4
    # ... and dps_map.run keeps one of them per job: a batch of 4 jobs lands on 4 different GPUs
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    pinned = []
    for job in range(8):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
        pin_local_gpu(job)
        pinned.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert pinned == ["0", "1", "2", "3"] * 2
    monkeypatch.setenv("DPS_MAP_GPUS", "2")
    assert launcher_params("hydra/launcher=gpus")[2]["max_batch_size"] == 2
    # without DPS_MAP_GPUS: as many parallel jobs as this machine has GPUs
    monkeypatch.delenv("DPS_MAP_GPUS")
    monkeypatch.setattr("torch.cuda.device_count", lambda: 3)
    assert launcher_params("hydra/launcher=gpus")[1]["gpus_per_node"] == 3


def test_slurm_launcher_resources_from_env_and_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("DPS_MAP_SLURM_PARTITION", "gpu-a100")
    monkeypatch.setenv("DPS_MAP_SLURM_TIME_MIN", "90")
    monkeypatch.setenv("DPS_MAP_SLURM_CPUS", "6")
    launcher, params, sweeper = launcher_params("hydra/launcher=slurm", "hydra.launcher.mem_gb=32")
    assert launcher == "SlurmLauncher"
    assert (params["partition"], params["timeout_min"], params["cpus_per_task"], params["mem_gb"],
            params["gpus_per_task"]) == ("gpu-a100", 90, 6, 32, 1)
    assert sweeper["max_batch_size"] is None  # the whole array is submitted at once
    # the sbatch script submitit would write (no cluster needed: skip its srun probe)
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda *a: 1))
    params = dict(params)
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m dps_map.run", "uid")
    for line in ("--partition=gpu-a100", "--time=90", "--cpus-per-task=6", "--mem=32GB", "--gpus-per-task=1",
                 "--ntasks-per-node=1", "--signal=USR2@120"):
        assert f"#SBATCH {line}" in script, line


def cli(*args, cpu_limit=300):
    return run_with_guard([sys.executable, "-m", "dps_map.run", *args], capture_output=True, text=True,
                          cpu_limit=cpu_limit)


def recon_files(dirs) -> dict:
    return {p.name: p for d in dirs for p in (d / "recon").glob("*.png")}


def comparable(records):
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in records), key=lambda r: (r["id"], r["k"]))


def test_two_shard_multirun_equals_one_run_resumes_and_aggregates(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    proc = cli("-m", *SMALL, "data.num_shards=2", "data.shard=0,1", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    shards = sorted(p.parent for p in sweep.rglob("run.json"))
    assert len(shards) == 2 and all("data.shard=" in p.name for p in shards)

    whole = tmp_path / "whole"
    summary = run(compose_cfg(*SMALL), whole)
    shard_summaries = [json.loads((d / "summary.json").read_text()) for d in shards]
    # same config digest, every id exactly once, same pixels and same metrics
    assert {s["digest"] for s in shard_summaries} == {summary["digest"]}
    ids = [{r["id"] for r in read_jsonl(d / "metrics.jsonl")} for d in shards]
    assert not ids[0] & ids[1] and ids[0] | ids[1] == {r["id"] for r in read_jsonl(whole / "metrics.jsonl")}
    assert len(ids[0] | ids[1]) == 4
    sharded, single = recon_files(shards), recon_files([whole])
    assert sorted(sharded) == sorted(single) and len(single) == 8
    assert all(sharded[name].read_bytes() == single[name].read_bytes() for name in single)
    assert comparable(r for d in shards for r in read_jsonl(d / "metrics.jsonl")) == \
        comparable(read_jsonl(whole / "metrics.jsonl"))

    # rerun of the same sweep: nothing recomputed, no file rewritten
    mtimes = {name: p.stat().st_mtime_ns for name, p in sharded.items()}
    again = cli("-m", *SMALL, "data.num_shards=2", "data.shard=0,1", f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr
    assert [json.loads((d / "summary.json").read_text())["n_new_samples"] for d in shards] == [0, 0]
    assert {name: p.stat().st_mtime_ns for name, p in recon_files(shards).items()} == mtimes

    # another config into an existing job directory: refused, nothing written
    with pytest.raises(ConfigError, match="holds outputs of another config"):
        run(compose_cfg(*SMALL, "data.num_shards=2", "data.shard=0", "seed=1"), shards[0])
    assert {name: p.stat().st_mtime_ns for name, p in recon_files(shards).items()} == mtimes
    assert json.loads((shards[0] / "run.json").read_text())["digest"] == summary["digest"]

    # aggregation: the two shards form one group with all 8 samples; a second config is its own group
    from dps_map.aggregate import main
    from dps_map.runner.sweep_results import aggregate

    other = sweep / "other"
    other_cfg = compose_cfg(*SMALL, "sampler=ddpm", "sampler.respacing=2", "data.per_photo=1")
    run(other_cfg, other)
    (other / ".hydra").mkdir()
    OmegaConf.save(other_cfg, other / ".hydra" / "config.yaml")
    result = aggregate(sweep, random_weights=True)
    assert result["total"] == {"n_groups": 2, "n_jobs": 3, "n_samples": 12, "n_failed": 0}
    group = result["groups"][summary["digest"]]
    assert group["n_samples"] == 8 and group["shards"] == {"num_shards": 2, "present": [0, 1], "missing": []}
    psnr = [r["psnr"] for r in read_jsonl(whole / "metrics.jsonl")]
    assert group["metrics"]["psnr"]["mean"] == pytest.approx(sum(psnr) / len(psnr))
    assert group["metrics"]["psnr"]["sem"] == pytest.approx(summary["metrics"]["psnr"]["sem"])
    assert group["metrics"]["fid_n_samples"] == 8 and group["metrics"]["fid"] >= 0
    on_disk = json.loads((sweep / "aggregate.json").read_text())
    assert on_disk["total"]["n_samples"] == 12
    table = (sweep / "aggregate.md").read_text()
    assert "sr4/tiny/dps" in table and "sr4/tiny/ddpm" in table and "| 8 | 0 | 2/2 |" in table

    # without the Inception weights FID/KID are skipped with the reason (the file that is missing)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.delenv("DPS_MAP_FID_INCEPTION", raising=False)
    assert main([str(sweep)]) == 0
    skipped = json.loads((sweep / "aggregate.json").read_text())["groups"][summary["digest"]]["metrics"]
    assert "fid" not in skipped and "pt_inception-2015-12-05-6726825d.pth" in skipped["fid_skipped"]
    assert "FID/KID skipped" in (sweep / "aggregate.md").read_text()


def test_aggregate_of_a_folder_without_runs_is_a_user_error(tmp_path, capsys):
    from dps_map.aggregate import main

    assert main([str(tmp_path)]) == 2
    assert "no dps-map run directories" in capsys.readouterr().err


def test_long_overrides_give_short_unique_job_directories():
    """Hydra names a sweep job's directory after its overrides; with long ARGS (paths, toy flags) the name would pass
    the file system's 255 bytes and the job would die creating it. Past 200 bytes the name is cut, task/sampler/
    prior/shard first, with a hash of the whole: the same job gets the same directory (resume), two jobs never one."""
    from dps_map.config.sweep import job_subdir

    short = "data.shard=0,sampler=dps,task=sr4"
    assert job_subdir(short) == short
    long = ",".join([f"paths.adm512=/{'very/' * 30}512x512_diffusion.pt", "prior.unet.num_channels=32",
                     "sampler=dmap", "task=sr8"])
    names = {job_subdir(long.replace("task=sr8", f"data.shard={k},task=sr8")) for k in range(8)}
    assert len(names) == 8 and all(len(n.encode()) <= 200 for n in names)
    assert all(n.startswith("task=sr8,sampler=dmap,data.shard=") for n in names)
    assert job_subdir(long) == job_subdir(long) != job_subdir(long + "x")
    from dps_map.config.sweep import expand_jobs

    jobs = expand_jobs(["task=sr4", "sampler=dps,dmap", "data.num_shards=2", "data.shard=0,1",
                        f"paths.checkpoints=/{'long/' * 40}checkpoints", "hydra.sweep.dir=/tmp/sweep"])
    dirs = {job.run_dir for job in jobs}
    assert len(dirs) == 4 and all(len(d.name.encode()) <= 200 for d in dirs)


def test_aggregate_merges_the_shards_diversity_over_all_measurements(tmp_path):
    """A diversity sweep's shards each hold the means over their own measurements; the group's diversity is the
    mean over all the group's measurements (weighted by each shard's count), not the mean of the shard means."""
    from dps_map.runner.sweep_results import diversity

    jobs = []  # as find_jobs reads them: each job's summary.json under "summary"
    for k, (n, std, l2) in enumerate([(3, 0.10, 0.5), (1, 0.30, 0.9)]):
        jobs.append({"dir": tmp_path / f"shard{k}", "summary": {"metrics": {"psnr": {"mean": 20.0}, "diversity": {
            "pixel_std": std, "pairwise_l2": l2, "n_measurements": n}}}})
    assert diversity(jobs) == pytest.approx({"pixel_std": (3 * 0.10 + 0.30) / 4, "pairwise_l2": (3 * 0.5 + 0.9) / 4,
                                             "n_measurements": 4})
    jobs[1]["summary"] = {"metrics": {"psnr": {"mean": 20.0}}}
    assert diversity(jobs)["n_measurements"] == 3 and diversity(jobs[1:]) is None


def test_aggregate_builds_one_inception_and_passes_each_reference_set_once(tmp_path, monkeypatch):
    """Three groups: two on the same four references (another seed), one on two of them. One network is built,
    the four references go through it once, the two once; each group's FID/KID equal those of its own images'
    features computed directly with that network."""
    import numpy as np
    import torch

    import dps_map.metrics
    from dps_map.io import load_image
    from dps_map.metrics import fid_from_features, kid
    from dps_map.runner.sweep_results import aggregate

    built, images_in = [], []

    class Counting(dps_map.metrics.InceptionFeatures):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

        def forward(self, images):
            images_in.append(len(images))
            return super().forward(images)

    monkeypatch.setattr(dps_map.metrics, "InceptionFeatures", Counting)
    sweep = tmp_path / "sweep"
    base = ["sampler=ddpm", "sampler.respacing=2", "prior.random_init=true", "num_samples=1", "progress=false",
            "metrics=fast"]
    configs = {"a": ["data.per_photo=2"], "b": ["data.per_photo=2", "seed=1"], "c": ["data.per_photo=1"]}
    for name, extra in configs.items():
        cfg = compose_cfg(*base, *extra)
        run(cfg, sweep / name)
        (sweep / name / ".hydra").mkdir()
        OmegaConf.save(cfg, sweep / name / ".hydra" / "config.yaml")
    result = aggregate(sweep, random_weights=True)

    (net,) = built
    n_samples = {name: len(list((sweep / name / "recon").glob("*.png"))) for name in configs}
    n_references = {name: len(list((sweep / name / "label").glob("*.png"))) for name in configs}
    assert n_samples == n_references == {"a": 4, "b": 4, "c": 2}
    assert sum(images_in) == sum(n_samples.values()) + 4 + 2  # the samples, and each reference set once

    def features(files):  # one batch (aggregate's are 16), in its order: the sums of FID and KID's subsets follow it
        with torch.no_grad():
            return net(torch.stack([load_image(p, cfg.prior.unet.image_size)[0] for p in files])).numpy()

    for name in configs:
        group = next(g for g in result["groups"].values() if g["jobs"] == [str(sweep / name)])
        records = [r for r in read_jsonl(sweep / name / "metrics.jsonl") if r.get("k") != "all"]
        fake = features([sweep / name / "recon" / f"{r['id']}_{r['k']}.png" for r in records])
        real = features(sorted((sweep / name / "label").glob("*.png")))
        k_mean, k_std = kid(fake, real, subsets=100, subset_size=min(len(fake), len(real)),
                            generator=np.random.default_rng(0))
        assert group["metrics"]["fid"] == float(fid_from_features(fake, real)), name
        assert group["metrics"]["kid"] == {"mean": float(k_mean), "std": float(k_std)}, name
