"""Preflight: check a run or a sweep and price it before GPU time is spent.

    python -m dps_map.preflight [--steps 3] [--out DIR] [--no-trial] [--devices N] [--calibration FILE]
                                <overrides of dps_map.run>
    python -m dps_map.preflight -m +experiment=paper task=sr4,sr8 sampler=dps,dmap data.num_shards=8 'data.shard=range(8)'

1. Expands every job of the command line as Hydra would (:mod:`dps_map.config.sweep`) and checks each one:
   the config and the sampler's values, the prior's checkpoint, the adapter, the data folder and its
   class labels, the metric weights; and that no two jobs share an output directory another run holds.
   Every problem of every job is reported, not only the first.
2. Trial: runs each distinct (prior, task, sampler, batch, measurement batch, perf) configuration for
   ``--steps`` diffusion steps (after one warm-up step) on the first real measurement of its data, on the
   configured device, at the network batch of one of the run's sampler calls, and measures seconds per
   step, network forwards and VJPs per step and peak memory (``torch.cuda.max_memory_allocated`` on a
   GPU; peak RSS on the CPU, reset before each trial). With ``perf.compile=true`` the network is first
   called once of each kind (no-grad forward, VJP) at the trial's batch, so no timed step compiles.
3. Prices the sweep: per job, sampler calls x steps x GPU seconds per step, summed to GPU-hours, and the
   wall-clock hours when the jobs are spread over ``--devices`` GPUs (default: the launcher's GPUs per
   node, or 1). The GPU seconds per step are the trial's own on a GPU. On a CPU the trial measures CPU
   time, which says nothing reliable about a GPU (relative costs differ too: fp16 is tens of times slower
   than fp32 on a CPU), so no GPU-hours are projected, unless ``--calibration FILE`` gives the GPU check's
   report (outputs/gpu_check/report.json, ``make gpu-check``): its part E times each sampler on the
   full-size adm512 on a GPU, at batch 1. Rule: a job of that prior and of a sampler the report times gets
   the report's seconds per step for that sampler, per sample, x the job's batch per network call
   (linear in the batch: an upper bound, since a GPU runs a batch faster than its samples one by one);
   the same sampler, not a ratio of CPU timings, because CPU timings do not scale to a GPU. Other jobs
   are not projected (said per job). The CPU time itself is kept as ``measured_hours``.
   As in dps_map.run: each image is drawn in chains of ``min(num_samples, batch_size)``
   samples, and ``measurement_batch`` chains (of one or several images) are stacked into one sampler call,
   so a job makes ceil(images x chains per image / measurement_batch) calls at a network batch of
   measurement_batch x chain (both counted with a shorter last chain or call as a full one: an upper
   bound). The forwards and VJPs per step do not depend on the stacking; the memory grows with the batch.

Writes ``preflight.json`` (per job: task, prior, sampler, seconds_per_step (measured), device_type,
vjp_per_step, peak_memory_bytes, fits, steps, n_images, measurement_batch (chains per call), batch (per
network call), sampler_calls, measured_hours (at the measured speed), gpu_seconds_per_step, projection (its
basis) or not_projected (why), projected_hours (GPU-hours, null when not projected), ...; and
total_projected_hours) to ``--out`` (default: the sweep's directory, or the run directory of a single run)
and prints a table. ``fits``: on a GPU, peak allocated x 1.2 + 1 GiB below the GPU's memory
(GPU_MEMORY_MARGIN); on a CPU, peak RSS below the machine's RAM.
Exit code 0 if every job is valid and every trial ran; 2 if a job is invalid (nothing is run then) or the
calibration file is missing or not JSON; 1 if a trial failed (out of memory, diverged, or an error).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .config import (
    check_adapter,
    check_data,
    check_prior_checkpoint,
    config_digest,
    device_record,
    resolve_device,
    resolved,
)
from .config.sweep import expand_jobs, without_hydra
from .data import demo_crops, demo_photos, folder_files, folder_items
from .errors import UserError
from .io import absolute_path, atomic_write_json
from .runner.rundir import class_label_policy
from .runner.timing import (
    Enough,
    PeakMemory,
    StepTimer,
    device_memory_bytes,
    free_memory,
    is_out_of_memory,
    network_calls,
)

log = logging.getLogger(__name__)

#: A job fits a GPU only if peak x 1.2 + 1 GiB < the GPU's memory. The peak is torch.cuda.max_memory_allocated,
#: which counts tensors only: the caching allocator reserves more than it hands out (block rounding and
#: fragmentation, ~10-20%), and the CUDA context, cuBLAS/cuDNN workspaces and compiled kernels take another
#: 0.5-1 GiB that no allocator statistic counts.
GPU_MEMORY_MARGIN = (1.2, 2**30)
#: The network the GPU check's part E times: a calibration prices only jobs of this prior at this size.
CALIBRATED_PRIOR = ("adm512", 512)


# -- 1. checks ----------------------------------------------------------------------------------------
def checks(cfg) -> list:
    """The independent checks of one job: the whole config (validate() stops at its first problem), then
    every file on its own (prior checkpoint, adapter, data and labels, each metric's weights)."""
    from .metrics import check_weights
    from .runner import checked_sampler

    out = [lambda: checked_sampler(cfg), lambda: check_prior_checkpoint(cfg.prior), lambda: check_adapter(cfg.sampler, cfg.prior, cfg.task)]
    if cfg.data.kind != "gmm":
        out.append(lambda: check_data(cfg.prior, cfg.data))
        if not cfg.metrics.get("random_weights", False):
            out += [lambda name=name: check_weights([name], dict(cfg.paths), cfg.metrics.get("lpips_net", "alex"))
                    for name in cfg.metrics.names]
    return out


def job_problems(cfg) -> list[str]:
    """Every problem of one job's config, each once."""
    problems = []
    for check in checks(cfg):
        try:
            check()
        except UserError as err:
            if str(err) not in problems:
                problems.append(str(err))
        except Exception as err:  # noqa: BLE001 - a check that cannot even run is a problem of this job
            problems.append(f"{type(err).__name__}: {err}")
    return problems


# -- 2. trial -----------------------------------------------------------------------------------------
def n_images(cfg) -> int:
    """Measurements this job restores (its shard of the data)."""
    data = cfg.data
    if data.kind == "gmm":
        return 1
    if data.kind == "demo":
        total = data.get("per_photo", 4) * len(demo_photos(data))
    else:
        total = len(folder_files(absolute_path(data.path)))
        total = min(total, data.max_images) if data.get("max_images") else total
    shards, index = data.get("num_shards", 1), data.get("shard", 0)
    return len(range(index, total, shards))


def first_item(cfg, size: int):
    """The first measurement's image of the job's data (loading one image, not the dataset)."""
    data = cfg.data
    if data.kind == "demo":
        return demo_crops(size, data.get("per_photo", 4), photos=demo_photos(data)[:1])[0]
    return folder_items(absolute_path(data.path), size, 1, data.get("labels"))[0]


def trial_key(cfg) -> str:
    """What a trial's cost depends on: prior, task, sampler, batch, chains per sampler call and perf knobs
    (not data or shard, except through the number of chains a call can stack)."""
    plain = resolved(cfg)
    keep = {k: plain.get(k) for k in ("prior", "task", "sampler", "perf", "num_samples", "batch_size", "device")}
    keep["units_per_call"] = units_per_call(cfg)
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def chain_batch(cfg) -> int:
    """Samples drawn together in one chain (one sample chunk of one image, dps_map.runner.sample_chunks)."""
    return min(cfg.num_samples, cfg.get("batch_size") or cfg.num_samples)


def chains_per_image(cfg) -> int:
    return math.ceil(cfg.num_samples / chain_batch(cfg))


def units_per_call(cfg) -> int:
    """Chains stacked into one sampler call (dps_map.runner.execute.run_images): ``measurement_batch`` of them, fewer
    when the job has fewer (images x chains per image); 1 for the Gaussian mixture (one measurement)."""
    if cfg.data.kind == "gmm":
        return 1
    mb = int(cfg.get("measurement_batch", 1) or 1)
    return max(1, min(mb, n_images(cfg) * chains_per_image(cfg)))


def sampler_calls(n_img: int, cfg, units: int) -> int:
    """Sampler calls of a job: its chains (images x chains per image) stacked `units` at a time."""
    return math.ceil(n_img * chains_per_image(cfg) / units)


def trial(cfg, steps: int, priors: dict | None = None) -> dict:
    """Run one job's configuration for 1 + `steps` diffusion steps on its first real measurement, through the
    runner's own sampler call (stacked as the run stacks it), and measure the steady steps (the first one,
    which pays for allocation and kernel selection, is not counted). `priors` caches the built priors across
    trials (an adm512 checkpoint is 2 GB to load)."""
    from .config.targets import adapter_of, build_noise
    from .operators import MatrixOperator
    from .runner import (
        MeasurementUnit,
        bind_class_label,
        check_measurement_batch,
        generator,
        gmm_problem,
        item_seed,
        make_prior,
        make_sampler,
        measure,
        sample_units,
    )

    device = resolve_device(cfg.device)
    sampler = make_sampler(cfg)
    plain = resolved(cfg)
    key = json.dumps([plain["prior"], adapter_of(cfg.prior, cfg.sampler), plain.get("perf"), str(device)],
                     sort_keys=True, default=str)
    priors = {} if priors is None else priors
    if key not in priors:
        priors.clear()  # one prior in memory at a time
        priors[key] = make_prior(cfg, device)
    prior = priors[key]
    memory = PeakMemory(device)
    noise = build_noise(cfg.task)
    chain, units = chain_batch(cfg), units_per_call(cfg)
    try:
        if prior.kind == "vector":
            A, _, y, _, _ = gmm_problem(cfg, prior)
            memory.reset()
            timer = StepTimer(device, steps)
            sampler.run(prior, MatrixOperator(A.to(device)), noise, y[None].to(device).expand(chain, -1),
                        (chain, prior.mixture.dim), generator(device, item_seed(cfg.seed, "preflight")), hooks=[timer])
        else:
            check_measurement_batch(cfg, prior, sampler)  # what the run refuses, the trial refuses
            item = first_item(cfg, prior.image_size)
            mgen, operator, x0, y = measure(cfg, item, prior.image_size, noise, device)
            label = bind_class_label(cfg, prior, item, mgen)
            model = prior.condition(operator, y) if prior.needs_measurement else prior
            # the run's stacked call, the first measurement standing in for each of its `units` chains
            streams = ["preflight"] if units == 1 else [f"preflight/{j}" for j in range(units)]
            stack = [MeasurementUnit(item, operator, x0, y, label, None, None, model, list(range(chain)),
                                     list(range(chain)), generator(device, item_seed(cfg.seed, s))) for s in streams]
            if (plain.get("perf") or {}).get("compile"):
                warm_up(prior, model, sampler, stack, device)
            memory.reset()
            timer = StepTimer(device, steps)
            sample_units(prior, sampler, noise, stack, hooks=[timer])
    except Enough:
        pass
    diffusion = sampler.diffusion(prior)
    chain_steps = diffusion.num_steps if sampler.start >= 1 else max(1, round(sampler.start * diffusion.num_steps))
    return {**timer.per_step(), "peak_memory_bytes": memory.peak_bytes(),
            "device_memory_bytes": device_memory_bytes(device), "steps": chain_steps, "batch": chain * units,
            "measurement_batch": units, **device_record(device), "image_size": getattr(prior, "image_size", None),
            "diverged": timer.diverged()}


def warm_up(prior, model, sampler, stack: list, device) -> None:
    """Call the trial's network once of each kind a sampler makes (no-grad forward, VJP) at the trial's batch,
    with the class labels bound as sample_units binds them and the sampler's own timestep tensor, so that a
    compiled network (perf.compile) compiles here and not inside a timed step."""
    if stack[0].label is not None:
        prior.set_class_labels(stack[0].label if len(stack) == 1 else
                               torch.tensor([u.label for u in stack for _ in u.ks]))
    batch = sum(len(u.ks) for u in stack)
    t = sampler.model_t(sampler.diffusion(prior), 0, batch, device)
    for call in network_calls(model, t):
        call()


# -- 3. the report ------------------------------------------------------------------------------------
def _launcher_int(cfg, key: str) -> int | None:
    try:
        value = OmegaConf.select(cfg, f"hydra.launcher.{key}", default=None)
        return None if value is None else int(value)
    except Exception:  # noqa: BLE001 - an unresolvable launcher setting: unknown
        return None


def launcher_devices(cfg) -> int:
    """GPUs the launcher runs jobs on at once: SLURM's array_parallelism (one GPU per job), the gpus
    launcher's gpus_per_node, else 1 (the local launcher runs jobs one after another)."""
    return max(1, _launcher_int(cfg, "array_parallelism") or _launcher_int(cfg, "gpus_per_node") or 1)


def job_hours(n_img: int, cfg, t: dict, seconds_per_step: float) -> float:
    """Hours of one job: sampler calls x steps x seconds per step (of a call at the trial's batch)."""
    return sampler_calls(n_img, cfg, t["measurement_batch"]) * t["steps"] * seconds_per_step / 3600


def fits(t: dict) -> bool:
    """Whether the trial's peak fits the device: with GPU_MEMORY_MARGIN on a GPU; on the CPU the peak RSS
    already counts everything the process holds."""
    total, peak = t["device_memory_bytes"], t["peak_memory_bytes"]
    if not total:
        return False
    if t["device_type"] == "cuda":
        factor, extra = GPU_MEMORY_MARGIN
        return peak * factor + extra < total
    return peak < total


# -- GPU calibration --------------------------------------------------------------------------------
def read_calibration(path: str) -> dict:
    """The GPU check's report (``{"parts": {"E": {"status": "ok", "device_name", "results": {sampler:
    {"s_per_step", "batch"}}}}}``) as {"path", "device_name", "per_sample": {sampler: GPU s/step per sample}},
    or {"path", "unusable": why} when it holds no usable GPU timing. A missing or non-JSON file: UserError."""
    file = Path(absolute_path(path))
    if not file.is_file():
        raise UserError(f"--calibration {path}: no such file (make gpu-check writes outputs/gpu_check/report.json "
                        "on a GPU machine)")
    try:
        report = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"--calibration {path}: not a JSON report ({type(err).__name__}: {err})") from None
    parts = report.get("parts") if isinstance(report, dict) else None
    part = parts.get("E") if isinstance(parts, dict) else None
    if not isinstance(part, dict) or part.get("status") != "ok" or not isinstance(part.get("results"), dict):
        status = part.get("status") if isinstance(part, dict) else None
        return {"path": str(file), "unusable": "no part E with status ok and results" +
                (f" (part E status: {status})" if status else "")}
    # what part E timed, where the report says: a smoke run (the tiny prior, or a CPU) is no GPU calibration
    timed = {"device_type": "cuda", "mode": "full", "prior": CALIBRATED_PRIOR[0]}
    wrong = [f"{k} {part[k]}" for k, want in timed.items() if part.get(k) not in (None, want)]
    if wrong:
        return {"path": str(file), "unusable": f"part E timed {', '.join(wrong)}, not adm512 on a GPU (make gpu-check "
                "without SMOKE=1, on the GPU machine)"}
    per_sample = {}
    for name, entry in part["results"].items():
        seconds, batch = (entry.get("s_per_step"), entry.get("batch", 1)) if isinstance(entry, dict) else (None, None)
        if (isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
                and seconds > 0 and isinstance(batch, int) and batch >= 1):
            per_sample[name] = seconds / batch
    if not per_sample:
        return {"path": str(file), "unusable": "part E has no sampler with a positive s_per_step"}
    return {"path": str(file), "device_name": str(part.get("device_name") or "an unnamed GPU"),
            "per_sample": per_sample}


def gpu_seconds_per_step(cfg, t: dict, calibration: dict | None) -> tuple[float | None, str]:
    """(GPU seconds per step of the job's sampler call, its basis), or (None, why there is none)."""
    if t["device_type"] == "cuda":
        return t["seconds_per_step"], f"measured on {t['device_name']}"
    if calibration is None:
        return None, f"measured on the {t['device_type'].upper()}, not a GPU"
    if "unusable" in calibration:
        return None, f"the calibration is unusable: {calibration['unusable']}"
    name, size = CALIBRATED_PRIOR
    if (cfg.prior.name, t["image_size"]) != (name, size):
        return None, f"the calibration times prior {name} at {size} px, not {cfg.prior.name} at {t['image_size']} px"
    per_sample = calibration["per_sample"].get(cfg.sampler.name)
    if per_sample is None:
        return None, f"the calibration does not time sampler {cfg.sampler.name}"
    return per_sample * t["batch"], (f"GPU check on {calibration['device_name']}: {cfg.sampler.name} "
                                     f"{per_sample:.3g} s/step per sample x batch {t['batch']}")


def fmt_bytes(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def _g(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def report_table(rows: list[dict]) -> str:
    head = ("| job | task | prior | sampler | images | calls | batch | steps | measured s/step | fwd/step | VJP/step | "
            "peak memory | fits | GPU s/step | GPU-hours |")
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        start = f"| {r['job']} | {r['task']} | {r['prior']} | {r['sampler']} | {r['n_images']} | "
        if r.get("measured_hours") is None:  # invalid, or its trial failed
            lines.append(start + "- | " * 10)
            continue
        fits_ = {True: "yes", False: "NO"}[r["fits"]]
        lines.append(start + f"{r['sampler_calls']} | {r['batch']} | {r['steps']} | {r['seconds_per_step']:.3g} "
                     f"{r['device_type']} | {r['forward_per_step']:.3g} | {r['vjp_per_step']:.3g} | "
                     f"{fmt_bytes(r['peak_memory_bytes'])} | {fits_} | {_g(r['gpu_seconds_per_step'])} | "
                     f"{_g(r['projected_hours'])} |")
    return "\n".join(lines)


def preflight(args: list[str], multirun: bool, steps: int = 3, out: str | None = None, run_trials: bool = True,
              devices: int | None = None, calibration: str | None = None) -> tuple[int, dict]:
    """Check, trial and price the jobs of a command line. `calibration`: the GPU check's report.json, for
    GPU-hours from a trial on a CPU. Returns (exit code, the preflight.json dict)."""
    calib = read_calibration(calibration) if calibration else None  # a bad file stops before any trial
    if calib and "unusable" in calib:
        print(f"preflight: --calibration {calibration}: {calib['unusable']}; no GPU-hours are projected from it",
              file=sys.stderr)
    jobs = expand_jobs(args, multirun)
    out_dir = Path(absolute_path(out)) if out else (Path(str(jobs[0].cfg.hydra.sweep.dir)) if multirun
                                                     else jobs[0].run_dir)
    from .runner import check_job_dirs

    invalid, rows = {}, []
    try:  # jobs sharing one output directory, or a directory another run is writing
        check_job_dirs(jobs)
    except UserError as err:
        invalid["the sweep"] = [str(err)]
    for n, job in enumerate(jobs):
        cfg = without_hydra(job.cfg)
        problems = job_problems(cfg)
        if problems:
            invalid[" ".join(job.overrides)] = problems
        rows.append({"job": n, "overrides": job.overrides, "run_dir": str(job.run_dir),
                     "task": cfg.task.name, "prior": cfg.prior.name, "sampler": cfg.sampler.name,
                     "class_label_policy": class_label_policy(cfg.prior), "problems": problems})
    by_problem: dict[str, list[int]] = {}
    for row in rows:
        for problem in row["problems"]:
            by_problem.setdefault(problem, []).append(row["job"])
    for problem in invalid.get("the sweep", []):
        print(f"preflight: the sweep: {problem}", file=sys.stderr)
    for problem, numbers in by_problem.items():
        which = "every job" if len(numbers) == len(jobs) > 1 else \
            f"job{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))} of {len(jobs)}"
        print(f"preflight: {which}: {problem}", file=sys.stderr)
    if invalid:
        print(f"preflight: the overrides of each job are in {out_dir / 'preflight.json'}", file=sys.stderr)
    result = {"n_jobs": len(jobs), "n_invalid": len(invalid), "jobs": rows}
    code = 2 if invalid else 0
    if not invalid:
        trials: dict[str, dict] = {}
        priors: dict = {}
        for row, job in zip(rows, jobs):
            cfg = without_hydra(job.cfg)
            row["digest"] = config_digest(cfg)
            row["n_images"] = n_images(cfg)
            if not run_trials:
                continue
            key = trial_key(cfg)
            if key not in trials:
                print(f"preflight: trial of {cfg.task.name}/{cfg.prior.name}/{cfg.sampler.name} ({steps} steps)",
                      file=sys.stderr)
                try:
                    trials[key] = trial(cfg, steps, priors)
                except UserError as err:
                    trials[key] = {"error": str(err)}
                except Exception as err:  # noqa: BLE001 - reported per job; the other trials still run
                    if is_out_of_memory(err):
                        trials[key] = {"error": f"out of memory: {(str(err).splitlines() or [''])[0]}", "fits": False}
                    else:
                        log.exception("trial failed")
                        trials[key] = {"error": f"{type(err).__name__}: {err}"}
                if "error" in trials[key]:  # after the except block, whose traceback held the trial's tensors
                    free_memory(resolve_device(cfg.device))
            t = trials[key]
            row.update(t)
            if "error" in t or t.get("diverged"):
                code = max(code, 1)
                print(f"preflight: job {row['job']} [{' '.join(job.overrides)}]: trial failed: "
                      f"{t.get('error', 'diverged (NaN)')}", file=sys.stderr)
                continue
            row["sampler_calls"] = sampler_calls(row["n_images"], cfg, t["measurement_batch"])
            row["measured_hours"] = job_hours(row["n_images"], cfg, t, t["seconds_per_step"])
            gpu_s, basis = gpu_seconds_per_step(cfg, t, calib)
            row["gpu_seconds_per_step"] = gpu_s
            row["projection" if gpu_s is not None else "not_projected"] = basis
            row["projected_hours"] = None if gpu_s is None else job_hours(row["n_images"], cfg, t, gpu_s)
            row["fits"] = fits(t)
            limit = _launcher_int(job.cfg, "timeout_min")
            if limit and row["projected_hours"] and row["projected_hours"] > limit / 60:  # submitit requeues it
                row["requeues_needed"] = math.ceil(row["projected_hours"] / (limit / 60)) - 1
                allowed = _launcher_int(job.cfg, "max_num_timeout")
                print(f"preflight: job {row['job']} needs {row['projected_hours']:.3g} h, over the launcher's time "
                      f"limit of {limit / 60:.3g} h: {row['requeues_needed']} requeue(s)"
                      + (f", more than max_num_timeout={allowed}: it will not finish" if allowed is not None
                         and row["requeues_needed"] > allowed else " (it resumes each time)")
                      + "; shard the data further (data.num_shards)", file=sys.stderr)
        projected = [r for r in rows if r.get("projected_hours") is not None]
        n_dev = devices or launcher_devices(jobs[0].cfg)
        result.update(total_projected_hours=sum(r["projected_hours"] for r in projected) if projected else None,
                      n_projected=len(projected), devices=n_dev,
                      wall_clock_hours=_wall_clock(projected, n_dev) if projected else None,
                      total_measured_hours=sum(r.get("measured_hours") or 0 for r in rows) if run_trials else None,
                      calibration=calib, all_fit=all(r.get("fits") for r in rows) if run_trials else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "preflight.json", result)
    if not invalid:
        print(report_table(rows) if run_trials else "\n".join(
            f"job {r['job']}: {r['task']}/{r['prior']}/{r['sampler']}, {r['n_images']} images: valid" for r in rows))
        if run_trials:
            for line in pricing_lines(rows, result, calibration):
                print(line)
    print(f"preflight: {len(jobs)} job(s), {len(invalid)} invalid; wrote {out_dir / 'preflight.json'}")
    return code, result


def pricing_lines(rows: list[dict], result: dict, calibration: str | None) -> list[str]:
    """What the hours are: measured on a GPU, projected from a GPU calibration, or not projected (CPU)."""
    timed = [r for r in rows if r.get("measured_hours") is not None]
    if not timed:
        return []
    lines = []
    on_gpu = [r for r in timed if r["device_type"] == "cuda"]
    on_other = [r for r in timed if r["device_type"] != "cuda"]
    if on_gpu and calibration:
        lines.append(f"--calibration {calibration} not used for the {len(on_gpu)} job(s) timed on a GPU "
                     f"({on_gpu[0]['device_name']})")
    if on_other:
        kind = on_other[0]["device_type"].upper()
        lines.append(f"measured on the {kind} ({on_other[0]['device_name']}): these seconds per step are {kind} "
                     f"time, {result['total_measured_hours']:.3g} {kind}-hours on this machine; they are not GPU "
                     "time and give no GPU-hours (a CPU even inverts relative costs: fp16 runs far slower than fp32)")
        if result.get("calibration") is None:
            lines.append("for GPU-hours run the preflight on a GPU, or pass --calibration "
                         "outputs/gpu_check/report.json (make gpu-check on the GPU machine)")
        elif "per_sample" in result["calibration"]:
            c = result["calibration"]
            lines.append(f"GPU-hours projected from the GPU check ({c['path']}, {c['device_name']}): a job's GPU "
                         f"s/step = the check's s/step of the same sampler on {CALIBRATED_PRIOR[0]} at "
                         f"{CALIBRATED_PRIOR[1]} px, per sample, x the job's batch (an upper bound); it assumes the "
                         "job runs the check's precision and perf settings")
    missing = [r for r in timed if r.get("projected_hours") is None]
    for reason in dict.fromkeys(r["not_projected"] for r in missing):
        numbers = [str(r["job"]) for r in missing if r["not_projected"] == reason]
        lines.append(f"not projected (job{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}): {reason}")
    if result["total_projected_hours"] is not None:
        lines.append(f"total: {len(rows)} jobs, {result['total_projected_hours']:.3g} GPU-hours for the "
                     f"{result['n_projected']} projected; ~{result['wall_clock_hours']:.3g} h wall clock on "
                     f"{result['devices']} GPU(s)")
    else:
        lines.append(f"total: {len(rows)} jobs, no GPU-hours projected")
    return lines


def _wall_clock(rows: list[dict], devices: int) -> float:
    """Hours until the last job ends when the jobs run `devices` at a time, longest first (a lower bound
    of the launcher's schedule, which starts them in order)."""
    ends = [0.0] * max(1, devices)
    for hours in sorted((r["projected_hours"] for r in rows), reverse=True):
        i = ends.index(min(ends))
        ends[i] += hours
    return max(ends)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dps_map.preflight", description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--multirun", action="store_true", help="the overrides describe a sweep (as run -m)")
    parser.add_argument("--steps", type=int, default=3, help="diffusion steps timed per trial (after 1 warm-up)")
    parser.add_argument("--out", default=None, help="where preflight.json goes (default: the sweep or run dir)")
    parser.add_argument("--no-trial", action="store_true", help="only check and count, run nothing")
    parser.add_argument("--devices", type=int, default=None, help="GPUs the jobs are spread over")
    parser.add_argument("--calibration", default=None, metavar="FILE",
                        help="the GPU check's report.json (make gpu-check): GPU-hours from a trial on a CPU")
    parser.add_argument("overrides", nargs="*", help="overrides of dps_map.run")
    ns = parser.parse_args(argv)
    if ns.steps < 1:
        parser.error("--steps must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .config.sweep import job_overrides

    multirun = ns.multirun
    try:
        if not multirun and len(job_overrides(ns.overrides, True)) > 1:  # a sweep given without -m
            multirun = True
        code, _ = preflight(ns.overrides, multirun, ns.steps, ns.out, not ns.no_trial, ns.devices, ns.calibration)
    except UserError as err:
        print(f"preflight: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    sys.exit(code)


if __name__ == "__main__":
    main()
