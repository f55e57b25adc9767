"""What the samplers cost beyond their network calls.

    python -m dps_map.bench                  # make bench
    python -m dps_map.bench quick=true       # make bench-quick (< 1 minute on 2 CPU cores, tiny prior)

For the prior and task of conf/bench.yaml (tiny, sr4 by default) it measures

* the network: one forward pass, and one forward pass plus its vector-Jacobian product (the VJP a
  guided step needs), at each batch size;
* each sampler (ddpm, dps, dsg, dmap with K=3, adapter_dmap when the package has it): time per
  diffusion step, samples per second, peak memory (RSS on the CPU, max allocated on CUDA), and the
  overhead ratio = sampler time / (forward calls x forward cost + VJP calls x VJP cost), where the
  calls are the sampler's own counters (``SampleResult.stats``) and the costs are measured in the same
  repeat, just before. A ratio of 1 means the sampler costs exactly its network calls; what a guided
  step adds (x0_hat, the operator and the misfit inside the VJP, the DDPM update, the projection) is
  overhead;
* deepinv's DPS (``deepinv.sampling.DPS``, optional extra ``bench``) driving the same network on the
  same measurement with the same number of guided steps, and the time ratio to ours.

Every timing is repeated (``repeats``) and reported as min/median/max. Each row of the table goes to
stdout (flushed) as soon as it is measured, and the last line is one JSON object (``overhead_ratio``: the
per-sampler median at its worst batch size). A configuration that runs out of memory (a 512x512 network
at a large batch) is a row "out of memory at batch N", a row ``{"error": "out of memory"}`` in the JSON and
an entry of its ``out_of_memory`` list; its memory is given back and the bench goes on with the next one.
The problem (operator, y) is drawn from a CPU generator, so it is the same on every device.
Timings are not asserted anywhere: a shared CPU makes them noisy, so the load average is printed too.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from .config import CONF_DIR, device_record, prepare_perf, resolve_device
from .config.targets import build_noise, build_operator, build_prior
from .errors import ConfigError, UserError
from .runner.timing import PeakMemory, free_memory, is_out_of_memory, stats3, sync, time_network, timed

log = logging.getLogger(__name__)

QUICK = {"batch_sizes": [1, 4], "sampler_batch_sizes": [1], "steps": 4, "repeats": 3, "net_calls": 3}


def _loose(cfg: DictConfig) -> DictConfig:
    """A copy of cfg that accepts new keys (Hydra hands out struct configs)."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    return cfg


# -- samplers ---------------------------------------------------------------------------------------
def sampler_config(cfg: DictConfig, name: str) -> DictConfig:
    """conf/sampler/<name>.yaml resolved against this config (task step sizes, prior respacing)."""
    path = CONF_DIR / "sampler" / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"no sampler config {path}")
    root = OmegaConf.merge(_loose(cfg), {"sampler": OmegaConf.load(path)})
    plain = OmegaConf.to_container(root.sampler, resolve=False)
    plain["respacing"] = str(cfg.steps)
    root.sampler = plain
    return OmegaConf.create(OmegaConf.to_container(root, resolve=True)["sampler"])


def make_sampler(cfg: DictConfig, name: str, prior, operator, y, tmp: Path):
    """(sampler, note, the prior it runs on) or (None, reason it is skipped, None); an adapter preset runs on the
    conditional prior of `prior` and an untrained adapter (priors.conditional.with_adapter)."""
    from .config.targets import build_sampler

    path = CONF_DIR / "sampler" / f"{name}.yaml"
    if not path.exists():
        return None, f"no sampler config {path}", None
    if OmegaConf.load(path).method.startswith("adapter"):
        try:
            from .adapters.adm_controlnet import Adapter, adapter_checkpoint, measurement_hint
            from .priors.conditional import with_adapter

            torch.manual_seed(0)
            hint = measurement_hint(operator, y)
            adapter = Adapter(prior.model, hint_channels=hint.shape[1])
            path = tmp / f"{name}_untrained.pt"
            torch.save(adapter_checkpoint(adapter), path)
            scfg = sampler_config(cfg, name)
            return build_sampler(OmegaConf.merge(scfg, {"adapter": str(path)})), \
                "untrained (zero-initialised) adapter: timing only", with_adapter(prior, path)
        except Exception as err:  # the adapter package is being built by another change; never fatal here
            return None, f"adapter sampler could not be set up: {type(err).__name__}: {err}", None
    return build_sampler(sampler_config(cfg, name)), "", prior


class NullNetwork(torch.nn.Module):
    """A stand-in prior whose network costs nothing (eps = w x): running a sampler on it times the
    sampler's own work (diffusion maths, operator, misfit, projections, bookkeeping) alone."""

    kind = "image"

    def __init__(self, prior):
        super().__init__()
        self.betas, self.learn_sigma, self.sample_shape = prior.betas, prior.learn_sigma, prior.sample_shape
        self.w = torch.nn.Parameter(torch.tensor(0.5), requires_grad=False)

    def predict(self, x_t, t):
        eps = x_t * self.w.to(x_t.dtype)
        return eps, (torch.zeros_like(x_t) if self.learn_sigma else None)


def build_sampler_named(cfg, name):
    from .config.targets import build_sampler

    return build_sampler(sampler_config(cfg, name))


def network_of(prior, operator, y):
    """The prior whose network a sampler calls (a prior with an adapter: bound to the measurement)."""
    return prior.condition(operator, y) if prior.needs_measurement else prior


def run_sampler(sampler, prior, operator, noise, y, batch: int, seed: int) -> dict:
    shape = (batch, *prior.sample_shape)
    gen = torch.Generator(device=y.device).manual_seed(seed)
    result, seconds = timed(lambda: sampler.run(prior, operator, noise, y.expand(batch, *y.shape[1:]), shape, gen),
                            y.device)
    s = result.stats
    return {"seconds": seconds, "forward": s["forward"], "vjp": s["vjp"], "steps": s["steps"]}


# -- the peer: deepinv's DPS ------------------------------------------------------------------------------
PEER_NOTE = ("aligned: the same network (wrapped as deepinv's denoiser D(x, sigma) = x - sigma eps), operator, "
             "measurement, batch, number of guided steps (DPS(num_steps=steps+1) "
             "gives `steps` ancestral transitions), float32 solver state. NOT aligned exactly: deepinv discretises its "
             "continuous VP SDE (beta 0.1..20, the continuous limit of ADM's linear schedule) on a uniform "
             "time grid, so its noise levels differ from ADM's respaced steps (each sigma is mapped to the "
             "nearest training step), and its guidance step differs in detail; the samples are not comparable, "
             "the cost per step is. Ratio per network call compares the two loops' overheads directly.")


def peer_dps(prior, operator, noise, y, batch: int, steps: int, zeta: float, device, repeats: int, costs: list,
             ours, seed: int):
    """deepinv.sampling.DPS on the same network. Returns a result dict, or {'skipped': reason}."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import deepinv
            from deepinv.sampling import DPS
    except Exception as err:
        return {"skipped": f"deepinv is not installed ({type(err).__name__}); pip install -e '.[bench]'"}
    counter = {"forward": 0, "vjp": 0}
    from .diffusion import alphas_cumprod

    abar = torch.as_tensor(alphas_cumprod(prior.betas), dtype=torch.float32, device=device)
    log_abar = abar.log()

    class TinyDenoiser(deepinv.models.Denoiser):
        """deepinv's denoiser contract D(x, sigma) (x = x_t / sqrt(abar), sigma^2 = (1 - abar) / abar)
        from our eps network: D = x - sigma eps(sqrt(abar) x, t(sigma))."""

        def forward(self, x, sigma, *args, **kwargs):
            b = x.shape[0]
            sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(b)
            a = 1 / (1 + sigma**2)
            t = (log_abar[None, :] - a.log()[:, None]).abs().argmin(dim=1)
            eps = prior.eps(x * a.sqrt().view(-1, 1, 1, 1), t)
            counter["vjp" if (torch.is_grad_enabled() and x.requires_grad) else "forward"] += 1
            return x - sigma.view(-1, 1, 1, 1) * eps

    physics = deepinv.physics.Physics(A=lambda x: operator(x))
    model = DPS(TinyDenoiser(), num_steps=steps + 1, weight=zeta, device=device, dtype=torch.float32,
                minus_one_one=False, rng=torch.Generator(device=device).manual_seed(0))
    yb = y.expand(batch, *y.shape[1:]).contiguous()
    shape = (batch, *prior.sample_shape)
    times, ours_times, ours_run = [], [], {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(yb, physics, x_init=shape, seed=0)  # warm-up
        for rep in range(repeats):  # alternate the two, so both see the same machine
            ours_run = run_sampler(ours, prior, operator, noise, y, batch, seed + rep)
            ours_times.append(ours_run["seconds"])
            counter.update(forward=0, vjp=0)
            sync(device)
            start = time.perf_counter()
            model(yb, physics, x_init=shape, seed=rep)
            sync(device)
            times.append(time.perf_counter() - start)
    fwd_cost, vjp_cost = costs
    floor = counter["forward"] * fwd_cost + counter["vjp"] * vjp_cost
    theirs, mine = statistics.median(times), statistics.median(ours_times)
    our_calls = ours_run["forward"] + ours_run["vjp"]
    return {"version": deepinv.__version__, "batch": batch, "steps": steps, "seconds": stats3(times),
            "forward": counter["forward"], "vjp": counter["vjp"], "overhead_ratio": stats3(t / floor for t in times),
            "ours_seconds": stats3(ours_times), "ours_forward": ours_run["forward"], "ours_vjp": ours_run["vjp"],
            "time_ratio": theirs / mine,
            "time_ratio_min": min(times) / min(ours_times),  # best-of-n: the least disturbed by other jobs
            "time_ratio_per_network_call": (theirs / max(1, counter["forward"] + counter["vjp"]))
            / (mine / max(1, our_calls)),
            "note": PEER_NOTE}


# -- the problem -------------------------------------------------------------------------------------
def draw_problem(cfg, prior, noise, gen: torch.Generator, device):
    """(operator, y) of one measurement drawn from the CPU generator `gen`, so the problem (mask, kernel,
    noise) is the same on every device, as in dps_map.runner.execute.measure; then moved to `device`."""
    operator = build_operator(cfg.task, prior.image_size, gen)
    x0 = torch.rand(1, *prior.sample_shape, generator=gen) * 2 - 1
    y = operator.restrict(noise.sample(operator(x0), gen))
    return operator.to(device), y.to(device)


# -- out of memory --------------------------------------------------------------------------------------
def guarded(measure, device):
    """(measure(), None), or (None, the first line of the error) when it runs out of memory; any other
    error propagates. The memory the failed measurement held is given back before returning."""
    try:
        return measure(), None
    except Exception as err:  # noqa: BLE001 - only out-of-memory is caught; the rest is raised again
        if not is_out_of_memory(err):
            raise
        message = (str(err).splitlines() or [type(err).__name__])[0]
    free_memory(device)  # after the except block: its traceback no longer holds the failed tensors
    return None, message


def oom_entry(batch: int, message: str) -> dict:
    return {"batch": batch, "error": "out of memory", "message": message}


# -- measurement batching ------------------------------------------------------------------------------
def measurement_batch_run(cfg, prior, sampler, noise, device, mb: int, repeats: int) -> dict:
    """Seconds per sampler call when `mb` measurements (each its own operator, y and random stream,
    num_samples=1) share one sampler call, through the runner's own path (runner.sample_units):
    {seconds, samples_per_s, forward, vjp}."""
    from .runner import MeasurementUnit, sample_units

    def units(rep):
        out = []
        for j in range(mb):
            op, y = draw_problem(cfg, prior, noise, torch.Generator().manual_seed(int(cfg.seed) + 1000 * j + 1),
                                 device)
            cgen = torch.Generator(device=device).manual_seed(int(cfg.seed) + 1000 * j + rep)
            out.append(MeasurementUnit(None, op, None, y, None, None, None, prior, [0], [0], cgen))
        return out

    sample_units(prior, sampler, noise, units(0))  # warm-up at this batch
    times = []
    for rep in range(repeats):
        sampled = sample_units(prior, sampler, noise, units(rep + 1))
        times.append(sampled.seconds)
    return {"batch": mb, "seconds": stats3(times), "samples_per_s": mb / statistics.median(times),
            "forward": sampled.result.stats["forward"], "vjp": sampled.result.stats["vjp"]}


# -- the whole benchmark ------------------------------------------------------------------------------
def effective_params(cfg) -> dict:
    """batch sizes, steps, repeats and calls: the config's, or with quick=true the QUICK ones for every
    key not set on the command line (cfg._explicit)."""
    params = {k: cfg.get(k) for k in ("batch_sizes", "steps", "repeats", "net_calls")}
    params["sampler_batch_sizes"] = cfg.get("sampler_batch_sizes") or params["batch_sizes"]
    if cfg.get("quick", False):
        given = set(cfg.get("_explicit") or [])
        params.update({k: v for k, v in QUICK.items() if k not in given})
        if "batch_sizes" in given and "sampler_batch_sizes" not in given:
            params["sampler_batch_sizes"] = params["batch_sizes"]
    params = {k: (list(v) if k.endswith("sizes") else int(v)) for k, v in params.items()}
    if min(params["repeats"], params["net_calls"], params["steps"], *params["batch_sizes"]) < 1:
        raise ConfigError(f"bench: steps, repeats, net_calls and batch sizes must be >= 1, got {params}")
    return params


def measure_network(prior, batch: int, device, calls: int, repeats: int) -> dict:
    """The network table's row: ms of one forward and of one forward + VJP, min/median/max over repeats."""
    costs = [time_network(prior, batch, device, calls) for _ in range(repeats)]
    return {"forward": stats3(1000 * f for f, _ in costs), "vjp": stats3(1000 * v for _, v in costs)}


def measure_sampler(sampler, note: str, prior, null, operator, noise, y, batch: int, device, calls: int,
                    repeats: int, seed: int, memory: PeakMemory) -> dict:
    """One sampler at one batch size: a warm-up run, then `repeats` runs, each right after the cost of its
    network's calls is measured (a shared machine drifts), and the same run on the free network."""
    net = network_of(prior, operator, y.expand(batch, *y.shape[1:]))
    run_sampler(sampler, net, operator, noise, y, batch, seed)  # warm-up: allocation, caches
    results, null_times, cond = [], [], {"forward": [], "vjp": []}
    for rep in range(repeats):
        f, v = time_network(net, batch, device, calls)
        if net is not prior:  # the conditional prior's own cost (frozen UNet + adapter)
            cond["forward"].append(f)
            cond["vjp"].append(v)
        memory.reset()
        r = run_sampler(sampler, net, operator, noise, y, batch, seed + rep)
        r["peak_mb"] = memory.peak_mb()
        r["floor"] = r["forward"] * f + r["vjp"] * v
        results.append(r)
        if net is prior:  # the same sampler with a free network: what the sampler alone costs
            null_times.append(run_sampler(sampler, null, operator, noise, y, batch, seed + rep)["seconds"])
    entry = {"batch": batch, "forward": results[0]["forward"], "vjp": results[0]["vjp"],
             "steps": results[0]["steps"], "seconds": stats3(r["seconds"] for r in results),
             "step_ms": stats3(1000 * r["seconds"] / r["steps"] for r in results),
             "overhead_ratio": stats3(r["seconds"] / r["floor"] for r in results),
             "samples_per_s": batch / statistics.median(r["seconds"] for r in results),
             "peak_mb": max(r["peak_mb"] for r in results), "note": note}
    if null_times:
        alone = min(null_times)
        entry["null_network_ms_per_step"] = 1000 * alone / entry["steps"]
        entry["overhead_ratio_null_network"] = 1 + alone / statistics.median(r["floor"] for r in results)
    if cond["forward"]:
        entry["network_ms"] = {k: stats3(1000 * x for x in v) for k, v in cond.items()}
    return entry


def _print_now(line: str) -> None:
    print(line, flush=True)  # each row as it is measured: a later configuration may never finish


def run_bench(cfg: DictConfig, out=_print_now) -> dict:
    """Measure and print each row of the table through `out` as soon as it is measured; return the summary
    (the JSON line's content). A configuration that runs out of memory is a row saying so (in the table and
    in the summary); the bench goes on with the next one."""
    quick = bool(cfg.get("quick", False))
    params = effective_params(cfg)
    cfg = OmegaConf.merge(_loose(cfg), {"steps": params["steps"]})  # what the sampler configs get as respacing
    threads = cfg.get("threads") or (1 if quick else os.cpu_count())
    torch.set_num_threads(int(threads))
    device = resolve_device(cfg.get("device", "auto"))
    load_before = os.getloadavg()
    seed, repeats, calls = int(cfg.seed), int(params["repeats"]), int(params["net_calls"])

    prior = build_prior(cfg.prior, device)
    if prior.kind != "image":
        raise ConfigError(f"the benchmark needs an image prior with a network, not prior={cfg.prior.name}")
    perf = OmegaConf.to_container(cfg.perf, resolve=True) if cfg.get("perf") is not None else {}
    perf_record = prepare_perf(perf, device, prior)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same problem on every device
    if getattr(prior, "class_cond", False):  # no dataset here: prior.class_label data/random take one drawn
        label = cfg.prior.get("class_label")  # class (the cost does not depend on it); an index is used as given
        prior.set_class_labels(label if isinstance(label, int) else int(torch.randint(0, 1000, (1,), generator=gen)))
    noise = build_noise(cfg.task)
    operator, y = draw_problem(cfg, prior, noise, gen, device)
    memory = PeakMemory(device)

    summary = {
        "prior": cfg.prior.name, "task": cfg.task.name, **device_record(device), "threads": int(threads),
        "quick": quick, "steps": int(params["steps"]), "repeats": repeats,
        "perf": {**perf_record, **getattr(prior, "perf", {})}, "memory_kind": memory.kind,
        "load_average": {"before": [round(v, 2) for v in load_before], "after": None},
        "network_ms": {}, "samplers": {}, "skipped": {}, "overhead_ratio": {}, "overhead_ratio_null_network": {},
        "peer": {"skipped": "peer=false"}, "measurement_batch": {}, "out_of_memory": [],
    }
    for line in header_lines(summary):
        out(line)

    net_batches = sorted(set(params["batch_sizes"]) | set(params["sampler_batch_sizes"]))
    for b in net_batches:
        entry, oom = guarded(lambda: measure_network(prior, b, device, calls, repeats), device)
        if oom:
            entry = oom_entry(b, oom)
            summary["out_of_memory"].append({"part": "network", "batch": b})
        summary["network_ms"][str(b)] = entry
        out(network_row(b, entry))

    out("")
    for line in SAMPLER_HEADER:
        out(line)
    tmp = Path(tempfile.mkdtemp(prefix="dps_map_bench_"))
    null = NullNetwork(prior)
    samplers = {}
    for name in cfg.samplers:
        sampler, note, sampler_prior = make_sampler(cfg, name, prior, operator, y, tmp)
        if sampler is None:
            summary["skipped"][name] = note
            out(skipped_row(name, note))
            continue
        samplers[name] = sampler
        for b in params["sampler_batch_sizes"]:
            try:
                entry, oom = guarded(lambda: measure_sampler(sampler, note, sampler_prior, null, operator, noise, y, b, device,
                                                             calls, repeats, seed, memory), device)
            except Exception as err:  # noqa: BLE001 - an adapter sampler is optional here; any other error is fatal
                if not name.startswith("adapter"):
                    raise
                summary["skipped"][name] = f"adapter sampler failed to run at batch {b}: {type(err).__name__}: {err}"
                out(skipped_row(name, summary["skipped"][name]))
                break
            if oom:
                entry = oom_entry(b, oom)
                summary["out_of_memory"].append({"part": "sampler", "name": name, "batch": b})
            summary["samplers"].setdefault(name, {})[str(b)] = entry
            out(sampler_row(name, b, entry))
            if "overhead_ratio_null_network" in entry:
                prev = summary["overhead_ratio_null_network"].get(name, 0)
                summary["overhead_ratio_null_network"][name] = max(prev, entry["overhead_ratio_null_network"])
            if "overhead_ratio" in entry:  # the headline: the median at the worst batch size
                worst = summary["overhead_ratio"].get(name)
                if worst is None or entry["overhead_ratio"]["median"] > worst:
                    summary["overhead_ratio"][name] = entry["overhead_ratio"]["median"]
    out(f"peak memory: {memory.kind}")

    if cfg.get("measurement_batches"):
        name = cfg.get("measurement_batch_sampler", "dps")
        mb_sampler = samplers.get(name) or build_sampler_named(cfg, name)
        summary["measurement_batch"] = mbatch = {"sampler": name, "runs": {}}
        out("")
        for line in measurement_batch_header(name):
            out(line)
        for mb in sorted(int(b) for b in cfg.measurement_batches):
            entry, oom = guarded(lambda: measurement_batch_run(cfg, prior, mb_sampler, noise, device, mb, repeats),
                                 device)
            if oom:
                entry = oom_entry(mb, oom)
                summary["out_of_memory"].append({"part": "measurement_batch", "batch": mb})
            mbatch["runs"][str(mb)] = entry
            if "error" not in entry:  # speed-up against one measurement per call, when that one was measured
                base = mbatch["runs"].get("1", {}).get("samples_per_s")
                entry["speedup"] = entry["samples_per_s"] / base if base else None
            out(measurement_batch_row(mb, entry))

    # peer comparison: deepinv's DPS vs ours, batch 1 (or the smallest), same steps, runs alternated
    if cfg.get("peer", True):
        b = params["sampler_batch_sizes"][0]
        net = summary["network_ms"][str(b)]
        if "error" in net:
            summary["peer"] = {"skipped": f"the network ran out of memory at batch {b}"}
        else:
            med = [net["forward"]["median"] / 1000, net["vjp"]["median"] / 1000]
            ours = samplers["dps"] if "dps" in samplers else build_sampler_named(cfg, "dps")
            peer, oom = guarded(lambda: peer_dps(prior, operator, noise, y, b, int(params["steps"]), float(ours.zeta),
                                                 device, repeats, med, ours, seed), device)
            if oom:
                peer = {"skipped": f"out of memory at batch {b}: {oom}"}
                summary["out_of_memory"].append({"part": "peer", "batch": b})
            summary["peer"] = peer
    out("")
    for line in peer_lines(summary["peer"]):
        out(line)
    summary["load_average"]["after"] = [round(v, 2) for v in os.getloadavg()]
    out(f"load average after: {summary['load_average']['after']}")
    return summary


# -- the table, row by row ------------------------------------------------------------------------------
def _mmm(s: dict, fmt: str = "{:.3f}") -> str:
    return "/".join(fmt.format(s[k]) for k in ("min", "median", "max"))


def header_lines(summary: dict) -> list[str]:
    return [f"dps-map bench: prior={summary['prior']} task={summary['task']} device={summary['device']} "
            f"({summary['device_name']}) threads={summary['threads']} steps={summary['steps']} "
            f"repeats={summary['repeats']} perf={summary['perf']}",
            f"load average before: {summary['load_average']['before']} (other jobs on the machine inflate and "
            "scatter every timing)", "",
            "network (ms, min/median/max)", f"{'batch':>5}  {'forward':>24}  {'forward+VJP':>24}"]


def _oom(batch, entry: dict) -> str:
    return f"out of memory at batch {batch} ({entry['message']})"


def network_row(batch: int, entry: dict) -> str:
    if "error" in entry:
        return f"{batch:>5}  {_oom(batch, entry)}"
    return f"{batch:>5}  {_mmm(entry['forward'], '{:.1f}'):>24}  {_mmm(entry['vjp'], '{:.1f}'):>24}"


SAMPLER_HEADER = [
    "samplers (min/median/max over repeats). overhead ratio = sampler time / (its forward and VJP calls x their "
    "cost measured just before);",
    "'alone' = ms/step of the same sampler on a free network (eps = w x), and 1 + alone/floor the overhead ratio "
    "it implies (insensitive to machine load)",
    f"{'sampler':<13}{'batch':>5}{'fwd':>5}{'vjp':>5}  {'ms/step':>20}  {'overhead ratio':>20}  "
    f"{'alone':>6}  {'implied':>7}  {'samples/s':>9}  {'peak MB':>8}"]


def sampler_row(name: str, batch: int, e: dict) -> str:
    if "error" in e:
        return f"{name:<13}{batch:>5}  {_oom(batch, e)}"
    alone = f"{e['null_network_ms_per_step']:.2f}" if "null_network_ms_per_step" in e else "n/a"
    implied = f"{e['overhead_ratio_null_network']:.3f}" if "overhead_ratio_null_network" in e else "n/a"
    return (f"{name:<13}{batch:>5}{e['forward']:>5}{e['vjp']:>5}  {_mmm(e['step_ms'], '{:.1f}'):>20}  "
            f"{_mmm(e['overhead_ratio']):>20}  {alone:>6}  {implied:>7}  {e['samples_per_s']:>9.3f}  "
            f"{e['peak_mb']:>8.0f}" + (f"  ({e['note']})" if e["note"] else ""))


def skipped_row(name: str, why: str) -> str:
    return f"{name:<13} skipped: {why}"


def measurement_batch_header(sampler: str) -> list[str]:
    return [f"measurement_batch ({sampler}, num_samples=1: measurements with their own operator, y and random "
            "stream stacked into one sampler call, as the runner does)",
            f"{'measurement_batch':>17}  {'seconds/call':>20}  {'samples/s':>9}  {'speedup':>7}"]


def measurement_batch_row(mb: int, e: dict) -> str:
    if "error" in e:
        return f"{mb:>17}  {_oom(mb, e)}"
    speed = f"{e['speedup']:.2f}" if e["speedup"] is not None else "n/a"
    return f"{mb:>17}  {_mmm(e['seconds']):>20}  {e['samples_per_s']:>9.3f}  {speed:>7}"


def peer_lines(peer: dict) -> list[str]:
    if "skipped" in peer:
        return [f"peer (deepinv DPS): skipped: {peer['skipped']}"]
    if "time_ratio" not in peer:
        return [f"peer: {peer}"]
    return [f"peer: deepinv {peer['version']} DPS, batch {peer['batch']}, {peer['steps']} guided steps: "
            f"{_mmm(peer['seconds'])} s (forward {peer['forward']}, VJP {peer['vjp']}; overhead ratio "
            f"{_mmm(peer['overhead_ratio'])}) vs ours {_mmm(peer['ours_seconds'])} s (forward "
            f"{peer['ours_forward']}, VJP {peer['ours_vjp']}), alternated: "
            f"deepinv/ours time ratio {peer['time_ratio']:.2f} of medians, {peer['time_ratio_min']:.2f} of "
            f"minima (per network call {peer['time_ratio_per_network_call']:.2f})",
            f"peer alignment: {peer['note']}"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="bench")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    explicit = [o.split("=", 1)[0].lstrip("+") for o in HydraConfig.get().overrides.task]
    OmegaConf.set_struct(cfg, False)
    cfg._explicit = explicit  # quick=true does not override what the command line sets
    logging.getLogger("dps_map.priors.adm").setLevel(logging.ERROR)  # random_init warnings are expected here
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        summary = run_bench(cfg)
    except UserError as err:
        print(f"dps-map bench: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    line = json.dumps(summary, sort_keys=True)
    if cfg.get("json_out"):
        Path(cfg.json_out).write_text(line + "\n")
    print(line)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
