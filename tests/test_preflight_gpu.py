"""python -m dps_map.preflight on a machine without a GPU: it says it measured CPU time and projects GPU-hours only
from a GPU calibration (--calibration, the GPU check's report); its memory verdict keeps a margin on a GPU; with
perf.compile the network compiles before the timed steps."""

import json

import pytest
import torch
from torch._dynamo import register_backend

import dps_map.runner
from dps_map import preflight
from dps_map.preflight import main as preflight_main

from support import compose

# 3 demo crops of one photo, 10 steps: a trial takes seconds
SMALL = ["prior=tiny", "data=demo", "data.per_photo=3", "+data.photos=[chelsea]", "sampler.respacing=10",
         "metrics=fast", "progress=false", "task=sr4"]
GIB = 2**30
COMPILE_EVENTS = []


@register_backend(name="dps_map_test_counting")
def _counting_backend(graph, example_inputs):
    """A torch.compile backend that runs the traced graph as it is and records each compilation."""
    COMPILE_EVENTS.append(("compile", torch.is_grad_enabled()))
    return graph.forward


def run_preflight(tmp_path, capsys, *args) -> tuple[int, dict, str, str]:
    with pytest.raises(SystemExit) as stop:
        preflight_main(["--steps", "1", "--out", str(tmp_path / "pf"), *args])
    out, err = capsys.readouterr()
    report = tmp_path / "pf" / "preflight.json"
    return stop.value.code, (json.loads(report.read_text()) if report.exists() else {}), out, err


def calibration(tmp_path, results, status="ok", name="calibration.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"parts": {"E": {"status": status, "device_name": "NVIDIA Test GPU",
                                                "results": results}}}))
    return str(path)


def test_a_cpu_trial_projects_no_gpu_hours(tmp_path, capsys):
    code, report, out, err = run_preflight(tmp_path, capsys, *SMALL, "sampler=dps")
    assert code == 0, err
    (job,) = report["jobs"]
    assert job["device_type"] == "cpu" and job["projected_hours"] is None and job["gpu_seconds_per_step"] is None
    assert job["not_projected"] == "measured on the CPU, not a GPU"
    assert job["measured_hours"] == pytest.approx(3 * 10 * job["seconds_per_step"] / 3600)  # 3 calls x 10 steps
    assert report["total_projected_hours"] is None and report["wall_clock_hours"] is None
    assert report["n_projected"] == 0 and report["total_measured_hours"] == job["measured_hours"]
    assert "these seconds per step are CPU time" in out and "total: 1 jobs, no GPU-hours projected" in out
    assert "--calibration" in out and "device-hours" not in out


def test_a_calibration_prices_the_jobs_of_the_sampler_it_times(tmp_path, capsys, monkeypatch):
    """The GPU check's s/step of the same sampler, per sample (its batch 2 here), x the job's batch per network
    call (measurement_batch=2: 2 samples per call, ceil(3 / 2) = 2 calls); a sampler or prior it does not time is
    not projected, with the reason."""
    monkeypatch.setattr(preflight, "CALIBRATED_PRIOR", ("tiny", 64))  # the tiny prior stands in for adm512
    path = calibration(tmp_path, {"dps": {"s_per_step": 3.0, "batch": 2}, "dmap": {"s_per_step": "fast"}})
    code, report, out, err = run_preflight(tmp_path, capsys, "--calibration", path, "-m", *SMALL,
                                           "sampler=dps,ddpm", "measurement_batch=2")
    assert code == 0, err
    dps, ddpm = report["jobs"]
    assert (dps["batch"], dps["sampler_calls"], dps["steps"]) == (2, 2, 10)
    assert dps["gpu_seconds_per_step"] == pytest.approx(1.5 * 2)
    assert dps["projected_hours"] == pytest.approx(2 * 10 * 3.0 / 3600)
    assert dps["projection"].startswith("GPU check on NVIDIA Test GPU: dps")
    assert ddpm["projected_hours"] is None and ddpm["not_projected"] == "the calibration does not time sampler ddpm"
    assert report["calibration"]["per_sample"] == {"dps": 1.5}  # dmap's value is not a number: ignored
    assert report["total_projected_hours"] == pytest.approx(dps["projected_hours"]) and report["n_projected"] == 1
    assert report["wall_clock_hours"] == pytest.approx(dps["projected_hours"])
    assert "GPU-hours projected from the GPU check" in out and "NVIDIA Test GPU" in out
    assert "not projected (job 1): the calibration does not time sampler ddpm" in out

    monkeypatch.setattr(preflight, "CALIBRATED_PRIOR", ("adm512", 512))  # the real rule: tiny is not calibrated
    code, report, out, err = run_preflight(tmp_path, capsys, "--calibration", path, *SMALL, "sampler=dps")
    (job,) = report["jobs"]
    assert job["projected_hours"] is None
    assert job["not_projected"] == "the calibration times prior adm512 at 512 px, not tiny at 64 px"


@pytest.mark.parametrize("content, says", [(None, "no such file"), ('{"parts": {"E": ', "not a JSON report")])
def test_a_missing_or_corrupt_calibration_is_one_line_and_exit_2(content, says, tmp_path, capsys):
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    code, report, out, err = run_preflight(tmp_path, capsys, "--calibration", str(path), *SMALL)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"preflight: error: --calibration {path}: {says}")
    assert report == {}  # stopped before any job


def test_a_calibration_without_part_e_is_said_in_one_line_and_projects_nothing(tmp_path, capsys):
    path = calibration(tmp_path, {}, status="failed")
    code, report, out, err = run_preflight(tmp_path, capsys, "--no-trial", "--calibration", path, *SMALL)
    assert code == 0, err
    assert err.strip() == (f"preflight: --calibration {path}: no part E with status ok and results (part E status: "
                           "failed); no GPU-hours are projected from it")
    assert preflight.read_calibration(path) == {"path": path, "unusable": "no part E with status ok and results "
                                                "(part E status: failed)"}


def test_fits_keeps_a_margin_for_the_cuda_context_and_reserved_memory():
    factor, extra = preflight.GPU_MEMORY_MARGIN
    assert (factor, extra) == (1.2, GIB)
    gpu = {"device_type": "cuda", "device_memory_bytes": 12 * GIB}
    assert not preflight.fits({**gpu, "peak_memory_bytes": 10 * GIB})  # 10 x 1.2 + 1 = 13 GiB > 12
    assert preflight.fits({**gpu, "peak_memory_bytes": 9 * GIB})  # 11.8 GiB < 12
    assert preflight.fits({"device_type": "cpu", "device_memory_bytes": 12 * GIB, "peak_memory_bytes": 11 * GIB})
    assert not preflight.fits({**gpu, "device_memory_bytes": 0, "peak_memory_bytes": 1})  # unknown memory


def test_a_trial_on_a_gpu_projects_its_own_time():
    cfg = compose(*SMALL, "sampler=dps")
    t = {"device_type": "cuda", "device_name": "NVIDIA Test GPU", "seconds_per_step": 0.25}
    calib = {"path": "x", "device_name": "another GPU", "per_sample": {"dps": 9.0}}
    assert preflight.gpu_seconds_per_step(cfg, t, calib) == (0.25, "measured on NVIDIA Test GPU")


def test_a_compiled_network_compiles_before_the_timed_steps(monkeypatch):
    """perf.compile: one no-grad forward and one VJP run before the sampler's first step, so every compilation
    (one per kind of call) happens before it and none inside the timed steps."""
    events = COMPILE_EVENTS
    events.clear()
    sample_units = dps_map.runner.sample_units

    def marked(*args, **kwargs):
        events.append(("sample_units", None))
        return sample_units(*args, **kwargs)

    monkeypatch.setattr(dps_map.runner, "sample_units", marked)  # where the trial looks it up
    cfg = compose(*SMALL, "sampler=dmap", "perf.compile=true", "perf.compile_backend=dps_map_test_counting")
    t = preflight.trial(cfg, steps=2)
    assert (t["forward_per_step"], t["vjp_per_step"]) == (1, 3) and t["steps_timed"] == 2
    start = events.index(("sample_units", None))
    assert sorted(events[:start]) == [("compile", False), ("compile", True)]  # no-grad forward, VJP
    assert events[start + 1:] == []  # the sampler's steps compiled nothing
