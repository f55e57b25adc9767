"""What the samplers cost beyond their network calls.

    python -m dps_map.bench                  # make bench
    python -m dps_map.bench quick=true       # make bench-quick (< 1 minute on 2 CPU cores, tiny prior)

For the prior and task of dps_map/conf/bench.yaml (tiny, sr4 by default) it measures

* the network: one forward pass, and one forward pass plus its vector-Jacobian product (the VJP a
  guided step needs), at each batch size;
* each sampler (ddpm, dps, dsg, dmap with K=3, adapter_dmap when the package has it): time per
  diffusion step, samples per second, peak memory (RSS on the CPU, max allocated on CUDA), and the
  overhead ratio = sampler time / (forward calls x forward cost + VJP calls x VJP cost), where the
  calls are the sampler's own counters (``sampler.stats``) and the costs are measured in the same
  repeat, just before. A ratio of 1 means the sampler costs exactly its network calls; what a guided
  step adds (x0_hat, the operator and the misfit inside the VJP, the DDPM update, the projection) is
  overhead;
* deepinv's DPS (``deepinv.sampling.DPS``, optional extra ``bench``) driving the same network on the
  same measurement with the same number of guided steps, and the time ratio to ours.

Every timing is repeated (``repeats``) and reported as min/median/max. The table goes to stdout and the
last line is one JSON object (``overhead_ratio``: the per-sampler median at its worst batch size).
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

from .config import CONF_DIR, resolve_device
from .config.targets import build_noise, build_operator, build_prior
from .errors import ConfigError, UserError
from .runner.timing import PeakMemory, stats3, sync, time_network

log = logging.getLogger(__name__)

QUICK = {"batch_sizes": [1, 4], "sampler_batch_sizes": [1], "steps": 4, "repeats": 3, "net_calls": 3}


def _loose(cfg: DictConfig) -> DictConfig:
    """A copy of cfg that accepts new keys (Hydra hands out struct configs)."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    return cfg


# -- samplers ---------------------------------------------------------------------------------------
def sampler_config(cfg: DictConfig, name: str) -> DictConfig:
    """dps_map/conf/sampler/<name>.yaml resolved against this config (task step sizes, prior respacing)."""
    path = CONF_DIR / "sampler" / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"no sampler config dps_map/conf/sampler/{name}.yaml")
    root = OmegaConf.merge(_loose(cfg), {"sampler": OmegaConf.load(path)})
    plain = OmegaConf.to_container(root.sampler, resolve=False)
    plain["respacing"] = str(cfg.steps)
    root.sampler = plain
    return OmegaConf.create(OmegaConf.to_container(root, resolve=True)["sampler"])


def make_sampler(cfg: DictConfig, name: str, prior, operator, y, tmp: Path):
    """(sampler, note) or (None, reason it is skipped)."""
    from .config.targets import build_sampler

    if not (CONF_DIR / "sampler" / f"{name}.yaml").exists():
        return None, f"no sampler config dps_map/conf/sampler/{name}.yaml"
    if OmegaConf.load(CONF_DIR / "sampler" / f"{name}.yaml").method.startswith("adapter"):
        try:
            from .adapters.controlnet import Adapter, adapter_checkpoint, measurement_hint

            torch.manual_seed(0)
            hint = measurement_hint(operator, y)
            adapter = Adapter(prior.model, hint_channels=hint.shape[1])
            path = tmp / f"{name}_untrained.pt"
            torch.save(adapter_checkpoint(adapter), path)
            scfg = sampler_config(cfg, name)
            return build_sampler(OmegaConf.merge(scfg, {"adapter": str(path)})), \
                "untrained (zero-initialised) adapter: timing only"
        except Exception as err:  # the adapter package is being built by another change; never fatal here
            return None, f"adapter sampler could not be set up: {type(err).__name__}: {err}"
    return build_sampler(sampler_config(cfg, name)), ""


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


def network_of(sampler, prior, operator, y):
    """The prior whose network a sampler calls (adapter samplers: the conditional prior)."""
    if hasattr(sampler, "conditional"):
        return sampler.conditional(prior).condition(operator, y)
    return prior


def run_sampler(sampler, prior, operator, noise, y, batch: int, seed: int) -> dict:
    shape = (batch, *prior.sample_shape)
    gen = torch.Generator(device=y.device).manual_seed(seed)
    sampler.sample(prior, operator, noise, y.expand(batch, *y.shape[1:]), shape, gen)
    s = sampler.stats
    return {"seconds": s["seconds"], "forward": s["forward"], "vjp": s["vjp"], "steps": s["steps"]}


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


# -- measurement batching ------------------------------------------------------------------------------
def measurement_batch_runs(cfg, prior, sampler, noise, device, sizes, repeats: int) -> dict:
    """Samples per second of one sampler when `mb` measurements (each its own operator, y and random
    stream, num_samples=1) share one sampler call, through the runner's own path (run.sample_units).
    Returns {str(mb): {seconds, samples_per_s, forward, vjp, speedup}} (speedup: vs measurement_batch 1)."""
    from .runner import MeasurementUnit, sample_units

    def units(mb, rep):
        out = []
        for j in range(mb):
            gen = torch.Generator(device=device).manual_seed(int(cfg.seed) + 1000 * j + 1)
            op = build_operator(cfg.task, prior.image_size, gen).to(device)
            x0 = torch.rand(1, *prior.sample_shape, generator=gen, device=device) * 2 - 1
            y = op.restrict(noise.sample(op(x0), gen))
            cgen = torch.Generator(device=device).manual_seed(int(cfg.seed) + 1000 * j + rep)
            out.append(MeasurementUnit(None, op, x0, y, None, None, None, prior, [0], [0], cgen))
        return out

    result = {}
    for mb in sizes:
        sample_units(prior, sampler, noise, units(mb, 0))  # warm-up at this batch
        times = []
        for rep in range(repeats):
            sample_units(prior, sampler, noise, units(mb, rep + 1))
            times.append(sampler.stats["seconds"])
        result[str(mb)] = {"seconds": stats3(times), "samples_per_s": mb / statistics.median(times),
                           "forward": sampler.stats["forward"], "vjp": sampler.stats["vjp"]}
    base = result.get("1", {}).get("samples_per_s")
    for entry in result.values():
        entry["speedup"] = entry["samples_per_s"] / base if base else None
    return result


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


def run_bench(cfg: DictConfig, out=print) -> dict:
    """Measure, print the table through `out`, and return the summary (the JSON line's content)."""
    quick = bool(cfg.get("quick", False))
    params = effective_params(cfg)
    cfg = OmegaConf.merge(_loose(cfg), {"steps": params["steps"]})  # what the sampler configs get as respacing
    threads = cfg.get("threads") or (1 if quick else os.cpu_count())
    torch.set_num_threads(int(threads))
    device = resolve_device(cfg.get("device", "auto"))
    load_before = os.getloadavg()

    prior = build_prior(cfg.prior, device)
    if prior.kind != "image":
        raise ConfigError(f"the benchmark needs an image prior with a network, not prior={cfg.prior.name}")
    perf = OmegaConf.to_container(cfg.perf, resolve=True) if cfg.get("perf") is not None else {}
    prior.configure_perf(**perf)
    gen = torch.Generator(device=device).manual_seed(int(cfg.seed))
    if getattr(prior, "class_cond", False):  # no dataset here: prior.class_label data/random take one drawn
        label = cfg.prior.get("class_label")  # class (the cost does not depend on it); an index is used as given
        prior.set_class_labels(label if isinstance(label, int) else int(torch.randint(0, 1000, (1,), generator=gen,
                                                                                      device=device)))
    size = prior.image_size
    operator = build_operator(cfg.task, size, gen).to(device)
    noise = build_noise(cfg.task)
    x0 = torch.rand(1, *prior.sample_shape, generator=gen, device=device) * 2 - 1
    y = operator.restrict(noise.sample(operator(x0), gen))
    memory = PeakMemory(device)

    net_batches = sorted(set(params["batch_sizes"]) | set(params["sampler_batch_sizes"]))
    tmp = Path(tempfile.mkdtemp(prefix="dps_map_bench_"))
    samplers, skipped = {}, {}
    for name in cfg.samplers:
        s, note = make_sampler(cfg, name, prior, operator, y, tmp)
        if s is None:
            skipped[name] = note
        else:
            samplers[name] = (s, note)

    # warm-up: every sampler once per batch size (first calls allocate and fill caches)
    nets = {}
    for name, (s, _) in list(samplers.items()):
        try:
            for b in params["sampler_batch_sizes"]:
                run_sampler(s, prior, operator, noise, y, b, int(cfg.seed))
                nets[(name, b)] = network_of(s, prior, operator, y.expand(b, *y.shape[1:]))
        except Exception as err:
            if not name.startswith("adapter"):
                raise
            skipped[name] = f"adapter sampler failed to run: {type(err).__name__}: {err}"
            del samplers[name]

    costs = {b: {"forward": [], "vjp": []} for b in net_batches}
    cond_costs: dict = {}
    runs = {(name, b): [] for name in samplers for b in params["sampler_batch_sizes"]}
    null_runs = {key: [] for key in runs}
    null = NullNetwork(prior)
    calls = int(params["net_calls"])
    for rep in range(int(params["repeats"])):
        for b in net_batches:  # the network table
            f, v = time_network(prior, b, device, calls)
            costs[b]["forward"].append(f)
            costs[b]["vjp"].append(v)
        for (name, b), results in runs.items():
            # the costs this run is compared with are measured right before it (a shared machine drifts)
            net = nets[(name, b)]
            f, v = time_network(net, b, device, calls)
            if net is not prior:  # the conditional prior's own cost (frozen UNet + adapter)
                cond_costs.setdefault((name, b), {"forward": [], "vjp": []})
                cond_costs[(name, b)]["forward"].append(f)
                cond_costs[(name, b)]["vjp"].append(v)
            memory.reset()
            r = run_sampler(samplers[name][0], prior, operator, noise, y, b, int(cfg.seed) + rep)
            r["peak_mb"] = memory.peak_mb()
            r["floor"] = r["forward"] * f + r["vjp"] * v
            results.append(r)
            if net is prior:  # the same sampler with a free network: what the sampler alone costs
                null_runs[(name, b)].append(run_sampler(samplers[name][0], null, operator, noise, y, b,
                                                        int(cfg.seed) + rep)["seconds"])

    # peer comparison: deepinv's DPS vs ours, batch 1 (or the smallest), same steps, runs alternated
    peer = {"skipped": "peer=false"}
    if cfg.get("peer", True):
        b = params["sampler_batch_sizes"][0]
        med = (statistics.median(costs[b]["forward"]), statistics.median(costs[b]["vjp"]))
        ours = samplers["dps"][0] if "dps" in samplers else build_sampler_named(cfg, "dps")
        peer = peer_dps(prior, operator, noise, y, b, int(params["steps"]), float(ours.zeta), device,
                        int(params["repeats"]), list(med), ours, int(cfg.seed))

    mbatch = {}
    if cfg.get("measurement_batches"):
        name = cfg.get("measurement_batch_sampler", "dps")
        mb_sampler = samplers[name][0] if name in samplers else build_sampler_named(cfg, name)
        mbatch = {"sampler": name, "runs": measurement_batch_runs(cfg, prior, mb_sampler, noise, device,
                                                                  [int(b) for b in cfg.measurement_batches],
                                                                  int(params["repeats"]))}

    summary = {
        "prior": cfg.prior.name, "task": cfg.task.name, "device": str(device), "threads": int(threads),
        "quick": quick, "steps": int(params["steps"]), "repeats": int(params["repeats"]),
        "perf": prior.perf if hasattr(prior, "perf") else perf, "memory_kind": memory.kind,
        "load_average": {"before": [round(v, 2) for v in load_before],
                         "after": [round(v, 2) for v in os.getloadavg()]},
        "network_ms": {str(b): {k: stats3(1000 * x for x in v) for k, v in c.items()} for b, c in costs.items()},
        "samplers": {}, "skipped": skipped, "overhead_ratio": {}, "overhead_ratio_null_network": {},
        "peer": peer, "measurement_batch": mbatch,
    }
    for (name, b), results in runs.items():
        ratios = [r["seconds"] / r["floor"] for r in results]
        entry = {"batch": b, "forward": results[0]["forward"], "vjp": results[0]["vjp"],
                 "steps": results[0]["steps"], "seconds": stats3(r["seconds"] for r in results),
                 "step_ms": stats3(1000 * r["seconds"] / r["steps"] for r in results),
                 "overhead_ratio": stats3(ratios),
                 "samples_per_s": b / statistics.median(r["seconds"] for r in results),
                 "peak_mb": max(r["peak_mb"] for r in results), "note": samplers[name][1]}
        if null_runs[(name, b)]:
            alone = min(null_runs[(name, b)])
            floor = statistics.median(r["floor"] for r in results)
            entry["null_network_ms_per_step"] = 1000 * alone / entry["steps"]
            entry["overhead_ratio_null_network"] = 1 + alone / floor
        if (name, b) in cond_costs:
            entry["network_ms"] = {k: stats3(1000 * x for x in v) for k, v in cond_costs[(name, b)].items()}
        summary["samplers"].setdefault(name, {})[str(b)] = entry
        if "overhead_ratio_null_network" in entry:
            prev = summary["overhead_ratio_null_network"].get(name, 0)
            summary["overhead_ratio_null_network"][name] = max(prev, entry["overhead_ratio_null_network"])
        worst = summary["overhead_ratio"].get(name)
        if worst is None or entry["overhead_ratio"]["median"] > worst:
            summary["overhead_ratio"][name] = entry["overhead_ratio"]["median"]
    out(format_table(summary))
    return summary


def _mmm(s: dict, fmt: str = "{:.3f}") -> str:
    return "/".join(fmt.format(s[k]) for k in ("min", "median", "max"))


def format_table(summary: dict) -> str:
    lines = [f"dps-map bench: prior={summary['prior']} task={summary['task']} device={summary['device']} "
             f"threads={summary['threads']} steps={summary['steps']} repeats={summary['repeats']} "
             f"perf={summary['perf']}",
             f"load average before/after: {summary['load_average']['before']} / {summary['load_average']['after']}"
             " (other jobs on the machine inflate and scatter every timing)", "",
             "network (ms, min/median/max)", f"{'batch':>5}  {'forward':>24}  {'forward+VJP':>24}"]
    for b, c in summary["network_ms"].items():
        lines.append(f"{b:>5}  {_mmm(c['forward'], '{:.1f}'):>24}  {_mmm(c['vjp'], '{:.1f}'):>24}")
    lines += ["", "samplers (min/median/max over repeats). overhead ratio = sampler time / (its forward and VJP "
              "calls x their cost measured just before);", "'alone' = ms/step of the same sampler on a free network "
              "(eps = w x), and 1 + alone/floor the overhead ratio it implies (insensitive to machine load)",
              f"{'sampler':<13}{'batch':>5}{'fwd':>5}{'vjp':>5}  {'ms/step':>20}  {'overhead ratio':>20}  "
              f"{'alone':>6}  {'implied':>7}  {'samples/s':>9}  {'peak MB':>8}"]
    for name, per_b in summary["samplers"].items():
        for b, e in per_b.items():
            alone = f"{e['null_network_ms_per_step']:.2f}" if "null_network_ms_per_step" in e else "n/a"
            implied = f"{e['overhead_ratio_null_network']:.3f}" if "overhead_ratio_null_network" in e else "n/a"
            lines.append(f"{name:<13}{b:>5}{e['forward']:>5}{e['vjp']:>5}  {_mmm(e['step_ms'], '{:.1f}'):>20}  "
                         f"{_mmm(e['overhead_ratio']):>20}  {alone:>6}  {implied:>7}  {e['samples_per_s']:>9.3f}  "
                         f"{e['peak_mb']:>8.0f}" + (f"  ({e['note']})" if e["note"] else ""))
    for name, why in summary["skipped"].items():
        lines.append(f"{name:<13} skipped: {why}")
    lines.append(f"peak memory: {summary['memory_kind']}")
    mb = summary.get("measurement_batch") or {}
    if mb:
        lines += ["", f"measurement_batch ({mb['sampler']}, num_samples=1: measurements with their own operator, y and "
                  "random stream stacked into one sampler call, as the runner does)",
                  f"{'measurement_batch':>17}  {'seconds/call':>20}  {'samples/s':>9}  {'speedup':>7}"]
        for b, e in mb["runs"].items():
            speed = f"{e['speedup']:.2f}" if e["speedup"] is not None else "n/a"
            lines.append(f"{b:>17}  {_mmm(e['seconds']):>20}  {e['samples_per_s']:>9.3f}  {speed:>7}")
    peer = summary["peer"]
    lines.append("")
    if "skipped" in peer:
        lines.append(f"peer (deepinv DPS): skipped: {peer['skipped']}")
    elif "time_ratio" in peer:
        lines.append(f"peer: deepinv {peer['version']} DPS, batch {peer['batch']}, {peer['steps']} guided steps: "
                     f"{_mmm(peer['seconds'])} s (forward {peer['forward']}, VJP {peer['vjp']}; overhead ratio "
                     f"{_mmm(peer['overhead_ratio'])}) vs ours {_mmm(peer['ours_seconds'])} s (forward "
                     f"{peer['ours_forward']}, VJP {peer['ours_vjp']}), alternated: "
                     f"deepinv/ours time ratio {peer['time_ratio']:.2f} of medians, {peer['time_ratio_min']:.2f} of "
                     f"minima (per network call {peer['time_ratio_per_network_call']:.2f})")
        lines.append(f"peer alignment: {peer['note']}")
    else:
        lines.append(f"peer: {peer}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="conf", config_name="bench")
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
