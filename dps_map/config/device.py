"""Where a run computes and in what precision (conf/perf/default.yaml, docs/performance.md "Precision").

One precision per run, resolved before the prior is built and recorded in run.json and summary.json:

* ``fp32``: every tensor and every kernel in float32; TF32 tensor cores only with ``perf.tf32=true``.
* ``bf16``: the prior's network under ``torch.autocast(bfloat16)``; eps and all diffusion maths in float32.
* ``fp16``: the network under ``torch.autocast(float16)`` (an ADM built with ``prior.unet.use_fp16=true``,
  guided_diffusion's fp16 weights, runs as it is and accepts no other precision); the SD2 VAE always decodes
  and encodes in float32 (diffusers' ``upcast_vae``), and the diffusion maths stay float32.
* ``auto``: ``fp16`` on a CUDA device and ``fp32`` anywhere else, so a GPU preset never makes a CPU run
  compute in half precision (a CPU without AVX512-FP16 runs fp16 tens of times slower than fp32).

The backend switches are process-wide torch settings, set for every run (a later job of a serial sweep does
not inherit an earlier job's): ``tf32`` (matmuls and cuDNN convolutions), ``cudnn_benchmark`` (cuDNN picks
the fastest algorithm per shape) and ``deterministic`` (``torch.use_deterministic_algorithms`` and the
cuBLAS workspace setting its CUDA matmuls need).
"""

from __future__ import annotations

import os
import platform

import torch

from ..errors import ConfigError

#: the values of perf.precision
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
#: perf keys that are process-wide torch switches (applied here), not knobs of the prior's network
BACKEND_KEYS = ("precision", "tf32", "cudnn_benchmark", "deterministic")
#: CUBLAS_WORKSPACE_CONFIG for deterministic cuBLAS (NVIDIA's cuBLAS docs, "Results reproducibility")
CUBLAS_WORKSPACE = ":4096:8"


def resolve_precision(precision: str | None, device) -> str:
    """perf.precision for this device: fp32, bf16 or fp16 ('auto': fp16 on CUDA, fp32 elsewhere)."""
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(f"perf.precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision == "auto":
        return "fp16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def check_perf_settings(perf: dict) -> None:
    """Perf settings that cannot hold together (ConfigError): the key of dps-map 0.2, and determinism asked
    of cuDNN's timing-based choice. config.validate calls it at start-up, perf_record again at run time."""
    if "autocast" in perf:
        raise ConfigError("perf.autocast is now perf.precision (fp32, bf16, fp16 or auto; docs/performance.md)")
    if perf.get("deterministic") and perf.get("cudnn_benchmark"):
        raise ConfigError("perf.deterministic=true contradicts perf.cudnn_benchmark=true (the benchmark picks "
                          "algorithms by timing); set one of them false")


def apply_backends(tf32: bool = False, cudnn_benchmark: bool = False, deterministic: bool = False) -> None:
    """Set torch's process-wide switches to exactly these values (every run sets all of them; checked
    together by :func:`check_perf_settings`)."""
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    torch.backends.cudnn.deterministic = bool(deterministic)
    if deterministic:
        # read by cuBLAS when it creates its workspace: before the run's first CUDA matmul
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(bool(deterministic))


def perf_record(perf: dict | None, device) -> dict:
    """What a run's perf settings mean on this device: {precision (resolved), tf32, cudnn_benchmark,
    deterministic}, the record run.json and summary.json keep."""
    perf = dict(perf or {})
    check_perf_settings(perf)
    return {"precision": resolve_precision(perf.get("precision"), device),
            **{k: bool(perf.get(k, False)) for k in BACKEND_KEYS[1:]}}


def prepare_perf(perf: dict | None, device, prior=None) -> dict:
    """Resolve the precision, apply the backend switches and configure the prior's network knobs
    (precision, channels_last, compile, grad_checkpoint) for one run. Returns :func:`perf_record`."""
    record = perf_record(perf, device)
    apply_backends(**{k: record[k] for k in BACKEND_KEYS[1:]})
    if prior is not None:
        knobs = {k: v for k, v in (perf or {}).items() if k not in BACKEND_KEYS}
        prior.configure_perf(precision=record["precision"], **knobs)
    return record


def device_name(device) -> str:
    """The GPU's name ("NVIDIA H100 80GB HBM3"), or the CPU's (platform.processor, else the machine)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return _cpu_name()
    return device.type


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_record(device) -> dict:
    """{device, device_type, device_name} of a run (run.json, summary.json; the aggregate compares them)."""
    device = torch.device(device)
    return {"device": str(device), "device_type": device.type, "device_name": device_name(device)}
