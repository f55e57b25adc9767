"""The paper-analysis drivers run alone and write CSV + Markdown + PNG (at toy sizes)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

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
    subprocess.run([sys.executable, "-m", "dps_map.run", "-m", "task=sr4", "sampler=dps,dmap", "data.per_photo=1",
                    "sampler.respacing=3", "progress=false", f"hydra.sweep.dir={sweep}"], cwd=ROOT, check=True,
                   capture_output=True)
    from experiments.restoration_table import main

    main([str(sweep), "--out", str(tmp_path / "out"), "--name", "t"])
    rows = list(csv.DictReader(open(tmp_path / "out" / "t.csv")))
    assert [(r["task"], r["sampler"]) for r in rows] == [("sr4", "dps"), ("sr4", "dmap")]
    assert all(int(r["n_samples"]) == 2 for r in rows) and rows[1]["vjp"] != rows[0]["vjp"]
    assert "| sr4 | dmap | 2 |" in (tmp_path / "out" / "t.md").read_text()
    assert (tmp_path / "out" / "t.png").stat().st_size > 0
