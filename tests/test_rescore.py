"""python -m dps_map.evaluate re-scores finished runs from their PNGs, atomically and idempotently."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from PIL import Image

from dps_map.run import run

CONF = Path(__file__).resolve().parents[1] / "conf"


def tiny_run(out):
    overrides = ["progress=false", "task=sr4", "prior=tiny", "sampler=ddpm", "sampler.respacing=3",
                 "data.per_photo=1", "num_samples=2", "metrics=fast"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return run(cfg, out)


def evaluate(*args):
    return subprocess.run([sys.executable, "-m", "dps_map.evaluate", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def snapshot(out):
    return {name: (out / name).read_bytes() for name in ("metrics.jsonl", "summary.json", "run.json")}


def test_evaluate_adds_diversity_then_changes_nothing(tmp_path):
    out = tmp_path / "sweep" / "job"
    first = tiny_run(out)
    assert "diversity" not in first["metrics"] and first["n_samples"] == 4
    assert first["image_ids"] == ["chelsea_0", "coffee_0"] and first["metrics"]["psnr"]["std"] > 0
    before = snapshot(out)

    proc = evaluate(tmp_path / "sweep", "metrics.names=[psnr,ssim,diversity]")
    assert proc.returncode == 0, proc.stderr
    assert "updated summary.json (diversity)" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    # independent reference: the per-pixel std over the two PNG samples of each id, averaged over ids
    ref = []
    for ident in summary["image_ids"]:
        s = np.stack([np.asarray(Image.open(out / "recon" / f"{ident}_{k}.png"), dtype=np.float64) / 127.5 - 1
                      for k in (0, 1)])
        ref.append(s.std(axis=0).mean())
    assert abs(summary["metrics"]["diversity"]["pixel_std"] - np.mean(ref)) < 1e-6
    assert summary["metrics"]["diversity"]["n_measurements"] == 2
    assert summary["metrics"]["psnr"] == first["metrics"]["psnr"]  # PSNR kept (scored on the unrounded samples)
    assert (out / "metrics.jsonl").read_bytes() == before["metrics.jsonl"]  # nothing per-sample was asked for
    assert (out / "run.json").read_bytes() == before["run.json"]
    after_first = snapshot(out)

    again = evaluate(tmp_path / "sweep", "metrics.names=[psnr,ssim,diversity]")
    assert again.returncode == 0 and again.stdout.strip().endswith("unchanged"), again.stdout + again.stderr
    assert snapshot(out) == after_first

    # per-sample LPIPS (random networks: tests only; in-process to keep the test fast), then aggregated
    from dps_map.evaluate import rescore

    lp = ["metrics=default", "metrics.random_weights=true", "metrics.names=[psnr,ssim,lpips,diversity]"]
    assert rescore(out, lp)[str(out)].startswith("updated metrics.jsonl (lpips)")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(np.isfinite(r["lpips"]) and r["lpips"] >= 0 for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["lpips"]["n"] == 4 and "pairwise_lpips" in summary["metrics"]["diversity"]
    after_lpips = snapshot(out)
    assert rescore(out, lp) == {str(out): "unchanged"} and snapshot(out) == after_lpips

    from experiments.aggregate import aggregate

    group = next(iter(aggregate(tmp_path / "sweep")["groups"].values()))
    assert group["metrics"]["lpips"]["mean"] == summary["metrics"]["lpips"]["mean"]
    assert group["image_ids"] == ["chelsea_0", "coffee_0"]
    assert group["preprocessing"]["original_sizes"]["chelsea_0"] == summary["preprocessing"]["original_sizes"]["chelsea_0"]
    assert group["metrics"]["psnr"]["std"] == summary["metrics"]["psnr"]["std"]


def test_evaluate_refuses_other_overrides_and_missing_dirs(tmp_path):
    import pytest

    from dps_map.errors import UserError
    from dps_map.evaluate import rescore

    with pytest.raises(UserError, match="no dps-map run directories"):
        rescore(tmp_path, [])
    (tmp_path / "run.json").write_text("{}")
    proc = evaluate(tmp_path, "sampler=dps")
    assert proc.returncode == 2 and "only metrics" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
