"""make rehearse-paper: the paper's make targets (preflight, adapter and ControlNet training, reproduce-paper for
the ADM-512 pixel setting and for the SD2-base latent setting, DMAP and DMAP + estimator included) run for real
at toy scale on stand-in files, each stage's artefact checked (tools/rehearse_paper.py). Minutes of CPU:
marked slow, run by `make test` and CI."""

import json
import os
import sys

import pytest

from support import ROOT, run_with_guard


@pytest.mark.slow
def test_make_rehearse_paper_passes_every_check(tmp_path):
    work = tmp_path / "rehearsal"
    # the targets run on the Python that runs the tests (-o: `make test` has just installed it; a checkout whose
    # tests run on another environment's Python gets no .venv of its own); the CPU guard is ~10x what it uses
    proc = run_with_guard(["make", "--no-print-directory", "-C", str(ROOT), "-o", ".venv/.installed",
                           f"PY={sys.executable}", "rehearse-paper", f"ARGS=--work {work}"], cpu_limit=3600,
                          env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")})
    report = json.loads((work / "rehearsal.json").read_text()) if (work / "rehearsal.json").is_file() else None
    failed = [c for c in (report or {"checks": []})["checks"] if not c["ok"]]
    assert proc.returncode == 0 and report is not None and not failed, (
        f"exit {proc.returncode}; failed checks: {json.dumps(failed, indent=1)}\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-2000:]}\n(the whole log: {work / 'rehearsal.log'})")
    checks = {c["check"] for c in report["checks"]}
    for stage in ("make preflight-paper exits 2", "make train-adapter-paper exits 0", "make reproduce-paper exits 0",
                  "make preflight-paper-sd2 exits 2", "make train-adapter-paper-sd2 exits 0",
                  "make reproduce-paper-sd2 exits 0"):
        assert stage in checks, stage
    # the SD2 half sweeps the paper's own method (DMAP, DMAP + estimator) beside the baselines, and each table's
    # title names its setting
    rows = [c for c in checks if c.startswith("restoration_sd2: a row for every task x ")]
    assert len(rows) == 1 and {"dmap", "adapter_dmap", "adapter_dps"} <= set(rows[0].split(" x ", 1)[1].split(", "))
    assert sum("title names its setting" in c for c in checks) == 2
    assert len(checks) >= 30
    print(f"rehearsal: {len(checks)} checks in {report['total_seconds']:.0f} s: {report['seconds']}", file=sys.stderr)
