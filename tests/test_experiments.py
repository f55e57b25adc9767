"""The paper-analysis drivers run alone and write CSV + Markdown + PNG (at toy sizes)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dps_map.config import compose

from support import run_with_guard

ROOT = Path(__file__).resolve().parents[1]


def test_score_diagnostics_gmm_shows_observation_1(tmp_path):
    from experiments.score_diagnostics import main

    main(["gmm", "--seeds", "0", "--num", "200", "--out", str(tmp_path)])
    for ext in ("csv", "md", "png"):
        assert (tmp_path / f"score_diagnostics_gmm.{ext}").stat().st_size > 0
    rows = list(csv.DictReader(open(tmp_path / "score_diagnostics_gmm.csv")))
    err = {(int(r["t"]), r["method"]): float(r["score_error"]) for r in rows}
    mean = {(int(r["t"]), r["method"]): (float(r["score_mean"]), float(r["mc_floor"])) for r in rows}
    small_t = [t for t, m in err if m == "dps" and t <= 50]
    assert small_t and all(err[(t, "dps")] > 10 * err[(t, "unconditional")] for t in small_t)
    assert all(err[(t, "exact")] == 0 for t, m in err if m == "exact")
    assert all(mean[(t, "dps")][0] > 3 * mean[(t, "dps")][1] for t in small_t)  # observation 2


def test_restoration_table_from_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    run_with_guard([sys.executable, "-m", "dps_map.run", "-m", "task=sr4", "sampler=dps,dmap", "data.per_photo=1",
                    "sampler.respacing=3", "progress=false", f"hydra.sweep.dir={sweep}"], cwd=ROOT, check=True,
                   capture_output=True)
    from experiments.restoration_table import main

    main([str(sweep), "--out", str(tmp_path / "out"), "--name", "t"])
    rows = list(csv.DictReader(open(tmp_path / "out" / "t.csv")))
    assert [(r["task"], r["sampler"]) for r in rows] == [("sr4", "dps"), ("sr4", "dmap")]
    assert all(int(r["n_samples"]) == 2 for r in rows) and rows[1]["vjp"] != rows[0]["vjp"]
    assert "| sr4 | dmap | 2 |" in (tmp_path / "out" / "t.md").read_text()
    assert (tmp_path / "out" / "t.png").stat().st_size > 0


def test_score_diagnostics_paper_path_on_a_toy_adm512(tmp_path):
    """`score_diagnostics adm512` (the ADM-512 pixel setting: adm512 + the 128->512 upsampler as reference + an
    ImageNet folder) runs end to end on the CPU with both networks shrunk to 64px and randomly initialised:
    every method is scored against the upsampler, whose own error is zero. The adapter's card says bicubic, as
    `make train-adapter-paper`'s does: it is scored on the upsampler's avgpool task all the same."""
    import numpy as np
    import torch
    from PIL import Image

    from dps_map.adapters import Adapter, adapter_checkpoint
    from dps_map.priors.adm import build_unet
    from experiments.score_diagnostics import main

    images = tmp_path / "val"
    rng = np.random.default_rng(0)
    for k, wnid in enumerate(["n01440764", "n09472597"]):  # ImageFolder layout: each image's class for both models
        (images / wnid).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (80, 72, 3), dtype=np.uint8)).save(images / wnid / f"{k}.png")
    toy = ["prior.random_init=true", "prior.unet.image_size=64", "prior.unet.num_channels=32",
           "prior.unet.num_res_blocks=1", "prior.unet.attention_resolutions='8'", "prior.unet.num_head_channels=32",
           "reference.random_init=true", "reference.unet.large_size=64", "reference.unet.small_size=16",
           "reference.unet.num_channels=32", "reference.unet.num_res_blocks=1",
           "reference.unet.attention_resolutions='8'", "reference.unet.num_head_channels=32",
           f"paths.imagenet_val={images}", "sampler.respacing=20"]
    cfg = compose("task=sr4", "prior=adm512", "+prior@reference=adm128_512_upsampler", *toy[:6])
    torch.manual_seed(0)
    adapter = Adapter(build_unet(cfg.prior.unet), hint_channels=4)
    bicubic = {"class": "SuperResolution", "factor": 4, "method": "bicubic"}
    torch.save(adapter_checkpoint(adapter, operator=bicubic), tmp_path / "adapter.pt")
    main(["adm512", "--crops", "2", "--num", "2", "--out", str(tmp_path / "out"), "--adapter", str(tmp_path / "adapter.pt"),
          *toy])
    rows = list(csv.DictReader(open(tmp_path / "out" / "score_diagnostics_adm512.csv")))
    methods = {r["method"] for r in rows}
    assert methods == {"reference", "unconditional", "dps", "adapter"}
    assert all(float(r["score_error"]) == 0 for r in rows if r["method"] == "reference")
    others = [float(r["score_error"]) for r in rows if r["method"] != "reference"]
    assert all(np.isfinite(others)) and max(others) > 0


def test_dps_regime_at_zeta_zero_is_the_prior_and_writes_its_table(tmp_path):
    """zeta = 0: DPS is ancestral sampling of the prior, so its trace ratio is tr Cov(prior) / tr Cov(posterior),
    computed here from the mixtures in closed form (an independent reference for the sampler + metric path)."""
    import torch

    from experiments.dps_regime import cell, gmm_prior, main, problem, regime

    prior = gmm_prior(2)
    _, _, post, _ = problem(prior, 1, 0)
    exact = float(torch.trace(prior.mixture.covariance()) / torch.trace(post.covariance()))
    row = cell(prior, 2, 1, 0.0, [0], 2000, 100)
    assert abs(row["trace_ratio"] / exact - 1) < 0.1, (row["trace_ratio"], exact)
    base = {**row, "trace_ratio": 1.0, "within_mode_trace_ratio": 1.0, "effective_modes_ratio": 1.0}
    assert regime(base) == "matches"
    assert regime({**base, "trace_ratio": 2.0}) == "total trace high"
    assert regime({**base, "effective_modes_ratio": 0.5, "within_mode_trace_ratio": 3.0}) == \
        "mode collapse + within-mode over-dispersion"
    main(["--dims", "2", "--zetas", "0.1", "--seeds", "0", "--num-samples", "50", "--steps", "20", "--out",
          str(tmp_path)])
    for ext in ("csv", "md", "png"):
        assert (tmp_path / f"dps_regime.{ext}").stat().st_size > 0
    assert len(list(csv.DictReader(open(tmp_path / "dps_regime.csv")))) == 2  # m = 1, 2 at d = 2


def test_frontier_cheapest_setting_within_the_threshold():
    from experiments.frontier import cheapest

    rows = [{"setting": s, "sampler": "dps", "vjp": v, "forward": 0, "log_posterior": lp}
            for s, v, lp in (("a", 1000, 5.0), ("b", 250, 4.95), ("c", 50, 4.5))]
    rows.append({"setting": "exact", "sampler": "exact", "vjp": 0, "forward": 0, "log_posterior": 9.0})
    best, cheap = cheapest(rows, "log_posterior", lambda b: 0.1, True)
    assert (best["setting"], cheap["setting"]) == ("a", "b")  # the exact reference is never a candidate


def test_frontier_tiny_writes_its_table_and_cheapest_setting(tmp_path, monkeypatch):
    """The tiny half of the frontier driver, as Hydra multiruns of the runner plus the aggregate, on a 2-step
    grid: one row per setting with the runner's costs (DPS: 1 VJP per step; DMAP K=1: 1 forward per step, 1 VJP
    per step but the last), the naive baseline of the demo crops, and the cheapest-within-0.2-dB rule (a
    diverged setting, PSNR None, is never the best)."""
    import experiments.frontier as fr

    rows = [{"setting": s, "vjp": v, "forward": f, "psnr": p}
            for s, v, f, p in (("a", 1000, 0, 25.0), ("b", 300, 100, 24.85), ("c", 300, 0, 24.81), ("f", 200, 0, 24.79),
                               ("d", 50, 0, 24.0), ("e", 10, 0, None))]
    best, cheap = fr.tiny_cheapest(rows)
    assert (best["setting"], cheap["setting"]) == ("a", "c")  # fewest VJPs, then fewest forwards
    monkeypatch.setattr(fr, "TINY_GRID", [("dps", 2, None), ("dmap", 2, 1)])
    fr.main(["tiny", "--tasks", "sr4", "--work", str(tmp_path / "work"), "--out", str(tmp_path), "--skip", "none",
             "--workers", "1"])
    table = list(csv.DictReader(open(tmp_path / "frontier_tiny.csv")))
    # two multiruns at a time (the CPU default) give the same rows in the same order
    fr.main(["tiny", "--tasks", "sr4", "--work", str(tmp_path / "work2"), "--out", str(tmp_path / "par"), "--skip",
             "none", "--workers", "2"])
    parallel = list(csv.DictReader(open(tmp_path / "par" / "frontier_tiny.csv")))
    assert [(r["setting"], r["psnr"], r["ssim"]) for r in parallel] == [(r["setting"], r["psnr"], r["ssim"]) for r in table]
    assert [(r["setting"], float(r["vjp"]), float(r["forward"]), int(r["n_images"])) for r in table] == \
        [("dps 2 steps", 2.0, 0.0, 2), ("dmap 2 steps K=1", 1.0, 2.0, 2)]
    assert all(float(r["naive_psnr"]) > 20 for r in table)
    # each row's PSNR is that of its run's images: recomputed here from the saved 8-bit recon and label PNGs
    # (10 log10(1 / MSE) on [0, 1]; the runner scores the float samples, so within 0.05 dB)
    from PIL import Image

    def png(path):
        return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255

    for row, sweep in zip(table, ("dps", "dmap_K1")):
        run_dir = tmp_path / "work" / row["run_dir"]
        assert run_dir.parent == tmp_path / "work" / "sr4" / sweep  # one multirun per (task, sampler, K)
        values = [10 * np.log10(1 / np.mean((png(f) - png(run_dir / "label" / (f.stem.rsplit("_", 1)[0] + ".png"))) ** 2))
                  for f in sorted((run_dir / "recon").glob("*.png"))]
        assert len(values) == int(row["n_images"]) and abs(float(row["psnr"]) - np.mean(values)) < 0.05
    text = (tmp_path / "frontier_tiny.md").read_text()
    assert "## sr4 (naive baseline" in text and "cheapest within 0.2 dB" in text
    assert (tmp_path / "frontier_tiny.png").stat().st_size > 0
    # the same command again resumes: every sample is on disk, none is drawn again
    mtimes = {f: f.stat().st_mtime_ns for f in (tmp_path / "work").rglob("recon/*.png")}
    fr.main(["tiny", "--tasks", "sr4", "--work", str(tmp_path / "work"), "--out", str(tmp_path), "--skip", "none",
             "--workers", "1"])
    assert {f: f.stat().st_mtime_ns for f in (tmp_path / "work").rglob("recon/*.png")} == mtimes
    assert list(csv.DictReader(open(tmp_path / "frontier_tiny.csv"))) == table


def test_frontier_refuses_a_bad_task_in_one_line_before_any_run(tmp_path, capsys):
    from experiments.frontier import main

    with pytest.raises(SystemExit) as exit_info:
        main(["tiny", "--tasks", "sr4", "sr5", "--work", str(tmp_path / "work"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and err.startswith("frontier tiny: error:") and "sr5" in err
    assert not (tmp_path / "work").exists()  # no multirun started


def test_tune_tiny_chooses_the_best_mean_and_reports_paired_differences(tmp_path):
    """tools.tune_tiny: the highest mean PSNR is chosen and each other step size gets the paired
    difference over the crops both finished (known values), then the driver end to end through the runner
    on the validation photographs (never the held-out test photographs)."""
    import numpy as np

    import tools.tune_tiny as tt

    rows = [{"task": "sr4", "sampler": "dps", "value": v, "psnr": float(np.mean([p for p in ps if p is not None])),
             "ids": ["a", "b", "c"], "crop_psnr": ps}
            for v, ps in ((3.0, [20.0, 21.0, 22.0]), (10.0, [21.0, 23.0, 22.5]), (30.0, [None, 20.0, 21.5]))]
    best, pairs = tt.choose(rows)
    assert best["value"] == 10.0
    assert pairs[0]["value"] == 3.0 and np.isclose(pairs[0]["diff"], 3.5 / 3)
    assert np.isclose(pairs[0]["sem"], np.std([1.0, 2.0, 0.5], ddof=1) / np.sqrt(3))
    assert np.isclose(pairs[1]["diff"], 2.0)  # crop a failed at zeta 30: paired over b and c only
    rows.append({**rows[0], "value": 0.1, "psnr": None})
    assert tt.choose(rows)[0]["value"] == 10.0  # an all-failed setting is never chosen

    tt.main(["--tasks", "sr4", "--samplers", "dps", "--grid", "dps=1,10", "--per-photo", "1", "--steps", "3", "--workers", "1",
             "--work", str(tmp_path / "work"), "--out", str(tmp_path)])
    table = list(csv.DictReader(open(tmp_path / "tune_tiny.csv")))
    assert [(r["sampler"], float(r["value"]), int(r["n_images"]), int(r["steps"])) for r in table] == \
        [("dps", 1.0, 3, 3), ("dps", 10.0, 3, 3)]
    from dps_map.io import read_jsonl
    job = [d for d in (tmp_path / "work" / "dps").iterdir() if {"task=sr4", "sampler.zeta=10.0"} <= set(d.name.split(","))]
    ids = {r["id"].rsplit("_", 1)[0] for r in read_jsonl(job[0] / "metrics.jsonl")}
    assert ids == set(tt.VALIDATION_PHOTOS)
    text = (tmp_path / "tune_tiny.md").read_text()
    assert "## Chosen" in text and text.count("**zeta ") == 1


def test_adm512_cpu_controlnet_section_reads_the_training_card(tmp_path):
    """The one section of tools/adm512_cpu.py cheap enough here (sd2_tiny, 20 ControlNet steps): it runs
    train_adapter as a child under /usr/bin/time and reports seconds per step from the exported card."""
    out = tmp_path / "results"
    proc = run_with_guard([sys.executable, "-m", "tools.adm512_cpu", "--sections", "controlnet", "--work",
                           str(tmp_path / "work"), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          cpu_limit=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = json.loads((tmp_path / "work" / "controlnet" / "sr4_sd2_tiny" / "dps_map_card.json").read_text())
    (row,) = list(csv.DictReader(open(out / "adm512_cpu.csv")))
    assert row["section"] == "controlnet" and card["training"]["steps"] == 20
    assert float(row["seconds_per_step"]) == round(card["training"]["wall_time_s"] / 20, 3) > 0
    text = (out / "adm512_cpu.md").read_text()
    import re

    shown = float(re.search(r"threads=1`: ([0-9.]+) s per step", text).group(1))
    assert "## ControlNet training step on prior=sd2_tiny" in text and abs(shown - float(row["seconds_per_step"])) <= 0.006
