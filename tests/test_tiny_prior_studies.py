"""The tiny-prior study drivers (experiments/deblur_priors, ccdf_tiny, demo_tiny, sample_clipping, adapter_sr) and
tools/compare_reference: their shared helpers on known values, their grids through the runner at toy sizes, and
their one-line refusals."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dps_map.io import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PRIOR = ROOT / "dps_map" / "assets" / "tiny_prior.pt"


def test_paired_and_mean_sem_on_known_values():
    from experiments.common import mean_sem, paired

    a = {"x": {"psnr": 21.0}, "y": {"psnr": 23.0}, "z": {"psnr": 20.0}, "only_a": {"psnr": 99.0}}
    b = {"x": {"psnr": 20.0}, "y": {"psnr": 20.0}, "z": {"psnr": 20.5}, "w": {"psnr": 0.0}}
    p = paired(a, b)  # over x, y, z only: differences 1, 3, -0.5
    assert p["n"] == 3 and p["wins"] == 2 and np.isclose(p["diff"], 3.5 / 3)
    assert np.isclose(p["sem"], np.std([1.0, 3.0, -0.5], ddof=1) / np.sqrt(3))
    m, s = mean_sem({"x": {"psnr": 1.0}, "y": {"psnr": 3.0}, "z": {"psnr": None}})
    assert m == 2.0 and np.isclose(s, 1.0)  # std sqrt(2) over sqrt(2) values


def test_colour_stats_of_a_constant_image():
    from experiments.sample_clipping import colour_stats

    x = torch.zeros(2, 3, 4, 4)
    x[:, 0], x[:, 1] = 1.0, -1.0  # R = 1, G = -1, B = 0 everywhere
    s = colour_stats(x)
    assert (s["mean_R"], s["mean_G"], s["mean_B"]) == (1.0, -1.0, 0.0)
    assert (s["std_R"], s["std_G"], s["std_B"]) == (0.0, 0.0, 0.0)
    assert s["chroma"] == 2.0 and np.isclose(s["saturated"], 2 / 3)
    assert np.isclose(s["within_std"], np.std([1.0] * 16 + [-1.0] * 16 + [0.0] * 16, ddof=1))


def test_deblur_priors_pairs_the_two_priors_per_crop(tmp_path):
    """The 'earlier' prior is a copy of the shipped weights: the same measurement, seed and weights give the same
    sample, so every paired difference is exactly 0 and neither prior wins a crop; 1 crop of each test
    photograph (2) and of each validation photograph (3)."""
    from experiments.deblur_priors import main

    old = tmp_path / "copy_of_shipped.pt"
    shutil.copy(SHIPPED_PRIOR, old)
    main(["--old-prior", str(old), "--per-photo", "1", "--samplers", "dps", "--work", str(tmp_path / "work"),
          "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "deblur_priors.csv")))
    assert [(r["set"], r["sampler"], int(r["n_crops"])) for r in rows] == [("test", "dps", 2), ("validation", "dps", 3)]
    assert all(float(r["diff"]) == 0.0 and int(r["shipped_wins"]) == 0 for r in rows)
    assert all(float(r["psnr_shipped"]) == float(r["psnr_old"]) for r in rows)
    assert "| test | dps | 10 / 10 | 2 |" in (tmp_path / "deblur_priors.md").read_text()


def test_ccdf_tiny_runs_each_start_as_a_multirun_job(tmp_path):
    """start 0.2 of a 50-step chain runs 10 network forwards per sample, start 1 all 50; each table cell is the
    mean PSNR of its job's records (read here from the job directories of the sweeps)."""
    from experiments.ccdf_tiny import main

    main(["--starts", "0.2", "1", "--per-photo", "1", "--work", str(tmp_path / "work"), "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "ccdf_tiny.csv")))
    assert [(r["model"], float(r["start"])) for r in rows] == [
        (m, s) for m in ("prior (ddpm)", "adapter", "reference (tiny_sr4_reference, ddpm)") for s in (0.2, 1.0)]
    assert [float(r["steps_run"]) for r in rows] == [10, 50] * 3
    jobs = {(d.parent.name, d.name): d for d in (tmp_path / "work").glob("*/*") if (d / "metrics.jsonl").is_file()}
    assert len(jobs) == 6
    for r, (prior, sampler) in zip(rows, [(p, s) for p, s in (("tiny", "ddpm"), ("tiny", "adapter"),
                                                               ("tiny_sr4_reference", "ddpm")) for _ in range(2)]):
        start = f"+sampler.start={float(r['start']):g}"
        (job,) = [d for (p, name), d in jobs.items() if p == prior and {start, f"sampler={sampler}"} <= set(name.split(","))]
        psnr = [rec["psnr"] for rec in read_jsonl(job / "metrics.jsonl")]
        assert len(psnr) == int(r["n_crops"]) == 2 and np.isclose(float(r["psnr"]), np.mean(psnr))


@pytest.mark.parametrize("module, argv, expect", [
    ("experiments.deblur_priors", [], "--old-prior None: no such file"),
    ("experiments.demo_tiny", ["--old-prior", "/nonexistent.pt"], "--old-prior /nonexistent.pt: no such file"),
    ("experiments.sample_clipping", ["--old-prior", "/nonexistent.pt"], "--old-prior /nonexistent.pt: no such file"),
    ("tools.compare_reference", [], "--candidate None: no such file"),
])
def test_a_missing_weights_file_is_one_line(module, argv, expect, tmp_path):
    import importlib

    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main([*argv, "--out", str(tmp_path)])
    message = str(stop.value.code)
    assert expect in message and "\n" not in message and not list(tmp_path.iterdir())


def test_compare_reference_of_the_shipped_reference_with_itself_is_zero(tmp_path):
    """The candidate is the shipped reference itself: on the same states its x0 error is the shipped one's, so
    every paired difference is 0 and the candidate is better on no crop; the error shrinks toward t = 0."""
    from tools.compare_reference import main

    main(["--candidate", str(ROOT / "dps_map" / "assets" / "tiny_sr4_reference.pt"), "--per-photo", "1", "--num", "1",
          "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "reference_comparison.csv")))
    assert len(rows) > 5 and all(int(r["n_crops"]) == 2 for r in rows)
    assert all(float(r["diff"]) == 0.0 and int(r["candidate_better"]) == 0 for r in rows)
    assert all(float(r["shipped"]) == float(r["candidate"]) for r in rows)
    assert float(rows[0]["shipped"]) < float(rows[-1]["shipped"])
