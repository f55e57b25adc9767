"""python -m dps_map.bench: what it reports and how (timings are printed, never asserted)."""

import json
import math
import sys

import pytest

from dps_map import bench
from dps_map.errors import ConfigError

from support import compose, run_with_guard

# the tiny prior's architecture at 32 px with random weights: fast, and every code path of a real run
SMALL = ["prior.random_init=true", "prior.unet.image_size=32", "batch_sizes=[1]", "steps=3", "repeats=2",
         "net_calls=1", "threads=1", "measurement_batches=[]"]


def config(*overrides):
    return compose(*SMALL, *overrides, config="bench")


@pytest.fixture(scope="module")
def summary():
    lines = []
    cfg = config("samplers=[ddpm,dps,dmap,no_such_sampler]", "peer=false")
    result = bench.run_bench(cfg, out=lines.append)
    return result, "\n".join(lines)


def test_summary_reports_every_sampler_with_its_own_call_counts(summary):
    result, _ = summary
    steps = 3
    per = {name: result["samplers"][name]["1"] for name in ("ddpm", "dps", "dmap")}
    assert (per["ddpm"]["forward"], per["ddpm"]["vjp"]) == (steps, 0)
    assert (per["dps"]["forward"], per["dps"]["vjp"]) == (0, steps)
    assert (per["dmap"]["forward"], per["dmap"]["vjp"]) == (steps, 3 * (steps - 1))  # K=3, none at the last step
    for entry in per.values():
        for key in ("step_ms", "overhead_ratio", "seconds"):
            s = entry[key]
            assert 0 < s["min"] <= s["median"] <= s["max"] < math.inf
        assert entry["samples_per_s"] > 0 and entry["peak_mb"] > 0
        assert entry["overhead_ratio_null_network"] >= 1.0  # the sampler alone costs something
        assert entry["null_network_ms_per_step"] < entry["step_ms"]["median"]


def test_headline_overhead_ratio_and_skips(summary):
    result, table = summary
    assert set(result["overhead_ratio"]) == {"ddpm", "dps", "dmap"}
    assert result["overhead_ratio"]["dps"] == result["samplers"]["dps"]["1"]["overhead_ratio"]["median"]
    assert "no_such_sampler" in result["skipped"] and "no_such_sampler" in table
    assert set(result["network_ms"]["1"]) == {"forward", "vjp"}
    assert result["network_ms"]["1"]["vjp"]["median"] > 0
    assert result["threads"] == 1 and result["steps"] == 3 and result["repeats"] == 2
    json.dumps(result)  # the last line of the CLI is this object


def test_quick_mode_defaults_yield_to_explicit_overrides():
    cfg = bench._loose(config("quick=true"))
    cfg._explicit = ["steps"]  # as if steps=3 came from the command line
    p = bench.effective_params(cfg)
    assert p["steps"] == 3 and p["repeats"] == bench.QUICK["repeats"]
    assert p["sampler_batch_sizes"] == [1] and p["batch_sizes"] == bench.QUICK["batch_sizes"]
    cfg = config("quick=false")
    assert bench.effective_params(cfg)["sampler_batch_sizes"] == [1]
    with pytest.raises(ConfigError):
        bench.effective_params(config("repeats=0"))


def test_peer_is_skipped_with_a_reason_without_deepinv(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepinv", None)  # import deepinv -> ImportError
    out = bench.peer_dps(None, None, None, None, 1, 2, 1.0, "cpu", 1, [1.0, 1.0], None, 0)
    assert "deepinv is not installed" in out["skipped"] and ".[bench]" in out["skipped"]


def test_peer_drives_the_same_network():
    import deepinv  # noqa: F401  (a dev dependency: its absence is a failure, not a skip)

    result = bench.run_bench(config("samplers=[dps]", "peer=true", "repeats=1"), out=lambda s: None)
    peer = result["peer"]
    assert peer["vjp"] == 3 and peer["forward"] == 0  # one network VJP per guided step, like ours
    assert (peer["ours_forward"], peer["ours_vjp"]) == (0, 3)
    assert peer["time_ratio"] > 0 and peer["time_ratio_min"] > 0 and "NOT aligned exactly" in peer["note"]


def test_cli_prints_a_table_and_json_last(tmp_path):
    proc = run_with_guard(
        [sys.executable, "-m", "dps_map.bench", *SMALL, "repeats=1", "samplers=[dps]", "peer=false",
         f"hydra.run.dir={tmp_path}", f"json_out={tmp_path / 'bench.json'}"],
        capture_output=True, text=True, cpu_limit=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    last = json.loads(lines[-1])
    assert "dps" in last["overhead_ratio"] and "ms/step" in proc.stdout
    assert json.loads((tmp_path / "bench.json").read_text()) == last


def test_measurement_batch_table_counts_one_chain_per_call():
    lines = []
    cfg = config("samplers=[dps]", "peer=false", "measurement_batches=[1,3]")
    result = bench.run_bench(cfg, out=lines.append)
    mb = result["measurement_batch"]
    assert mb["sampler"] == "dps" and set(mb["runs"]) == {"1", "3"}
    for entry in mb["runs"].values():
        assert (entry["forward"], entry["vjp"]) == (0, 3)  # one chain of 3 guided steps, whatever the batch
        assert entry["samples_per_s"] > 0
    assert mb["runs"]["1"]["speedup"] == 1.0
    assert "measurement_batch (dps" in "\n".join(lines)


def test_out_of_memory_is_a_row_and_the_bench_goes_on(monkeypatch):
    """A network that cannot allocate at batch >= 4 (as adm512 at 512 px on a small GPU): every row before the
    first failure is already printed, each failing configuration is a row saying 'out of memory' with its
    batch (table and JSON), its memory is given back, and the configurations after it are still measured."""
    import torch

    lines, freed = [], []
    build = bench.build_prior

    def small_memory_prior(cfg, device):
        prior = build(cfg, device)
        predict = prior.predict

        def limited(x, t):
            if x.shape[0] >= 4:
                lines.append("<out of memory raised>")
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return predict(x, t)

        prior.predict = limited
        return prior

    monkeypatch.setattr(bench, "build_prior", small_memory_prior)
    monkeypatch.setattr(bench, "free_memory", lambda device: freed.append(str(device)))
    cfg = config("samplers=[dps,ddpm]", "batch_sizes=[1,4]", "peer=false", "measurement_batches=[1,4]", "repeats=1")
    result = bench.run_bench(cfg, out=lines.append)

    first_failure = lines.index("<out of memory raised>")
    network_1 = next(i for i, line in enumerate(lines) if line.split()[:1] == ["1"] and "/" in line)
    assert network_1 < first_failure  # printed when measured, not at the end
    oom_rows = [line for line in lines if "out of memory at batch 4" in line]
    assert [line.split()[0] for line in oom_rows] == ["4", "dps", "ddpm", "4"]  # network, samplers, measurement_batch
    assert result["network_ms"]["4"]["error"] == "out of memory" and result["network_ms"]["4"]["batch"] == 4
    assert "CUDA out of memory" in result["network_ms"]["4"]["message"]
    for name in ("dps", "ddpm"):
        assert result["samplers"][name]["4"] == {"batch": 4, "error": "out of memory",
                                                 "message": "CUDA out of memory. Tried to allocate 20.00 GiB"}
        assert result["samplers"][name]["1"]["steps"] == 3  # batch 1 measured before and after the failures
        assert result["overhead_ratio"][name] == result["samplers"][name]["1"]["overhead_ratio"]["median"]
    ddpm_row = next(i for i, line in enumerate(lines) if line.startswith("ddpm") and line.split()[1] == "1")
    assert ddpm_row > lines.index(oom_rows[1])  # the sampler after the failing one still ran
    assert result["measurement_batch"]["runs"]["4"]["error"] == "out of memory"
    assert result["measurement_batch"]["runs"]["1"]["speedup"] == 1.0
    assert result["out_of_memory"] == [{"part": "network", "batch": 4}, {"part": "sampler", "name": "dps", "batch": 4},
                                       {"part": "sampler", "name": "ddpm", "batch": 4},
                                       {"part": "measurement_batch", "batch": 4}]
    assert freed == ["cpu"] * 4
    json.dumps(result)


def test_an_error_that_is_not_out_of_memory_stops_the_bench(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(bench, "time_network", broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        bench.run_bench(config("samplers=[dps]", "peer=false"), out=lambda s: None)

