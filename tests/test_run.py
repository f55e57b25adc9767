"""End to end through the Hydra entry point: outputs, reproducibility, resume, refusal, logging."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

from dps_map.errors import ConfigError
from dps_map.io import read_jsonl
from dps_map.runner import run

from support import compose, run_with_guard


def config(*overrides):
    return compose("progress=false", *overrides)


def test_gmm_oracle_cli_writes_problem_and_samples(tmp_path):
    out = tmp_path / "oracle"
    proc = run_with_guard([sys.executable, "-m", "dps_map.run", "task=gmm_linear", "prior=gmm", "data=gmm", "sampler=oracle",
                           "num_samples=2000", "seed=0", f"hydra.run.dir={out}"],
                          capture_output=True, text=True, cpu_limit=300)
    assert proc.returncode == 0, proc.stderr
    problem = np.load(out / "problem.npz")
    assert set(problem.files) == {"weights", "means", "covs", "A", "y", "sigma_y", "x0"}
    assert problem["A"].shape == (2, 8) and problem["means"].shape == (25, 8)
    samples = np.load(out / "samples.npy")
    assert samples.shape == (2000, 8)
    # the oracle draws from the exact posterior: its sample mean and covariance match the posterior mixture's,
    # conditioned here from problem.npz (per component: C = (S^-1 + A^T A / s^2)^-1, m = C (S^-1 mu + A^T y / s^2),
    # weight ~ w N(y; A mu, A S A^T + s^2 I))
    A, y, s2 = problem["A"], problem["y"], float(problem["sigma_y"]) ** 2
    logw, means, covs = [], [], []
    for w, mu, S in zip(problem["weights"], problem["means"], problem["covs"]):
        C = np.linalg.inv(np.linalg.inv(S) + A.T @ A / s2)
        means.append(C @ (np.linalg.solve(S, mu) + A.T @ y / s2))
        covs.append(C)
        Sy = A @ S @ A.T + s2 * np.eye(len(y))
        r = y - A @ mu
        logw.append(np.log(w) - 0.5 * (r @ np.linalg.solve(Sy, r) + np.linalg.slogdet(2 * np.pi * Sy)[1]))
    post_w = np.exp(np.array(logw) - max(logw))
    post_w /= post_w.sum()
    mean = sum(w * m for w, m in zip(post_w, means))
    cov = sum(w * (C + np.outer(m - mean, m - mean)) for w, m, C in zip(post_w, means, covs))
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(samples.mean(0) - mean) < 5 * sd / np.sqrt(2000)), (samples.mean(0), mean)
    np.testing.assert_allclose(np.cov(samples.T), cov, atol=0.15 * np.abs(cov).max())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["sliced_wasserstein"] < 3 * summary["metrics"]["sw_noise_floor"] + 0.01
    assert (out / ".hydra" / "config.yaml").exists()


def test_same_seed_same_problem_for_every_sampler_and_reproducible_samples(tmp_path):
    runs = {}
    for sampler in ("dps", "exact"):
        run(config("task=gmm_linear", "prior=gmm", "data=gmm", f"sampler={sampler}", "num_samples=50",
                   "sampler.respacing=50"), tmp_path / sampler)
        runs[sampler] = np.load(tmp_path / sampler / "problem.npz")
    for key in ("A", "y", "x0", "means"):
        np.testing.assert_array_equal(runs["dps"][key], runs["exact"][key])
    run(config("task=gmm_linear", "prior=gmm", "data=gmm", "sampler=dps", "num_samples=50", "sampler.respacing=50"),
        tmp_path / "dps_again")
    np.testing.assert_array_equal(np.load(tmp_path / "dps" / "samples.npy"),
                                  np.load(tmp_path / "dps_again" / "samples.npy"))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Four small images from scikit-image's held-out photographs (one RGBA, one grayscale, one odd size)."""
    from dps_map.data import load_photo

    root = tmp_path_factory.mktemp("images")
    arr = load_photo("chelsea")
    Image.fromarray(arr[:128, :128]).save(root / "a.png")
    Image.fromarray(arr[100:228, 200:328]).convert("RGBA").save(root / "b.png")
    Image.fromarray(arr[50:178, 50:178]).convert("L").save(root / "c.png")
    Image.fromarray(arr[:150, :200]).save(root / "d.jpg")
    return root


def image_cfg(folder, *extra):
    return config("task=sr4", "prior=tiny", "prior.random_init=true", "sampler=dps", "data=folder",
                  f"data.path={folder}", "sampler.respacing=4", "num_samples=2", *extra)


def test_image_run_writes_design_layout_and_resumes(tmp_path, image_folder):
    out = tmp_path / "run"
    summary = run(image_cfg(image_folder), out)
    ids = ["a", "b", "c", "d"]
    for i in ids:
        assert (out / "label" / f"{i}.png").exists() and (out / "input" / f"{i}.png").exists()
        for k in range(2):
            assert Image.open(out / "recon" / f"{i}_{k}.png").size == (64, 64)
    records = read_jsonl(out / "metrics.jsonl")
    assert sorted((r["id"], r["k"]) for r in records) == [(i, k) for i in ids for k in range(2)]
    assert all(np.isfinite(r["psnr"]) and 0 <= r["ssim"] <= 1 for r in records)
    assert Image.open(out / "input" / "a.png").size == (16, 16)  # the SR x4 measurement itself
    assert summary["n_samples"] == 8 and summary["n_new_samples"] == 8
    assert summary["cost"]["vjp_per_sample"] == 4
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["metrics"]["psnr"]["n"] == 8 and on_disk["digest"] == summary["digest"]
    # rerun: nothing recomputed, same files
    before = (out / "recon" / "a_1.png").read_bytes()
    again = run(image_cfg(image_folder), out)
    assert again["n_new_samples"] == 0 and again["n_samples"] == 8
    assert (out / "recon" / "a_1.png").read_bytes() == before
    # more samples: only the new ones are drawn
    more = run(image_cfg(image_folder, "num_samples=3", "batch_size=2", "overwrite=true"), tmp_path / "run3")
    assert more["n_new_samples"] == 12


def test_changed_config_in_existing_run_dir_is_refused(tmp_path, image_folder):
    out = tmp_path / "run"
    run(image_cfg(image_folder, "num_samples=1"), out)
    with pytest.raises(ConfigError, match="another config"):
        run(image_cfg(image_folder, "num_samples=1", "sampler.zeta=0.5"), out)
    summary = run(image_cfg(image_folder, "num_samples=1", "sampler.zeta=0.5", "overwrite=true"), out)
    assert summary["n_new_samples"] == 4


def test_wandb_offline_run_records_summary(tmp_path, image_folder, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "wb"
    run(image_cfg(image_folder, "num_samples=1", "logger=wandb", "data.max_images=2"), out)
    # run.finish() returns before wandb's service has written the offline log to disk (under CPU load the
    # file can still hold only its header); teardown, which wandb's atexit hook runs, waits for it
    import wandb

    wandb.teardown()
    logs = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    # wandb's offline transaction log holds the config, the per-sample history and the summary records
    data = logs[0].read_bytes()
    for key in (b"metrics/psnr/mean", b"n_samples", b"sample/psnr", b"sr4"):
        assert key in data, key


@pytest.mark.parametrize("overrides,match", [
    (["task=sr8", "prior=tiny", "prior.unet.image_size=36"], "does not divide"),
    (["task=inpaint_box", "prior=tiny", "task.box_fraction=1.5"], "box_fraction"),
    (["task=sr4", "prior=gmm"], "do not fit together"),
    (["task=sr4", "prior=tiny", "sampler=oracle", "data=demo"], "exact posterior"),
])
def test_impossible_configs_are_refused_before_building(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        run(config(*overrides), tmp_path)


def test_metrics_default_with_random_networks_reports_everything(tmp_path, image_folder):
    out = tmp_path / "full"
    summary = run(image_cfg(image_folder, "metrics=default", "metrics.random_weights=true", "data.max_images=2",
                            "num_samples=2"), out)
    m = summary["metrics"]
    for key in ("psnr", "ssim", "lpips"):
        assert m[key]["n"] == 4
    assert np.isfinite(m["fid"]) and set(m["kid"]) == {"mean", "std"}
    assert m["diversity"]["n_measurements"] == 2 and m["diversity"]["pixel_std"] > 0
    assert all("lpips" in r for r in read_jsonl(out / "metrics.jsonl"))
    assert Image.open(out / "grids" / "a.png").size[0] > 4 * 64  # measurement, 2 samples, truth


def test_metrics_default_without_weights_exits_2_and_samples_nothing(tmp_path, image_folder):
    env = {**__import__("os").environ, "TORCH_HOME": str(tmp_path / "empty_cache")}
    env.pop("DPS_MAP_LPIPS_BACKBONE", None)
    env.pop("DPS_MAP_FID_INCEPTION", None)
    out = tmp_path / "run"
    proc = run_with_guard([sys.executable, "-m", "dps_map.run", "task=sr4", "prior=tiny", "prior.random_init=true",
                           "data=folder", f"data.path={image_folder}", "metrics=default", f"hydra.run.dir={out}"],
                          capture_output=True, text=True, cpu_limit=300, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "alexnet-owt-7be5be79.pth" in proc.stderr and "paths.lpips_backbone=" in proc.stderr
    assert not (out / "recon").exists() and not (out / "metrics.jsonl").exists()


def test_perf_knobs_reach_the_runner(tmp_path):
    """perf.* (conf/perf/default.yaml) is applied to the prior by the runner; channels_last and gradient
    checkpointing leave the samples unchanged (to float tolerance); an unknown knob is refused."""
    base = ["task=sr4", "prior=tiny", "sampler=dps", "data=demo", "data.per_photo=1", "sampler.respacing=3",
            "progress=false"]
    plain = run(config(*base), tmp_path / "plain")
    knobs = run(config(*base, "perf.channels_last=true", "perf.grad_checkpoint=true"), tmp_path / "knobs")
    assert plain["digest"] != knobs["digest"]  # the knobs are part of the run's identity
    a = np.asarray(Image.open(tmp_path / "plain" / "recon" / "chelsea_0_0.png"), dtype=float)
    b = np.asarray(Image.open(tmp_path / "knobs" / "recon" / "chelsea_0_0.png"), dtype=float)
    assert np.abs(a - b).max() <= 2  # 8-bit PNGs: at most a rounding step apart
    from dps_map.config import check_keys

    with pytest.raises(ConfigError, match="unknown key"):
        check_keys(config(*base, "+perf.fast=true"))


def test_demo_crops_of_other_photographs_for_validation():
    """+data.photos swaps the held-out photographs for others (a validation set); bad values are refused."""
    from dps_map.config import check_keys, config_digest, validate
    from dps_map.runner import load_items

    plain = config("data=demo", "data.per_photo=2")
    cfg = config("data=demo", "data.per_photo=2", "+data.photos=[astronaut,rocket]")
    check_keys(cfg)  # an accepted key, and one that changes what a run computes
    assert config_digest(cfg) != config_digest(plain)
    test, val = load_items(plain.data, 64), load_items(cfg.data, 64)
    assert [i.id for i in test] == ["chelsea_0", "chelsea_1", "coffee_0", "coffee_1"]
    assert [i.id for i in val] == ["astronaut_0", "astronaut_1", "rocket_0", "rocket_1"]
    assert all(i.image.shape == (3, 64, 64) for i in val) and val[0].info["photo"] == "astronaut"
    with pytest.raises(ConfigError, match="list of photograph names"):
        load_items(config("data=demo", "+data.photos=astronaut").data, 64)
    with pytest.raises(ConfigError, match=r"unknown photograph\(s\) \['nosuch'\]"):
        validate(config("data=demo", "+data.photos=[nosuch]"))  # at start-up, before a model is built


def test_a_run_dir_is_not_resumed_with_other_weights_at_the_same_path(tmp_path, image_folder):
    """The config digest names the prior's path, not its content: after the file at that path changes (a
    retrained shipped prior), finished samples made with the old weights must not be mixed with new ones."""
    import os

    import torch

    from dps_map import ASSETS
    from dps_map.io import sha256_file

    weights = tmp_path / "tiny_prior.pt"
    state = torch.load(ASSETS / "tiny_prior.pt", weights_only=True)
    torch.save(state, weights)
    cfg = config("task=sr4", "prior=tiny", f"prior.checkpoint={weights}", "sampler=dps", "data=folder",
                 f"data.path={image_folder}", "data.max_images=1", "sampler.respacing=2", "num_samples=1")
    out = tmp_path / "run"
    run(cfg, out)
    marker = json.loads((out / "run.json").read_text())
    assert marker["weights"] == {"prior": "sha256:" + sha256_file(weights)}
    run(cfg, out)  # same weights: resumes
    state = {k: v + 1e-3 if v.is_floating_point() else v for k, v in state.items()}
    mtime = weights.stat().st_mtime_ns
    torch.save(state, weights)
    os.utime(weights, ns=(mtime + 10**9, mtime + 10**9))  # a new mtime even on a coarse-clock filesystem
    with pytest.raises(ConfigError, match="other weights .prior sha256:"):
        run(cfg, out)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # finished outputs kept
    run(config("task=sr4", "prior=tiny", f"prior.checkpoint={weights}", "sampler=dps",
               "data=folder", f"data.path={image_folder}", "data.max_images=1", "sampler.respacing=2", "num_samples=1",
               "overwrite=true"), out)
    assert json.loads((out / "run.json").read_text())["weights"]["prior"] == "sha256:" + sha256_file(weights)
    # a weight unknown on one side (no file when the directory was claimed) is not compared, and gets recorded
    (out / "run.json").write_text(json.dumps({"schema": 2, "digest": marker["digest"], "version": "0.2.0"}))
    run(cfg, out)
    assert "weights" in json.loads((out / "run.json").read_text())


def test_the_printed_summary_of_a_diversity_run():
    """A run with several samples and diversity (the paper's diversity sweep) prints its summary line: the
    diversity statistics each, KID's mean; a nested metric without a mean once crashed the job after its
    samples were written, and with it the rest of the sweep."""
    from dps_map.runner import format_summary

    line = format_summary({"task": "sr4", "prior": "adm512", "sampler": "dps", "n_samples": 8,
                           "metrics": {"psnr": {"mean": 21.5, "sem": 0.1}, "fid": 3.25,
                                       "kid": {"mean": 0.01, "std": 0.002},
                                       "diversity": {"pixel_std": 0.0451, "pairwise_l2": 0.12, "n_measurements": 2}}})
    assert line == "sr4/adm512/dps: 8 samples  psnr=21.5  fid=3.25  kid=0.01  pixel_std=0.0451  pairwise_l2=0.12"


def test_the_command_line_checks_a_run_once(tmp_path, monkeypatch):
    """python -m dps_map.run validates every job before Hydra starts; the job it then runs in the same process
    is not validated again (a job in another process, e.g. submitit's, validates itself: run() by default)."""
    import dps_map.run as cli
    import dps_map.runner.execute as execute

    calls = []
    real = execute.validate
    monkeypatch.setattr(cli, "validate", lambda cfg: (calls.append("launcher"), real(cfg))[1])
    monkeypatch.setattr(execute, "validate", lambda cfg: (calls.append("job"), real(cfg))[1])
    monkeypatch.setattr(cli, "_checked_here", False)
    monkeypatch.setattr(sys, "argv", ["dps-map", "task=gmm_linear", "sampler=exact", "num_samples=10", "progress=false",
                                      f"hydra.run.dir={tmp_path / 'run'}"])
    cli.main()
    assert calls == ["launcher"] and (tmp_path / "run" / "summary.json").exists()
    calls.clear()
    run(config("task=gmm_linear", "sampler=exact", "num_samples=10"), tmp_path / "direct")
    assert calls == ["job"]
