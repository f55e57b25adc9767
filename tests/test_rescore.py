"""python -m dps_map.evaluate re-scores finished runs from their PNGs, atomically and idempotently."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from dps_map.runner import run

from support import compose, png_psnr, run_with_guard


def png_tensor(path):
    """A PNG as a (1, 3, H, W) float tensor in [-1, 1]."""
    return torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]



def tiny_run(out, *extra):
    overrides = ["progress=false", "task=sr4", "prior=tiny", "sampler=ddpm", "sampler.respacing=3",
                 "data.per_photo=1", "num_samples=2", "metrics=fast", *extra]
    cfg = compose(*overrides)
    return run(cfg, out)


def evaluate(*args):
    return run_with_guard([sys.executable, "-m", "dps_map.evaluate", *map(str, args)], capture_output=True,
                          text=True, cpu_limit=300)


def snapshot(out):
    return {name: (out / name).read_bytes() for name in ("metrics.jsonl", "summary.json", "run.json")}


def test_evaluate_adds_diversity_then_changes_nothing(tmp_path):
    out = tmp_path / "sweep" / "job"
    first = tiny_run(out)
    assert "diversity" not in first["metrics"] and first["n_samples"] == 4
    assert first["image_ids"] == ["chelsea_0", "coffee_0"]
    # the summary's PSNR is over the four samples: recomputed here from the PNGs (10 log10(1 / MSE) on [0, 1]; the run
    # scores the unrounded samples, so within 0.1 dB), its std the sample std (ddof 1) of the per-sample values
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    from_pngs = [png_psnr(out / "recon" / f"{r['id']}_{r['k']}.png", out / "label" / f"{r['id']}.png") for r in records]
    np.testing.assert_allclose([r["psnr"] for r in records], from_pngs, atol=0.1)
    assert first["metrics"]["psnr"]["std"] == pytest.approx(np.std([r["psnr"] for r in records], ddof=1), rel=1e-9)
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
    from dps_map.runner.scoring import rescore

    lp = ["metrics=default", "metrics.random_weights=true", "metrics.names=[psnr,ssim,lpips,diversity]"]
    assert rescore(out, lp)[str(out)].startswith("updated metrics.jsonl (lpips, naive_lpips)")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # each record's LPIPS is the distance between its own recon PNG and its id's label PNG: recomputed with the lpips
    # package's network the run used (random weights), on the PNGs read here
    from dps_map.runner.scoring import _NETWORKS

    (net,) = [n for key, n in _NETWORKS.items() if key[0] == "LPIPS"]
    for r in records:
        x, ref = (png_tensor(p) for p in (out / "recon" / f"{r['id']}_{r['k']}.png", out / "label" / f"{r['id']}.png"))
        with torch.no_grad():
            assert r["lpips"] == pytest.approx(float(net.model(x, ref)), rel=1e-4, abs=1e-6), r
    assert len(records) == 4 and len({r["lpips"] for r in records}) == 4  # four samples, four distances
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["lpips"]["n"] == 4 and "pairwise_lpips" in summary["metrics"]["diversity"]
    assert summary["metrics"]["lpips"]["mean"] == pytest.approx(np.mean([r["lpips"] for r in records]), rel=1e-9)
    # the naive baseline: one score per id (its grid's naive image), the same in both records of the id
    naive = {r["id"]: r["naive_lpips"] for r in records}
    assert summary["naive"]["lpips"]["n"] == 2 and all(r["naive_lpips"] == naive[r["id"]] for r in records)
    assert summary["naive"]["lpips"]["mean"] == pytest.approx(np.mean(list(naive.values())), rel=1e-9)
    after_lpips = snapshot(out)
    assert rescore(out, lp) == {str(out): "unchanged"} and snapshot(out) == after_lpips

    from dps_map.runner.sweep_results import aggregate

    group = next(iter(aggregate(tmp_path / "sweep")["groups"].values()))
    assert group["metrics"]["lpips"]["mean"] == summary["metrics"]["lpips"]["mean"]
    assert group["image_ids"] == ["chelsea_0", "coffee_0"]
    assert group["preprocessing"]["original_sizes"]["chelsea_0"] == summary["preprocessing"]["original_sizes"]["chelsea_0"]
    assert group["metrics"]["psnr"]["std"] == summary["metrics"]["psnr"]["std"]


def test_evaluate_refuses_other_overrides_and_missing_dirs(tmp_path):
    import pytest

    from dps_map.errors import UserError
    from dps_map.runner.scoring import rescore

    with pytest.raises(UserError, match="no dps-map run directories"):
        rescore(tmp_path, [])
    (tmp_path / "run.json").write_text("{}")
    proc = evaluate(tmp_path, "sampler=dps")
    assert proc.returncode == 2 and "only metrics" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


LPIPS_RANDOM = ["metrics=default", "metrics.random_weights=true", "metrics.names=[psnr,ssim,lpips]"]


def test_rescored_lpips_and_naive_lpips_match_a_run_scored_with_lpips_from_the_start(tmp_path):
    """Re-scoring adds naive_lpips (the naive baseline's, from the grid's first tile) to every record, as a
    run scored with LPIPS from the start writes it, and summary.json's naive.lpips with it."""
    import torch

    from dps_map.runner.scoring import rescore

    fast, scored = tmp_path / "fast", tmp_path / "scored"
    tiny_run(fast)
    torch.manual_seed(0)  # the same random LPIPS network as rescore builds (it seeds 0 too)
    tiny_run(scored, *LPIPS_RANDOM)
    assert rescore(fast, LPIPS_RANDOM)[str(fast)].startswith("updated metrics.jsonl (lpips, naive_lpips)")
    got = {(r["id"], r["k"]): r for r in map(json.loads, (fast / "metrics.jsonl").read_text().splitlines())}
    ref = {(r["id"], r["k"]): r for r in map(json.loads, (scored / "metrics.jsonl").read_text().splitlines())}
    assert got.keys() == ref.keys() and len(got) == 4
    for key, r in ref.items():  # scored on 8-bit PNGs vs the run's float images: equal up to rounding
        assert abs(got[key]["lpips"] - r["lpips"]) < 5e-4, (key, got[key]["lpips"], r["lpips"])
        assert abs(got[key]["naive_lpips"] - r["naive_lpips"]) < 5e-4, (key, got[key]["naive_lpips"], r["naive_lpips"])
        assert got[key]["naive_psnr"] == r["naive_psnr"]  # the same run, the same baseline
    assert len({r["naive_lpips"] for r in got.values()}) == 2  # one value per measurement id
    naive = json.loads((fast / "summary.json").read_text())["naive"]["lpips"]
    naive_ref = json.loads((scored / "summary.json").read_text())["naive"]["lpips"]
    assert naive["n"] == naive_ref["n"] == 2 and abs(naive["mean"] - naive_ref["mean"]) < 5e-4
    assert rescore(fast, LPIPS_RANDOM) == {str(fast): "unchanged"}


HOLD = textwrap.dedent("""
    import sys, time
    from dps_map.runner.lock import run_lock
    with run_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


def tree(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_evaluate_skips_a_run_directory_another_process_holds(tmp_path, caplog):
    """A run directory whose run.lock another process holds is skipped with a logged message naming the
    holder, and not one of its files changes; the free run beside it is re-scored."""
    from dps_map.runner.lock import lock_holder
    from dps_map.runner.scoring import rescore

    busy, free = tmp_path / "sweep" / "busy", tmp_path / "sweep" / "free"
    tiny_run(busy)
    shutil.copytree(busy, free)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(busy)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held" and lock_holder(busy)["pid"] == holder.pid
        before = tree(busy)
        with caplog.at_level("WARNING", logger="dps_map.runner.scoring"):
            result = rescore(tmp_path / "sweep", ["metrics.names=[psnr,ssim,diversity]"])
        assert result[str(busy)].startswith("skipped: run dir") and f"(pid {holder.pid} on host" in result[str(busy)]
        assert f"{busy} skipped (not re-scored)" in caplog.text and f"pid {holder.pid}" in caplog.text
        assert tree(busy) == before
        assert result[str(free)] == "updated summary.json (diversity)"
    finally:
        holder.kill()
        holder.wait()
