"""What a GPU user must trust before a sweep, answered on one GPU in minutes.

    python -m dps_map.gpu_check [--smoke] [--out DIR] [--parts ABC...] [--device auto] [--budget SECONDS]
    make gpu-check [SMOKE=1]                 # the same; on a bare GPU machine it installs .gpu-wheels/ first

Ten parts, each a question with its numbers (docs/performance.md "GPU check"):

A  the full-size adm512 (random weights) builds on the device, runs one forward and one forward+VJP; memory
B  one forward and one forward+VJP at batch 1 in fp32, TF32, bf16 and fp16, with and without channels_last
   and gradient checkpointing: time per call (median after a warm-up) and peak memory
C  bf16 and fp16 against fp32 on one DPS step at t = 900, 500, 50: relative error of eps, of the guidance
   gradient and of x_{t-1}
D  peak allocated and reserved memory of a forward+VJP at batch 1, 2, 4, 8, 16, up to the first out-of-memory
E  DPS and DMAP seconds per step and their overhead over their network calls (dps_map.bench's machinery);
   ``parts.E.results.{dps,dmap}.s_per_step`` and ``parts.E.device_name`` are the preflight's GPU calibration
F  measurement batching 1/2/4/8: seconds per measurement (dps_map.bench.measurement_batch_run)
G  the same seed twice, with and without perf.deterministic: bitwise equal? largest difference
H  torch.compile (inductor): compile time, speed-up per step, graphs compiled per chain
I  every image task's problem drawn on the device equals the CPU's (y bit for bit, A and its VJP close), and
   a two-shard multirun on the gpus launcher scores LPIPS and FID/KID on the device
J  the SD2 latent path on its tiny stand-in (prior=sd2_tiny): DPS and DMAP in fp32 and fp16, VAE in fp32

The full check uses the adm512 network with random weights (``prior.random_init=true``: nothing to download) on
the device ``--device`` names (auto: CUDA when present) and the sweep's precision (``perf.precision=auto``: fp16
on CUDA) where a part does not vary it. ``--smoke`` runs every part at toy size (the tiny prior, two steps,
batches 1, 2, 4; torch.compile with the aot_eager backend) on whatever device is present: a few minutes on a CPU.

``report.json`` and ``report.md`` (in ``--out``, default outputs/gpu_check/) are rewritten atomically when a part
starts and when it ends, so a run killed in part N keeps parts before N and names N as the one running.
Each part has a status (ok, failed, skipped with why, running, interrupted, not run), its numbers and, if it
failed, its error (one line and the exception type; report.json also keeps the traceback). A failing part
never stops the others. The header records the date, git commit, host, Python/torch/CUDA/cuDNN versions, the
device's name, the driver and the command line. Exit code: 0 if no part failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from . import bench
from .config import compose, device_record, prepare_perf, prior_image_size, resolve_device
from .config.sweep import compose_jobs, without_hydra
from .config.targets import build_noise, build_prior
from .errors import UserError
from .io import atomic_write_bytes, atomic_write_json
from .runner import MeasurementUnit, draw_measurement, generator, load_items, make_sampler, measure, sample_units
from .runner.timing import PeakMemory, device_memory_bytes, free_memory, network_calls, sync, time_network

REPO = Path(__file__).resolve().parents[1]
#: the image tasks part I draws on the device and on the CPU
IMAGE_TASKS = ("sr4", "sr8", "inpaint_box", "inpaint_random", "gaussian_deblur", "motion_deblur")
GIB = 2**30


@dataclass(frozen=True)
class Scale:
    """The sizes of one mode of the check."""

    prior: tuple[str, ...]               # overrides naming the network of parts A-H
    batches: tuple[int, ...]             # D
    measurement_batches: tuple[int, ...]  # F
    t_values: tuple[int, ...]            # C (training steps)
    steps: int                           # diffusion steps of each timed chain (E, F, G, H)
    calls: int                           # timed network calls per median (A, B, E)
    repeats: int                         # timed repeats (E, F)
    compile_backend: str                 # H
    latent_steps: int                    # J
    multirun_steps: int                  # I
    multirun_timeout_s: int              # I
    budget_s: float | None               # parts not started past this many seconds are skipped


FULL = Scale(prior=("prior=adm512", "prior.random_init=true", "prior.class_label=0"), batches=(1, 2, 4, 8, 16),
             measurement_batches=(1, 2, 4, 8), t_values=(900, 500, 50), steps=4, calls=3, repeats=2,
             compile_backend="inductor", latent_steps=4, multirun_steps=5, multirun_timeout_s=300, budget_s=480)
# eager: torch.compile's graph capture (dynamo) without inductor's code generation, which takes minutes on a CPU
# even for the tiny prior
SMOKE = Scale(prior=("prior=tiny",), batches=(1, 2, 4), measurement_batches=(1, 2), t_values=(900, 500, 50), steps=2,
              calls=1, repeats=1, compile_backend="eager", latent_steps=2, multirun_steps=2,
              multirun_timeout_s=300, budget_s=None)


class Check:
    """What the parts share: the device, the sizes, one built network, the report and its files."""

    def __init__(self, scale: Scale, device, out: Path, smoke: bool, command: str):
        self.scale, self.device, self.out, self.smoke = scale, torch.device(device), Path(out), smoke
        self.started = time.monotonic()
        self.report = {"schema": 1, "header": provenance(self.device, smoke, command, scale), "parts": {},
                       "finished": False}
        self._prior = None

    # -- configs and the network --------------------------------------------------------------------
    def config(self, *overrides: str, prior: tuple[str, ...] | None = None):
        """The run config (conf/config.yaml) of the network under test with these overrides."""
        return compose(*(self.scale.prior if prior is None else prior), f"device={self.device}", "progress=false",
                       *overrides)

    def bench_config(self, steps: int | None = None):
        """The bench config (conf/bench.yaml) of the network under test, chains of `steps` steps (default:
        the scale's): what dps_map.bench's helpers read."""
        args = [*self.scale.prior, f"device={self.device}", f"steps={steps or self.scale.steps}"]
        (cfg,) = compose_jobs([args], config="bench")
        return without_hydra(cfg)

    def prior(self):
        """The network under test, built once (adm512's 559M random parameters take a while)."""
        if self._prior is None:
            start = time.perf_counter()
            self._prior = build_prior(self.config().prior, self.device)
            sync(self.device)
            self.build_s = time.perf_counter() - start
        return self._prior

    def perf(self, prior=None, **knobs) -> dict:
        """Apply the default perf settings with `knobs` changed (dps_map.config.prepare_perf) to the network
        under test (or `prior`); returns the resolved record ({precision, tf32, cudnn_benchmark, deterministic})."""
        perf = {**OmegaConf.to_container(self.config().perf, resolve=True), **knobs}
        return prepare_perf(perf, self.device, self.prior() if prior is None else prior)

    def restore(self) -> None:
        """Undo what a part changed: the default perf settings (process-wide switches included), no compiled
        graphs, the memory it left."""
        torch._dynamo.reset()
        if self._prior is not None:
            self.perf()
        free_memory(self.device)

    # -- memory ------------------------------------------------------------------------------------
    def memory(self) -> PeakMemory:
        memory = PeakMemory(self.device)
        memory.reset()
        return memory

    def peaks(self, memory: PeakMemory) -> dict:
        """Peak memory since `memory` was reset: allocated and reserved on CUDA, the resident set on a CPU."""
        out = {"peak_gib": memory.peak_bytes() / GIB}
        if self.device.type == "cuda":
            out["reserved_gib"] = torch.cuda.max_memory_reserved(self.device) / GIB
        return out

    # -- the report ---------------------------------------------------------------------------------
    def save(self) -> None:
        """Rewrite report.json and report.md (atomically: a reader, or a run killed now, sees whole files)."""
        self.report["wall_s"] = round(time.monotonic() - self.started, 1)
        atomic_write_json(self.out / "report.json", self.report)
        atomic_write_bytes(self.out / "report.md", markdown(self.report).encode())

    def past_budget(self) -> bool:
        return self.scale.budget_s is not None and time.monotonic() - self.started > self.scale.budget_s


def provenance(device: torch.device, smoke: bool, command: str, scale: Scale) -> dict:
    """Where and with what the numbers were measured."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": git_commit(),
            "hostname": socket.gethostname(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": cudnn, **device_record(device), "driver": nvidia_driver(),
            "device_memory_gib": round(device_memory_bytes(device) / GIB, 2), "cpu_threads": torch.get_num_threads(),
            "mode": "smoke" if smoke else "full", "network": " ".join(scale.prior), "command": command}


def git_commit() -> str | None:
    """HEAD of the source tree (with '+dirty' for uncommitted changes), or None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def nvidia_driver() -> str | None:
    """The NVIDIA driver's version (nvidia-smi), or None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.split()
        return out[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| (in float64)."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# -- A: the network builds and runs ------------------------------------------------------------------
def part_a(check: Check, results: dict, notes: list) -> None:
    prior = check.prior()
    results["build_s"] = check.build_s
    results["parameters"] = sum(p.numel() for p in prior.parameters())
    results["weights_gib"] = sum(p.numel() * p.element_size() for p in prior.parameters()) / GIB
    results["perf"] = check.perf()  # the plain fp32 network
    forward, vjp = network_calls(prior, torch.full((1,), 500, dtype=torch.long, device=check.device))
    for name, call in (("forward", forward), ("vjp", vjp)):
        memory = check.memory()
        times = []
        for _ in range(1 + check.scale.calls):  # the first call pays for allocation and kernel selection
            sync(check.device)
            start = time.perf_counter()
            out = call()
            sync(check.device)
            times.append(time.perf_counter() - start)
        results[name] = {"first_call_s": times[0], "s": statistics.median(times[1:]), **check.peaks(memory),
                         "finite": bool(torch.isfinite(out).all()), "output_std": float(out.float().std())}
    if not (results["forward"]["finite"] and results["vjp"]["finite"]):
        raise RuntimeError("the network's eps or its VJP is not finite")
    if "prior.random_init=true" in check.scale.prior:
        notes.append("random weights (prior.random_init=true): the cost is the real network's, the values are not")


# -- B: precision and layout knobs ------------------------------------------------------------------
PRECISION_ROWS = (("fp32", "fp32", False), ("tf32", "fp32", True), ("bf16", "bf16", False), ("fp16", "fp16", False))


def part_b(check: Check, results: dict, notes: list) -> None:
    prior = check.prior()
    rows = results["rows"] = []
    for label, precision, tf32 in PRECISION_ROWS:
        for channels_last in (False, True):
            for checkpointing in (False, True):
                row = {"precision": label, "channels_last": channels_last, "grad_checkpoint": checkpointing}
                check.perf(precision=precision, tf32=tf32, channels_last=channels_last, grad_checkpoint=checkpointing)
                memory = check.memory()
                cost, oom = bench.guarded(lambda: time_network(prior, 1, check.device, check.scale.calls),
                                          check.device)
                if oom:
                    row.update(error="out of memory", message=oom)
                else:
                    row.update(forward_ms=1000 * cost[0], vjp_ms=1000 * cost[1], **check.peaks(memory))
                rows.append(row)
                check.save()  # a row at a time: a hang in the next one keeps this one
    base = rows[0].get("vjp_ms")
    for row in rows:
        if base and "vjp_ms" in row:
            row["vjp_speedup"] = base / row["vjp_ms"]
    if check.device.type != "cuda":
        notes.append("not a CUDA device: TF32 changes nothing here (its rows equal fp32 up to timing noise), and "
                     "bf16/fp16 timings are the CPU's")
    notes.append("peak = the forward+VJP's (the larger of the two calls); vjp_speedup against fp32 without knobs")


# -- C: half precision against fp32 on one DPS step -----------------------------------------------------
def part_c(check: Check, results: dict, notes: list) -> None:
    prior = check.prior()
    cfg = check.bench_config(prior.betas.shape[0])  # respacing = every training step: step index i is t
    sampler = bench.build_sampler_named(cfg, "dps")
    noise = build_noise(cfg.task)
    operator, y = bench.draw_problem(cfg, prior, noise, torch.Generator().manual_seed(int(cfg.seed)), check.device)
    diffusion = sampler.diffusion(prior)
    steps = {}
    for precision in ("fp32", "bf16", "fp16"):
        check.perf(precision=precision)
        for t in check.scale.t_values:
            seen = []
            gen = torch.Generator().manual_seed(t)  # the same x_t and step noise for every precision
            x_t = diffusion.q_sample(operator.naive(y), t, torch.randn(y.shape[0], *prior.sample_shape,
                                                                        generator=gen).to(check.device))
            sampler.transition(prior, operator, noise, y, x_t, t, generator(check.device, t), hooks=[seen.append])
            steps[(precision, t)] = seen[0]
    rows = results["rows"] = []
    for precision in ("bf16", "fp16"):
        for t in check.scale.t_values:
            a, b = steps[(precision, t)], steps[("fp32", t)]
            rows.append({"precision": precision, "t": t, "eps_rel_err": rel(a.eps, b.eps),
                         "grad_rel_err": rel(a.grad, b.grad), "x_prev_rel_err": rel(a.x_prev, b.x_prev),
                         "finite": bool(torch.isfinite(a.x_prev).all())})
    results["precision_of_outputs"] = str(steps[("fp16", check.scale.t_values[0])].x_prev.dtype)
    notes.append("relative error = ||half - fp32|| / ||fp32||, same x_t and step noise; random weights, so the "
                 "errors of the trained network may differ")


# -- D: memory per batch -----------------------------------------------------------------------------------
def part_d(check: Check, results: dict, notes: list) -> None:
    prior = check.prior()
    sweep = check.perf(precision="auto")["precision"]
    rows = results["rows"] = []
    for precision in dict.fromkeys(("fp32", sweep)):
        check.perf(precision=precision)
        for batch in check.scale.batches:
            memory = check.memory()
            cost, oom = bench.guarded(lambda: time_network(prior, batch, check.device, 1), check.device)
            if oom:
                rows.append({"precision": precision, "batch": batch, "error": "out of memory", "message": oom})
                check.save()
                break
            rows.append({"precision": precision, "batch": batch, "vjp_s": cost[1], **check.peaks(memory)})
            check.save()
    results["device_memory_gib"] = device_memory_bytes(check.device) / GIB
    results["memory_kind"] = PeakMemory(check.device).kind
    notes.append(f"forward+VJP per batch, in fp32 and in the sweep's precision (perf.precision=auto: {sweep}); "
                 "each precision stops at its first out-of-memory")


# -- E: the samplers' cost per step --------------------------------------------------------------------
def part_e(check: Check, results: dict, notes: list) -> dict:
    prior = check.prior()
    cfg = check.bench_config()
    record = check.perf(precision="auto")
    noise = build_noise(cfg.task)
    operator, y = bench.draw_problem(cfg, prior, noise, torch.Generator().manual_seed(int(cfg.seed)), check.device)
    network = bench.measure_network(prior, 1, check.device, check.scale.calls, 1)
    for name in ("dps", "dmap"):
        sampler = bench.build_sampler_named(cfg, name)
        entry = bench.measure_sampler(sampler, "", prior, bench.NullNetwork(prior), operator, noise, y, 1,
                                      check.device, check.scale.calls, check.scale.repeats, int(cfg.seed),
                                      PeakMemory(check.device))
        results[name] = {"s_per_step": entry["step_ms"]["median"] / 1000, "batch": 1, "steps": entry["steps"],
                         "forward_per_step": entry["forward"] / entry["steps"],
                         "vjp_per_step": entry["vjp"] / entry["steps"],
                         "overhead_ratio": entry["overhead_ratio"]["median"],
                         "overhead_ratio_null_network": entry.get("overhead_ratio_null_network"),
                         "peak_gib": entry["peak_mb"] / 1024, "precision": record["precision"],
                         "network_forward_ms": network["forward"]["median"], "network_vjp_ms": network["vjp"]["median"]}
        check.save()
    notes.append("overhead ratio = sampler time / (its forward and VJP calls x their cost measured just before), "
                 "dps_map.bench.measure_sampler; the preflight reads s_per_step as this device's calibration")
    # what the preflight must match before it prices a sweep with these numbers (a smoke report times the tiny
    # prior on whatever device ran it)
    return {**device_record(check.device), "prior": cfg.prior.name, "image_size": prior.image_size,
            "mode": check.report["header"]["mode"]}


# -- F: measurement batching -----------------------------------------------------------------------------
def part_f(check: Check, results: dict, notes: list) -> None:
    prior = check.prior()
    cfg = check.bench_config()
    record = check.perf(precision="auto")
    noise = build_noise(cfg.task)
    sampler = bench.build_sampler_named(cfg, "dps")
    rows = results["rows"] = []
    for mb in check.scale.measurement_batches:
        entry, oom = bench.guarded(lambda: bench.measurement_batch_run(cfg, prior, sampler, noise, check.device, mb,
                                                                       check.scale.repeats), check.device)
        if oom:
            rows.append({"measurement_batch": mb, "error": "out of memory", "message": oom})
            break
        call = entry["seconds"]["median"]
        rows.append({"measurement_batch": mb, "s_per_call": call, "s_per_measurement": call / mb,
                     "speedup": rows[0]["s_per_measurement"] * mb / call if rows else 1.0})
        check.save()
    notes.append(f"DPS, {check.scale.steps} steps, one sample per measurement, precision {record['precision']}; "
                 "speedup = s per measurement at 1 / at N")


# -- G: reproducibility ---------------------------------------------------------------------------------
def part_g(check: Check, results: dict, notes: list) -> None:
    prior = check.prior()
    cfg = check.bench_config()
    noise = build_noise(cfg.task)
    operator, y = bench.draw_problem(cfg, prior, noise, torch.Generator().manual_seed(int(cfg.seed)), check.device)
    sampler = bench.build_sampler_named(cfg, "dps")
    rows = results["rows"] = []
    for deterministic in (False, True):
        record = check.perf(precision="auto", deterministic=deterministic)
        x = [sampler.sample(prior, operator, noise, y, (1, *prior.sample_shape),
                            generator(check.device, int(cfg.seed))) for _ in range(2)]
        rows.append({"deterministic": deterministic, "precision": record["precision"],
                     "bitwise_equal": torch.equal(x[0], x[1]), "max_abs_diff": float((x[0] - x[1]).abs().max())})
        check.save()
    notes.append(f"DPS, {check.scale.steps} steps, the same seed twice in one process")


# -- H: torch.compile ---------------------------------------------------------------------------------
def graphs() -> int:
    """Graphs torch.compile has compiled in this process since the last torch._dynamo.reset()."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def part_h(check: Check, results: dict, notes: list) -> None:
    prior = check.prior()
    cfg = check.bench_config()
    noise = build_noise(cfg.task)
    operator, y = bench.draw_problem(cfg, prior, noise, torch.Generator().manual_seed(int(cfg.seed)), check.device)
    seed, backend = int(cfg.seed), check.scale.compile_backend
    samplers = {name: bench.build_sampler_named(cfg, name) for name in ("dps", "dmap")}
    eager = {}
    record = check.perf(precision="auto")
    for name, sampler in samplers.items():
        bench.run_sampler(sampler, prior, operator, noise, y, 1, seed)  # warm-up
        run = bench.run_sampler(sampler, prior, operator, noise, y, 1, seed)
        eager[name] = run["seconds"] / run["steps"]
    torch._dynamo.reset()
    check.perf(precision="auto", compile=True, compile_backend=backend)
    rows = results["rows"] = []
    for name, sampler in samplers.items():  # dps compiles the VJP, dmap then the no-grad forward
        if check.past_budget():  # compiling the 512 network takes minutes: the report keeps what was done
            notes.append(f"{name} not compiled: the budget was spent")
            break
        before = graphs()
        start = time.perf_counter()
        first = bench.run_sampler(sampler, prior, operator, noise, y, 1, seed)
        first_s = time.perf_counter() - start
        middle = graphs()
        again = bench.run_sampler(sampler, prior, operator, noise, y, 1, seed)
        per_step = again["seconds"] / again["steps"]
        rows.append({"sampler": name, "batch": 1, "eager_s_per_step": eager[name], "compiled_s_per_step": per_step,
                     "speedup": eager[name] / per_step, "first_chain_s": first_s,
                     "compile_s": first_s - first["steps"] * per_step, "graphs_first_chain": middle - before,
                     "graphs_second_chain": graphs() - middle})
        check.save()
    for batch in (2, 4):  # new batches: does the dynamic batch dimension spare recompiles?
        if check.past_budget():
            notes.append(f"batch {batch} not run: the budget was spent")
            break
        before = graphs()
        start = time.perf_counter()
        run = bench.run_sampler(samplers["dps"], prior, operator, noise, y, batch, seed)
        rows.append({"sampler": "dps", "batch": batch, "first_chain_s": time.perf_counter() - start,
                     "graphs_first_chain": graphs() - before})
        check.save()
    from torch._dynamo.utils import counters

    results["graph_breaks"] = sum(counters["graph_break"].values())
    results["graphs_total"] = graphs()
    notes.append(f"backend {backend}, precision {record['precision']}, {check.scale.steps} steps per chain; "
                 "compile_s = first chain - steps x compiled s/step; torch specialises a batch of 1, so batch 2 "
                 "may compile once more, a later batch should not")
    if backend != "inductor":
        notes.append(f"{backend}: graph capture and counting only (inductor's code generation takes minutes on a "
                     "CPU), so the speed-up is not inductor's")


# -- I: the tasks on the device, and a multirun on the gpus launcher ---------------------------------------
def part_i(check: Check, results: dict, notes: list) -> None:
    tasks = results["tasks"] = []
    for task in IMAGE_TASKS:
        cfg = check.config(f"task={task}", "data=demo")
        size = prior_image_size(cfg.prior)
        item = load_items(cfg.data, size)[0]
        noise = build_noise(cfg.task)
        _, op_cpu, x0_cpu, y_cpu = draw_measurement(cfg, item, size, noise)
        start = time.perf_counter()
        _, op_dev, x0_dev, y_dev = measure(cfg, item, size, noise, check.device)
        sync(check.device)
        row = {"task": task, "size": size, "measure_s": time.perf_counter() - start,
               "y_bitwise_equal": torch.equal(y_dev.cpu(), y_cpu),
               "y_max_abs_diff": float((y_dev.cpu() - y_cpu).abs().max()),
               "A_rel_diff": rel(op_dev(x0_dev).cpu(), op_cpu(x0_cpu))}
        grads = []
        for op, y, x0 in ((op_cpu, y_cpu, x0_cpu), (op_dev, y_dev, x0_dev)):
            x = (0.9 * x0).requires_grad_(True)  # off the truth, so the misfit has a gradient
            (g,) = torch.autograd.grad(noise.misfit(y, op(x)).sum(), x)
            grads.append(g.cpu())
        row["misfit_grad_rel_diff"] = rel(grads[1], grads[0])
        tasks.append(row)
    check.save()
    bad = [r["task"] for r in tasks if not r["y_bitwise_equal"]]
    results["multirun"], results["multirun_shards"] = {}, []
    multirun(check, results["multirun"], results["multirun_shards"], notes)
    if bad:
        raise RuntimeError(f"y drawn on {check.device} differs from the CPU's for {', '.join(bad)}")


def metric_overrides(check: Check) -> tuple[list[str], str]:
    """metrics=default with the LPIPS/Inception files paths.* points to, or random networks where there are
    none (a machine without network: nothing is downloaded). Returns (overrides, what was used)."""
    from .metrics import check_weights

    cfg = check.config("metrics=default", prior=("prior=tiny",))
    try:
        check_weights(list(cfg.metrics.names), dict(cfg.paths), cfg.metrics.get("lpips_net", "alex"))
        return ["metrics=default"], "the LPIPS and Inception weight files found through paths.*"
    except UserError as err:
        return ["metrics=default", "metrics.random_weights=true"], \
            f"random LPIPS and Inception networks (metrics.random_weights=true): no weight files here ({type(err).__name__})"


def multirun(check: Check, out: dict, shards: list, notes: list) -> None:
    """Two shards of a tiny-prior DPS sweep through `python -m dps_map.run -m`, on the gpus launcher where
    there is a GPU (it refuses a machine without one: there, Hydra's serial local launcher). Fills `out` and
    one row per shard in `shards`."""
    sweep = (check.out / "multirun").absolute()
    shutil.rmtree(sweep, ignore_errors=True)  # a rerun would resume: nothing to time or score
    cuda = check.device.type == "cuda"
    launcher = "gpus" if cuda else "local"
    metrics, weights = metric_overrides(check)
    args = [sys.executable, "-m", "dps_map.run", "-m", f"hydra/launcher={launcher}", "prior=tiny", "task=sr4",
            "sampler=dps", f"sampler.respacing={check.scale.multirun_steps}", "data=demo", "data.per_photo=2",
            "num_samples=2", "data.num_shards=2", "data.shard=0,1", "perf.precision=auto", *metrics,
            f"device={'auto' if cuda else check.device}", "progress=false", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=check.scale.multirun_timeout_s, env=env)
    out.update(launcher=launcher, command=shlex.join(["python", *args[1:]]), returncode=proc.returncode,
               seconds=time.perf_counter() - start)
    notes.append(f"multirun metrics: {weights}")
    if not cuda:
        notes.append("no GPU here: the gpus launcher refuses to start, so the two shards ran on hydra/launcher=local")
    if proc.returncode:
        tail = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["(no output)"]
        raise RuntimeError(f"the multirun exited with {proc.returncode}: {tail[0]}")
    for path in sorted(sweep.rglob("summary.json")):
        summary = json.loads(path.read_text())
        scores = summary.get("metrics", {})
        shard = re.search(r"data\.shard=(\d+)", path.parent.name)
        shards.append({"shard": int(shard.group(1)) if shard else path.parent.name, "device": summary.get("device"),
                              "device_name": summary.get("device_name"), "precision": summary.get("precision"),
                              "n_samples": summary.get("n_samples"),
                              **{k: _mean(scores.get(k)) for k in ("psnr", "lpips", "fid")},
                              "kid": _mean(scores.get("kid"))})
    missing = [str(s["shard"]) for s in shards if s["lpips"] is None or s["fid"] is None]
    if len(shards) != 2 or missing:
        raise RuntimeError(f"expected 2 shards scored with LPIPS and FID, got {len(shards)}"
                           + (f" (unscored: {', '.join(missing)})" if missing else ""))
    wrong = [str(s["shard"]) for s in shards if not str(s["device"]).startswith(check.device.type)]
    if wrong:
        raise RuntimeError(f"shards ran on another device than {check.device.type}: {', '.join(wrong)}")


def _mean(value):
    """A summary's metric: a number, or its mean ({mean, sem, ...})."""
    if isinstance(value, dict):
        return value.get("mean")
    return value


# -- J: the SD2 latent path -------------------------------------------------------------------------------
def part_j(check: Check, results: dict, notes: list) -> None:
    sd2 = ("prior=sd2_tiny",)
    cfg = check.config("task=sr4", "data=demo", prior=sd2)
    prior = build_prior(cfg.prior, check.device)
    noise = build_noise(cfg.task)
    item = load_items(cfg.data, prior.image_size)[0]
    _, operator, x0, y = measure(cfg, item, prior.image_size, noise, check.device)
    rows = results["rows"] = []
    images = {}
    for precision in ("fp32", "fp16"):
        check.perf(prior, precision=precision)
        for name in ("dps", "dmap"):
            sampler = make_sampler(check.config(f"sampler={name}", f"sampler.respacing={check.scale.latent_steps}",
                                                "task=sr4", prior=sd2))
            unit = MeasurementUnit(item, operator, x0, y, None, None, None, prior, [0], [0],
                                   generator(check.device, int(cfg.seed)))
            dtypes = {"unet": set(), "vae": set()}  # what each network computed in, seen at its output
            hooks = [prior.unet.register_forward_hook(lambda m, i, o: dtypes["unet"].add(str(o.sample.dtype))),
                     prior.vae.decoder.register_forward_hook(lambda m, i, o: dtypes["vae"].add(str(o.dtype)))]
            try:
                sampled = sample_units(prior, sampler, noise, [unit])
            finally:
                for hook in hooks:
                    hook.remove()
            x, stats = sampled.x, sampled.result.stats
            images[(precision, name)] = x
            rows.append({"precision": precision, "sampler": name, "s_per_step": sampled.seconds / stats["steps"],
                         "forward": stats["forward"], "vjp": stats["vjp"], "decoder_vjp": stats.get("decoder_vjp"),
                         "unet_output": "/".join(sorted(dtypes["unet"])), "vae_output": "/".join(sorted(dtypes["vae"])),
                         "image_dtype": str(x.dtype), "finite": bool(torch.isfinite(x).all()),
                         "rel_diff_vs_fp32": rel(x, images[("fp32", name)])})
            check.save()
    if not all(r["finite"] for r in rows):
        raise RuntimeError("an SD2 sample is not finite")
    if any(r["vae_output"] != "torch.float32" for r in rows):
        raise RuntimeError("the VAE decoded in another precision than fp32")
    notes.append(f"tiny random SD2 stand-in (32x32 images, 4x8x8 latents), SR x4, {check.scale.latent_steps} steps: "
                 "the path runs; its numbers say nothing of SD2-base")


# -- the parts, the loop and the report -----------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    title: str
    question: str
    run: Callable  # run(check, results, notes) -> extra fields of the part's record, or None


PARTS = {
    "A": Part("the network on the device", "Does the full-size adm512 (random weights) build on the device, run one "
              "forward and one forward+VJP, and how much memory do they take?", part_a),
    "B": Part("precision and layout", "What does one forward and one forward+VJP cost at batch 1 in fp32, TF32, "
              "bf16 and fp16, with and without channels_last and gradient checkpointing?", part_b),
    "C": Part("half precision on a DPS step", "How far do bf16 and fp16 move one DPS step (eps, the guidance "
              "gradient, x_{t-1}) from fp32, early, midway and late in the chain?", part_c),
    "D": Part("memory per batch", "How much memory does a forward+VJP take at each batch size, and where does it "
              "run out?", part_d),
    "E": Part("sampler cost per step", "What does a DPS and a DMAP step cost, and how much more than their network "
              "calls?", part_e),
    "F": Part("measurement batching", "Does stacking measurements into one sampler call (measurement_batch) pay on "
              "this device?", part_f),
    "G": Part("reproducibility", "Does the same seed give bitwise the same sample, with and without "
              "perf.deterministic?", part_g),
    "H": Part("torch.compile", "Does torch.compile pay: compile time, speed-up per step, graphs compiled per "
              "chain?", part_h),
    "I": Part("tasks and a GPU multirun", "Does every image task draw on the device the problem the CPU draws, and "
              "does a two-shard multirun on the gpus launcher score LPIPS and FID on the device?", part_i),
    "J": Part("the SD2 latent path", "Do DPS and DMAP run on the SD2 latent path (its tiny stand-in) in fp32 and "
              "fp16, with the VAE decoding in fp32?", part_j),
}
#: the order the parts run in: H last, as compiling the 512 network takes minutes (a cut budget then costs H only)
ORDER = "ABCDEFGIJH"


def error_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else '(no message)'}"


def run_parts(check: Check, parts: dict, order: str, selected: str | None = None) -> None:
    """Run the parts in `order`, each in its own try: record ok / failed / skipped and save the report when a
    part starts and when it ends. KeyboardInterrupt and SystemExit mark the part interrupted and propagate."""
    records = check.report["parts"]
    for key in sorted(parts):
        records[key] = {"title": parts[key].title, "question": parts[key].question, "status": "not run"}
    check.save()
    bar = tqdm(order, desc="gpu-check", unit="part", file=sys.stderr, disable=None)  # no bar in a log file
    for key in bar:
        record = records[key]
        if selected is not None and key not in selected:
            record.update(status="skipped", why="not selected (--parts)")
            continue
        if check.past_budget():
            record.update(status="skipped", why=f"not started: the budget of {check.scale.budget_s:.0f} s was spent")
            check.save()
            continue
        bar.set_postfix_str(f"{key}: {parts[key].title}")
        results, notes = {}, []
        record.update(status="running", results=results, notes=notes)
        check.save()
        start = time.perf_counter()
        try:
            record.update(parts[key].run(check, results, notes) or {})
            record["status"] = "ok"
        except (KeyboardInterrupt, SystemExit) as stop:
            record.update(status="interrupted", error=error_line(stop) if str(stop) else type(stop).__name__,
                          seconds=time.perf_counter() - start)
            check.save()
            raise
        except Exception as err:  # noqa: BLE001 - a failing part is a finding; the others still run
            record.update(status="failed", error=error_line(err), error_type=type(err).__name__,
                          traceback=traceback.format_exc().splitlines()[-40:])
        record["seconds"] = time.perf_counter() - start
        try:
            check.restore()
        except Exception as err:  # noqa: BLE001 - the next part would run on changed settings: say so
            notes.append(f"restoring the default settings after this part failed: {error_line(err)}")
        check.save()
        tqdm.write(f"gpu-check: {key} {parts[key].title}: {record['status']} ({record['seconds']:.1f} s)"
                   + (f": {record.get('error') or record.get('why')}" if record["status"] != "ok" else ""),
                   file=sys.stderr)
    check.report["finished"] = True
    check.save()


# -- report.md ----------------------------------------------------------------------------------------
def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return "-" if value is None else str(value)


def _table(rows: list[dict]) -> list[str]:
    keys = list(dict.fromkeys(k for row in rows for k in row if k != "message"))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return lines + ["| " + " | ".join(_fmt(row.get(k)) for k in keys) + " |" for row in rows]


def markdown(report: dict) -> str:
    head = report["header"]
    lines = [f"# GPU check ({head['mode']})", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in head.items()]
    lines += [f"| wall_s | {report.get('wall_s')} |", f"| finished | {report['finished']} |", "",
              "| part | title | status | seconds |", "|---|---|---|---|"]
    parts = report["parts"]
    lines += [f"| {k} | {p['title']} | {p['status']} | {_fmt(p.get('seconds'))} |" for k, p in parts.items()]
    for key, part in parts.items():
        lines += ["", f"## {key}. {part['title']}: {part['status']}", "", f"*{part['question']}*", ""]
        if part.get("why"):
            lines.append(f"Skipped: {part['why']}")
        if part.get("error"):
            lines.append(f"**Error** ({part.get('error_type', part['status'])}): `{part['error']}`")
        extra = {k: v for k, v in part.items() if k not in ("title", "question", "status", "results", "notes", "why",
                                                             "error", "error_type", "traceback", "seconds")}
        lines += [f"- {k}: {_fmt(v)}" for k, v in extra.items()]
        for name, value in (part.get("results") or {}).items():
            if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
                lines += ["", f"{name}:", ""] + _table(value) + [""]
            elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
                lines += ["", f"{name}:", ""] + _table([{"": k, **v} for k, v in value.items()]) + [""]
            elif isinstance(value, dict) and any(isinstance(v, dict) for v in value.values()):
                lines.append(f"- {name}:")
                lines += [f"  - {k}: {_fmt(v)}" for k, v in value.items()]
            else:
                lines.append(f"- {name}: {_fmt(value)}")
        lines += [f"- note: {note}" for note in part.get("notes") or []]
    return "\n".join(lines) + "\n"


# -- the command line ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dps_map.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every part at toy size, on any device (minutes on a CPU)")
    parser.add_argument("--out", default="outputs/gpu_check", help="where report.json and report.md go")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu")
    parser.add_argument("--parts", default=None, help=f"run only these parts, e.g. ABE (default: all of {ORDER})")
    parser.add_argument("--budget", type=float, default=None,
                        help="skip parts not started after this many seconds (default: 480 full, none with --smoke)")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dps_map.priors.adm").setLevel(logging.ERROR)  # random_init warnings are expected here
    logging.getLogger("dps_map.config.tuned").setLevel(logging.ERROR)  # untuned step sizes: timing only here
    warnings.filterwarnings("ignore", category=FutureWarning)
    scale = SMOKE if ns.smoke else FULL
    if ns.budget is not None:
        scale = Scale(**{**scale.__dict__, "budget_s": ns.budget})
    selected = ns.parts.upper() if ns.parts else None
    if selected and set(selected) - set(PARTS):
        parser.error(f"--parts: unknown part(s) {''.join(sorted(set(selected) - set(PARTS)))} (known: {ORDER})")
    try:
        device = resolve_device(ns.device)
    except UserError as err:
        print(f"gpu-check: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    if ns.smoke and device.type == "cpu":
        # one thread, as make bench-quick: two processes each spinning on every core of a small shared machine slow
        # each other down up to 100x (OpenMP spin-wait); the multirun's jobs inherit it through OMP_NUM_THREADS
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"
    check = Check(scale, device, Path(ns.out), ns.smoke, shlex.join(getattr(sys, "orig_argv", sys.argv)))
    print(f"gpu-check: {check.report['header']['mode']} check on {device} "
          f"({check.report['header']['device_name']}); report in {check.out}/report.md", file=sys.stderr)
    run_parts(check, PARTS, ORDER, selected)
    status = {k: p["status"] for k, p in check.report["parts"].items()}
    failed = [k for k, s in status.items() if s == "failed"]
    counts = ", ".join(f"{list(status.values()).count(s)} {s}" for s in dict.fromkeys(status.values()))
    print(f"gpu-check: {counts}" + (f" ({', '.join(failed)})" if failed else "") + f"; wrote {check.out}/report.md",
          file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
