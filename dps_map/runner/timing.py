"""Timing and peak memory of samplers and networks, one implementation for the runner's records,
`python -m dps_map.bench` and `python -m dps_map.preflight`: device-synchronised clocks (samplers do not time
themselves: their callers wrap them in :func:`timed`), a per-step hook, the peak memory of a measurement
(CUDA's allocator, or the CPU's resident-set high-water mark), and what to do when a measurement runs out
of memory."""

from __future__ import annotations

import gc
import re
import resource
import statistics
import time
from pathlib import Path

import torch


def stats3(values) -> dict:
    """min / median / max of a series of timings."""
    values = [float(v) for v in values]
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def sync(device) -> None:
    """Wait for the device's queued work (a clock read without it times the launch, not the work)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(call, device) -> tuple:
    """(call(), its wall-clock seconds), with the device's queued work waited for before the clock starts
    and before it stops: CUDA runs kernels asynchronously, so an unsynchronised clock times their launch."""
    sync(device)
    start = time.perf_counter()
    out = call()
    sync(device)
    return out, time.perf_counter() - start


class PeakMemory:
    """Peak memory of one measurement: CUDA max_memory_allocated, or on the CPU the resident set's
    high-water mark (VmHWM, reset through /proc/self/clear_refs when the kernel allows, else the
    process-lifetime ru_maxrss, which only grows)."""

    def __init__(self, device):
        self.device = torch.device(device)
        if self.device.type == "cuda":
            self.kind = "CUDA max_memory_allocated"
        elif self._reset_hwm():
            self.kind = "peak RSS (VmHWM, reset per measurement)"
        else:
            self.kind = "process peak RSS so far (ru_maxrss; cannot be reset here)"

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return Path("/proc/self/status").exists()
        except OSError:
            return False

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind.startswith("peak RSS"):
            self._reset_hwm()

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.kind.startswith("peak RSS"):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # kB on Linux

    def peak_mb(self) -> float:
        return self.peak_bytes() / 2**20


def device_memory_bytes(device) -> int:
    """Memory of the device: the GPU's, or the machine's RAM (0 if unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1)) * 1024
    except (OSError, AttributeError):
        return 0


def is_out_of_memory(err: BaseException) -> bool:
    """An allocation that failed: torch.OutOfMemoryError (CUDA), or a RuntimeError saying so (other
    backends; the CPU allocator says "can't allocate memory")."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory(device) -> None:
    """Give back what a failed measurement left: call it after the except block that caught the error
    has ended (the exception's traceback holds the failed frames, and their tensors, until then)."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


class Enough(Exception):
    """Raised by a StepTimer once it has timed its steps (stops the sampler's loop)."""


class StepTimer:
    """A sampler hook that marks (time, forward calls, VJP calls so far) after every step and stops the chain
    with :class:`Enough` after `steps` + 1 of them; :meth:`per_step` leaves the first step (allocation, kernel
    selection) out when there is another. The calls are the ones each Step reports."""

    def __init__(self, device, steps: int):
        self.device, self.steps = torch.device(device), steps
        self.marks = [(time.perf_counter(), 0, 0)]
        self.x_prev = None  # the last step's x_{t-1}

    def __call__(self, step) -> None:
        sync(self.device)
        _, forward, vjp = self.marks[-1]
        self.marks.append((time.perf_counter(), forward + step.forward, vjp + step.vjp))
        self.x_prev = step.x_prev
        if len(self.marks) > self.steps + 1:
            raise Enough

    def diverged(self) -> bool:
        """Whether a sample of the last step seen is NaN/Inf (a NaN state stays NaN in later steps)."""
        return self.x_prev is not None and not bool(torch.isfinite(self.x_prev).all())

    def per_step(self) -> dict:
        """Median seconds, and mean forward and VJP calls, per timed step."""
        marks = self.marks
        timed = marks[2:] if len(marks) > 2 else marks[1:]
        base = marks[1] if len(marks) > 2 else marks[0]
        n = len(timed)
        seconds = [b[0] - a[0] for a, b in zip([base] + timed[:-1], timed)]
        return {"seconds_per_step": statistics.median(seconds), "forward_per_step": (timed[-1][1] - base[1]) / n,
                "vjp_per_step": (timed[-1][2] - base[2]) / n, "steps_timed": n}


# -- the network ------------------------------------------------------------------------------------
def network_calls(prior, t: torch.Tensor):
    """The two kinds of network call a sampler makes, at t's batch: (forward, vjp), each a function of no
    arguments. forward: one pass without a graph (Sampler.denoise); vjp: one pass and its vector-Jacobian
    product (Sampler.measurement_gradient). Compiled networks compile once per kind, so calling both warms
    them up."""
    batch, device = t.shape[0], t.device
    g = torch.Generator(device="cpu").manual_seed(batch)
    x = torch.randn(batch, *prior.sample_shape, generator=g).to(device)
    v = torch.randn(batch, *prior.sample_shape, generator=g).to(device)

    def forward():
        with torch.no_grad():
            return prior.predict(x, t)[0]

    def vjp():
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps = prior.predict(x_in, t)[0]
            return torch.autograd.grad(eps, x_in, v)[0]

    return forward, vjp


def time_network(prior, batch: int, device, calls: int, t_index: int = 500) -> tuple[float, float]:
    """Median seconds of one forward pass and of one forward pass + VJP at this batch size."""
    t = torch.full((batch,), t_index, dtype=torch.long, device=device)
    out = []
    for fn in network_calls(prior, t):
        fn()  # warm-up (allocator, caches, compilation)
        times = []
        for _ in range(calls):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
        out.append(statistics.median(times))
    return out[0], out[1]
