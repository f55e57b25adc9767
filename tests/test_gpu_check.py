"""make gpu-check (python -m dps_map.gpu_check): the smoke run writes every part, a failing part is recorded and the
others still run, a run killed in part N keeps the parts before N, and make gpu-wheels pins what .venv runs."""

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from dps_map import gpu_check
from dps_map.gpu_check import SMOKE, Check, Part, run_parts
from dps_map.preflight import read_calibration

from support import ROOT, run_with_guard

PARTS = set("ABCDEFGHIJ")


def read_report(out):
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


@pytest.mark.slow
def test_make_gpu_check_smoke_runs_every_part(tmp_path):
    """make gpu-check SMOKE=1 on this CPU: every part ok, the header's provenance, report.md, and part E as the
    preflight reads it (about 2 minutes on 2 shared cores, one thread)."""
    out = tmp_path / "gpu_check"
    start = time.monotonic()
    proc = run_with_guard(["make", "-s", "gpu-check", "SMOKE=1", f"GPU_PYTHON={sys.executable}",
                           f"GPU_CHECK_ARGS=--out {out}"], cwd=ROOT, capture_output=True, text=True, cpu_limit=1800)
    wall = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    report, md = read_report(out)
    assert set(report["parts"]) == PARTS and report["finished"]
    assert {k: p["status"] for k, p in report["parts"].items()} == {k: "ok" for k in PARTS}, \
        {k: p.get("error") for k, p in report["parts"].items()}
    head = report["header"]
    for key in ("date", "git_commit", "hostname", "python", "torch", "cuda", "device_name", "driver", "command"):
        assert key in head
    assert head["mode"] == "smoke" and "--smoke" in head["command"] and head["device_type"] == "cpu"
    for key, part in report["parts"].items():
        assert f"## {key}. {part['title']}: ok" in md
    assert "Traceback" not in md

    parts = {k: p["results"] for k, p in report["parts"].items()}
    assert len(parts["B"]["rows"]) == 16 and all("vjp_ms" in r for r in parts["B"]["rows"])
    assert any("TF32 changes nothing" in n for n in report["parts"]["B"]["notes"])  # said on a CPU
    assert {(r["precision"], r["t"]) for r in parts["C"]["rows"]} == {(p, t) for p in ("bf16", "fp16")
                                                                     for t in (900, 500, 50)}
    assert all(r["finite"] and r["eps_rel_err"] < 0.1 for r in parts["C"]["rows"])
    assert [r["batch"] for r in parts["D"]["rows"]] == list(SMOKE.batches)
    assert [r["measurement_batch"] for r in parts["F"]["rows"]] == list(SMOKE.measurement_batches)
    assert all(r["bitwise_equal"] for r in parts["G"]["rows"])  # one CPU thread: the same seed, the same bits
    assert [r["graphs_first_chain"] for r in parts["H"]["rows"] if r["batch"] == 1] == [1, 1]  # VJP, then forward
    assert all(r["graphs_second_chain"] == 0 for r in parts["H"]["rows"] if r["batch"] == 1)
    assert [r["task"] for r in parts["I"]["tasks"]] == list(gpu_check.IMAGE_TASKS)
    assert all(r["y_bitwise_equal"] for r in parts["I"]["tasks"])
    assert parts["I"]["multirun"]["returncode"] == 0 and len(parts["I"]["multirun_shards"]) == 2
    assert all(s["lpips"] is not None and s["fid"] is not None for s in parts["I"]["multirun_shards"])
    assert {(r["precision"], r["sampler"]) for r in parts["J"]["rows"]} == {(p, s) for p in ("fp32", "fp16")
                                                                           for s in ("dps", "dmap")}
    assert all(r["image_dtype"] == r["vae_output"] == "torch.float32" for r in parts["J"]["rows"])
    assert {r["precision"]: r["unet_output"] for r in parts["J"]["rows"]} == {"fp32": "torch.float32",
                                                                            "fp16": "torch.float16"}

    # part E is the preflight's calibration on a GPU; it says what it timed, so the preflight refuses a smoke run's
    assert parts["E"]["dps"]["batch"] == 1 and parts["E"]["dps"]["s_per_step"] > 0
    assert parts["E"]["dmap"]["vjp_per_step"] > parts["E"]["dps"]["vjp_per_step"]
    e = report["parts"]["E"]
    assert (e["prior"], e["image_size"], e["mode"]) == ("tiny", 64, "smoke")
    calibration = read_calibration(str(out / "report.json"))
    assert "unusable" in calibration and "mode smoke" in calibration["unusable"] and "prior tiny" in \
        calibration["unusable"]
    full = json.loads((out / "report.json").read_text())
    full["parts"]["E"].update(mode="full", prior="adm512", device_type="cuda")  # as the GPU machine writes it
    (out / "gpu.json").write_text(json.dumps(full))
    calibration = read_calibration(str(out / "gpu.json"))
    assert set(calibration["per_sample"]) == {"dps", "dmap"} and calibration["device_name"] == head["device_name"]
    print(f"make gpu-check SMOKE=1: {wall:.0f} s")
    assert wall < 600


def toy_check(tmp_path) -> Check:
    return Check(SMOKE, "cpu", tmp_path, True, "test")


def fills(value):
    def run(check, results, notes):
        results["value"] = value
        notes.append("a toy part")
    return run


def raises(err):
    def run(check, results, notes):
        results["before"] = 1  # what a part measured before it failed stays in the report
        raise err
    return run


def test_a_failing_part_is_recorded_and_the_later_parts_still_run(tmp_path, monkeypatch):
    """Part C raises between two real parts (A and D): C failed with its one-line error, A and D ok."""
    monkeypatch.setitem(gpu_check.PARTS, "C", Part("injected", "Does a failure stop the others?",
                                                   raises(ValueError("broken on purpose\nsecond line"))))
    check = toy_check(tmp_path)
    run_parts(check, gpu_check.PARTS, gpu_check.ORDER, selected="ACD")
    report, md = read_report(tmp_path)
    status = {k: p["status"] for k, p in report["parts"].items()}
    assert status == {"A": "ok", "C": "failed", "D": "ok", **{k: "skipped" for k in PARTS - set("ACD")}}
    c = report["parts"]["C"]
    assert c["error"] == "ValueError: broken on purpose" and c["error_type"] == "ValueError"
    assert c["results"] == {"before": 1} and any("broken on purpose" in line for line in c["traceback"])
    assert "`ValueError: broken on purpose`" in md and "Traceback" not in md and "second line" not in md
    assert report["parts"]["D"]["results"]["rows"] and report["finished"]
    assert report["parts"]["B"]["why"] == "not selected (--parts)"


def test_an_interrupted_run_keeps_the_parts_before_it(tmp_path):
    """Ctrl-C (KeyboardInterrupt) in part B: A is on disk as ok, B as interrupted, C as not run."""
    parts = {"A": Part("first", "?", fills(1)), "B": Part("second", "?", raises(KeyboardInterrupt())),
             "C": Part("third", "?", fills(3))}
    with pytest.raises(KeyboardInterrupt):
        run_parts(toy_check(tmp_path), parts, "ABC")
    report, md = read_report(tmp_path)
    assert [report["parts"][k]["status"] for k in "ABC"] == ["ok", "interrupted", "not run"]
    assert report["parts"]["A"]["results"] == {"value": 1} and not report["finished"]
    assert "## B. second: interrupted" in md


KILLED = """
import sys, time
from pathlib import Path
from dps_map.gpu_check import SMOKE, Check, Part, run_parts
def quick(check, results, notes):
    results["value"] = 1
def hang(check, results, notes):
    time.sleep(600)
parts = {"A": Part("quick", "?", quick), "B": Part("hangs", "?", hang), "C": Part("never", "?", quick)}
run_parts(Check(SMOKE, "cpu", Path(sys.argv[1]), True, "test"), parts, "ABC")
"""


def test_a_run_killed_in_part_n_keeps_parts_before_n(tmp_path):
    """SIGKILL (no handler runs) while part B runs: report.json and report.md hold A ok and B running."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path)], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if json.loads((tmp_path / "report.json").read_text())["parts"]["B"]["status"] == "running":
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        else:
            pytest.fail("part B never started")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    report, md = read_report(tmp_path)
    assert [report["parts"][k]["status"] for k in "ABC"] == ["ok", "running", "not run"]
    assert report["parts"]["A"]["results"] == {"value": 1} and not report["finished"]
    assert "## A. quick: ok" in md and "## B. hangs: running" in md


def test_the_check_imports_nothing_a_bare_gpu_machine_lacks():
    """The GPU machine has torch but not wandb, matplotlib, timm or deepinv: importing the check and what its
    parts import pulls none of them in."""
    code = ("import sys, dps_map.gpu_check, dps_map.run, dps_map.metrics, dps_map.priors.latent, diffusers; "
            "print(sorted(m for m in ('wandb', 'matplotlib', 'timm', 'deepinv') if m in sys.modules))")
    proc = run_with_guard([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, cpu_limit=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_gpu_wheels_pin_what_venv_runs():
    """make gpu-wheels builds the versions this environment has, each a pure-Python package."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    specs = re.search(r"^GPU_WHEEL_SPECS := (.*)$", text, re.M).group(1).split()
    specs += re.search(r"^GPU_WHEEL_REQUESTS := (.*)$", text, re.M).group(1).split()
    pins = dict(spec.split("==") for spec in specs)
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime", "hydra-submitit-launcher", "submitit", "cloudpickle",
            "guided-diffusion-sdk", "lpips", "pytorch-fid", "diffusers", "resize-right"} <= set(pins)
    assert {name: importlib.metadata.version(name) for name in pins} == pins
    for name in pins:  # no compiled extension: a py3-none-any wheel installs on the GPU machine's Python
        files = importlib.metadata.distribution(name).files or []
        assert not [f for f in files if f.suffix in (".so", ".pyd")], name
