"""One run end to end: measure -> sample -> evaluate -> write, into a run directory it owns.

Writes (docs/outputs.md): recon/<id>_<k>.png, input/<id>.png, label/<id>.png, grids/<id>.png,
metrics.jsonl (one line per sample), summary.json and run.json; Gaussian-mixture runs write problem.npz and
samples.npy instead of images. Writes are atomic, and a rerun of the same config skips samples already on
disk.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ..config import config_digest, device_record, perf_record, resolve_device, resolved, validate
from ..config.targets import adapter_of, build_noise, build_operator, build_prior, build_sampler
from ..data import demo_crops, demo_photos, folder_items, shard
from ..errors import ConfigError
from ..io import (
    absolute_path,
    append_jsonl,
    atomic_save_npy,
    atomic_save_npz,
    atomic_write_json,
    remove_temp_files,
    save_png,
)
from ..operators import MatrixOperator, StackedOperator
from ..priors.gmm import find_multimodal_problem
from ..samplers.base import GeneratorStack, SampleResult
from ..signals import stop_on_signals, write_section
from .lock import run_lock
from .loggers import make_logger
from .rundir import claim_run_dir, class_label_policy, run_weights
from .scoring import Evaluator
from .summary import preprocessing, read_records, save_grid, summarize_images
from .timing import timed

log = logging.getLogger(__name__)

def item_seed(seed: int, key: str) -> int:
    """A 63-bit seed for one measurement (or one chunk of samples), independent of sharding and order."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "little") >> 1


def generator(device: torch.device, seed: int) -> torch.Generator:
    """The sampler's stream of one chunk of samples, on the run's device (its draws never leave it)."""
    return torch.Generator(device=device).manual_seed(seed)


def run(cfg: DictConfig, out_dir=None, validated: bool = False) -> dict:
    """Run one config end to end and return its summary (also written to summary.json). `validated`: the
    caller has run config.validate on this config already (the command line checks every job first).

    SIGINT/SIGTERM/SIGUSR2 stop the run between writes (raising signals.Interrupted): every sample whose record
    is in metrics.jsonl is complete on disk, no temp file is left, and a rerun resumes from there."""
    with stop_on_signals():
        return _run(cfg, out_dir, validated)


def checked_sampler(cfg: DictConfig):
    """Every start-up check of a config, before any model is built or file written; returns the sampler
    (cheap to build, and the last judge of its own values). Raises ConfigError (one line)."""
    validate(cfg)
    return make_sampler(cfg)


def _run(cfg: DictConfig, out_dir=None, validated: bool = False) -> dict:
    # the sampler is cheap, so first: a bad value stops the run before anything is written
    sampler = make_sampler(cfg) if validated else checked_sampler(cfg)
    if out_dir is None:
        from hydra.core.hydra_config import HydraConfig

        out_dir = HydraConfig.get().runtime.output_dir
    out = Path(out_dir)
    with run_lock(out):  # one writer per run directory (runner/lock.py)
        return _run_locked(cfg, sampler, out)


def _run_locked(cfg: DictConfig, sampler, out: Path) -> dict:
    if remove_temp_files(out):
        log.warning("removed temp files a killed run left in %s", out)
    digest = config_digest(cfg)
    device = resolve_device(cfg.device)
    compute = {**device_record(device), **perf_record(perf_settings(cfg), device)}
    policy = class_label_policy(cfg.prior)  # the class a class-conditional prior is told (None: unconditional)
    claim_run_dir(out, digest, cfg.get("overwrite", False), run_weights(cfg), compute, policy)
    evaluator = Evaluator(cfg.metrics, cfg.paths, device) if cfg.data.kind != "gmm" else None  # checks weights
    prior = make_prior(cfg, device)
    noise = build_noise(cfg.task)
    logger = make_logger(cfg, out)
    try:
        if prior.kind == "vector":
            summary = run_gmm(cfg, prior, sampler, noise, out, device, logger)
        else:
            summary = run_images(cfg, prior, sampler, noise, out, device, logger, evaluator)
        summary.update(task=cfg.task.name, prior=cfg.prior.name, sampler=cfg.sampler.name, seed=cfg.seed,
                       digest=digest, class_label_policy=policy, **compute, config=resolved(cfg).get("sampler"))
        atomic_write_json(out / "summary.json", summary)
        logger.log_summary(summary)
    finally:
        logger.finish()
    return summary


def make_sampler(cfg):
    """The sampler of a config (a bad value: ConfigError naming the sampler)."""
    try:
        return build_sampler(cfg.sampler)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"sampler={cfg.sampler.name}: {err}") from err


def perf_settings(cfg) -> dict:
    return OmegaConf.to_container(cfg.perf, resolve=True) if cfg.get("perf") is not None else {}


def make_prior(cfg, device):
    """The prior of a config on `device`, in the run's precision with the backend switches and perf knobs
    applied (dps_map.config.prepare_perf; docs/performance.md "Precision" and "GPU knobs"); with an adapter
    (prior.adapter, or an adapter preset's sampler.adapter: config.targets.adapter_of) the conditional prior,
    which the runner binds to each measurement (``condition(operator, y)``)."""
    return build_prior(cfg.prior, device, adapter=adapter_of(cfg.prior, cfg.sampler) or False, perf=perf_settings(cfg))


# -- images -----------------------------------------------------------------------------------------
def load_items(data_cfg, size: int):
    if data_cfg.kind == "demo":
        items = demo_crops(size, data_cfg.get("per_photo", 4), photos=demo_photos(data_cfg))
    elif data_cfg.kind == "folder":
        items = folder_items(absolute_path(data_cfg.path), size, data_cfg.get("max_images"), data_cfg.get("labels"))
    else:
        raise ConfigError(f"data={data_cfg.name}: kind '{data_cfg.kind}' is not an image dataset")
    return shard(items, data_cfg.get("num_shards", 1), data_cfg.get("shard", 0))


def sample_chunks(num_samples: int, batch_size: int | None):
    """Sample indices in the batches they are drawn in (the chunking fixes the random streams)."""
    step = batch_size or num_samples
    return [list(range(s, min(num_samples, s + step))) for s in range(0, num_samples, step)]


def draw_measurement(cfg, item, size: int, noise):
    """The problem of one item, drawn on the CPU from the stream seeded by (seed, id) whatever the run's
    device: its operator (mask, kernel), x0 of shape (1, C, S, S) and y = restrict(A x0 + noise). Every device
    solves exactly the problems a CPU run solves (the same y, bit for bit). Returns (the CPU generator,
    operator, x0, y), all on the CPU."""
    gen = torch.Generator().manual_seed(item_seed(cfg.seed, item.id))
    operator = build_operator(cfg.task, size, gen)
    x0 = item.image[None]
    return gen, operator, x0, operator.restrict(noise.sample(operator(x0), gen))


def measure(cfg, item, size: int, noise, device):
    """:func:`draw_measurement` on the CPU, then moved to `device` (:func:`to_device`)."""
    return to_device(draw_measurement(cfg, item, size, noise), device)


def to_device(measurement, device):
    """(generator, operator, x0, y) with the operator, x0 and y on `device`; the generator, whose stream also
    draws a random class label, stays on the CPU."""
    gen, operator, x0, y = measurement
    return gen, operator.to(device), x0.to(device), y.to(device)


def bind_class_label(cfg, prior, item, gen) -> int | None:
    """Set the class label of a class-conditional prior for one measurement and return it (None for an
    unconditional prior): the image's own label (prior.class_label=data; checked at start-up), one drawn
    from the measurement's stream ('random'), or the configured index."""
    if not getattr(prior, "class_cond", False):
        return None
    choice = cfg.prior.get("class_label")
    if choice == "data":
        if item.label is None:  # validate() checked the listing; a file skipped as unreadable can get here
            raise ConfigError(f"prior.class_label=data: image '{item.id}' has no class label")
        label = item.label
    elif choice == "random":
        label = int(torch.randint(0, 1000, (1,), generator=gen, device=gen.device))
    else:
        label = int(choice)
    prior.set_class_labels(label)
    return label


def check_measurement_batch(cfg, prior, sampler) -> int:
    """measurement_batch (docs/performance.md "Measurement batching"), checked before any sample is drawn: a prior bound
    to one measurement (`condition(operator, y)`: the SR reference models, a prior with an adapter) cannot stack
    measurements with different parameters."""
    mb = int(cfg.get("measurement_batch", 1) or 1)
    if mb > 1 and prior.needs_measurement:
        adapter = " with its adapter" if getattr(prior, "adapter_path", None) else ""
        raise ConfigError(f"measurement_batch={mb}: sampler={cfg.sampler.name} on prior={cfg.prior.name}{adapter} is "
                          "conditioned on one measurement at a time; use measurement_batch=1")
    return mb


class MeasurementUnit:
    """One sampler chunk of one measurement, waiting to be stacked with others (measurement_batch)."""

    def __init__(self, item, operator, x0, y, label, naive, base, model, ks, todo, cgen):
        self.item, self.operator, self.x0, self.y, self.label = item, operator, x0, y, label
        self.naive, self.base, self.model, self.ks, self.todo, self.cgen = naive, base, model, ks, todo, cgen


@dataclass(frozen=True)
class Sampled:
    """One sampler call of the runner (sample_units): the images (a latent prior's latents decoded), the
    sampler's result (rows in the order the units were stacked) and the call's wall-clock seconds."""

    x: torch.Tensor
    result: SampleResult
    seconds: float


def sample_units(prior, sampler, noise, units: list, hooks=None) -> Sampled:
    """One sampler call for the stacked chunks of `units`: rows of unit j see its own operator, y, class
    label and random stream (operators.StackedOperator, samplers.base.GeneratorStack), so every row equals
    what the unit gives alone; a single unit runs without the wrappers. `hooks` go to the sampler (preflight
    times its steps). The call is timed here (timing.timed), the decoding is not."""
    if len(units) == 1:
        u = units[0]
        if u.label is not None:
            prior.set_class_labels(u.label)
        operator, gen = u.operator, u.cgen
        y = u.y.expand(len(u.ks), *u.y.shape[1:])
    else:
        if units[0].label is not None:  # one label per batch row (ADM's labels tensor)
            prior.set_class_labels(torch.tensor([u.label for u in units for _ in u.ks]))
        operator = StackedOperator([(u.operator, len(u.ks)) for u in units])
        gen = GeneratorStack([(u.cgen, len(u.ks)) for u in units])
        y = torch.cat([u.y.expand(len(u.ks), *u.y.shape[1:]) for u in units])
    # latent priors: the samplers see A(D(z)) and the runner decodes z (identity otherwise)
    try:
        result, seconds = timed(lambda: sampler.run(units[0].model, prior.sampling_operator(operator), noise, y,
                                                    (y.shape[0], *prior.sample_shape), gen, hooks=hooks), y.device)
    except RuntimeError as err:
        if "does not have a deterministic implementation" not in str(err):
            raise
        raise ConfigError(f"perf.deterministic=true: {str(err).splitlines()[0]} (this prior or operator cannot run "
                          "deterministically on this device; set perf.deterministic=false)") from err
    with torch.no_grad():
        x = prior.decode(result.x0)
    return Sampled(x=x, result=result, seconds=seconds)


def run_images(cfg, prior, sampler, noise, out: Path, device, logger, evaluator) -> dict:
    size = prior.image_size
    mbatch = check_measurement_batch(cfg, prior, sampler)
    items = load_items(cfg.data, size)
    metrics_path = out / "metrics.jsonl"
    records = read_records(metrics_path, evaluator.extra)
    check_one_shard(out, records, items)
    done = {(r["id"], r["k"]) for r in records
            if r.get("failed") or (out / "recon" / f"{r['id']}_{r['k']}.png").exists()}
    chunks = sample_chunks(cfg.num_samples, cfg.get("batch_size"))
    max_rows = cfg.get("batch_size") or float("inf")  # batch_size caps the rows of stacked measurements too
    n_new, pending = 0, []
    bar = tqdm(items, desc=f"{cfg.task.name}/{cfg.sampler.name}", disable=not cfg.progress, unit="meas")
    for item in bar:
        gen, operator, x0, y = measure(cfg, item, size, noise, device)
        label = bind_class_label(cfg, prior, item, gen)
        model = prior.condition(operator, y) if prior.needs_measurement else prior  # e.g. tiny_sr4_reference
        naive = operator.naive(y)
        base = evaluator.per_sample(naive, x0)
        for sub, img in (("label", x0[0]), ("input", y[0])):
            if not (out / sub / f"{item.id}.png").exists():
                save_png(img, out / sub / f"{item.id}.png")
        for ks in chunks:
            todo = [k for k in ks if (item.id, k) not in done]
            if not todo:
                continue
            cgen = generator(device, item_seed(cfg.seed, f"{item.id}/samples{ks[0]}"))
            if pending and sum(len(u.ks) for u in pending) + len(ks) > max_rows:
                n_new += write_units(cfg, prior, sampler, noise, pending, out, logger, evaluator, done)
                pending = []
            pending.append(MeasurementUnit(item, operator, x0, y, label, naive, base, model, ks, todo, cgen))
            if len(pending) == mbatch:
                n_new += write_units(cfg, prior, sampler, noise, pending, out, logger, evaluator, done)
                pending = []
    if pending:
        n_new += write_units(cfg, prior, sampler, noise, pending, out, logger, evaluator, done)
    summary = summarize_images(read_records(metrics_path, evaluator.extra), {it.id for it in items}, evaluator.extra)
    summary["metrics"].update(evaluator.per_run(out, [it.id for it in items], size))
    summary["n_new_samples"] = n_new
    summary["n_expected"] = len(items) * cfg.num_samples  # records of a finished run (aggregate checks it)
    summary["image_ids"] = sorted(it.id for it in items)  # the exact images, so a table can be redone on them
    summary["preprocessing"] = preprocessing(cfg.data, items, size)
    return summary


def check_one_shard(out: Path, records: list[dict], items) -> None:
    """A run directory holds one shard: records of images this run does not have come from another data.shard
    or data.num_shards of the same config (the digest leaves both out), run into this directory. Resuming would
    give a summary of this shard only beside the other's samples, and the aggregate counts a directory as one
    shard: refused (ConfigError) before anything is written."""
    ids = {it.id for it in items}
    foreign = sorted({r["id"] for r in records} - ids)
    if foreign:
        raise ConfigError(f"run dir '{out}' holds samples of {len(foreign)} image(s) this run does not have (e.g. "
                          f"'{foreign[0]}'): another data.shard/data.num_shards was run into it. Give each shard its "
                          "own hydra.run.dir (a sweep over data.shard does), or rerun the shard that wrote them")


def write_units(cfg, prior, sampler, noise, units: list, out: Path, logger, evaluator, done: set) -> int:
    """Sample the stacked units, then write each unit's images and records (one atomic section per unit,
    so resume stays per sample). Returns the number of new samples."""
    size = prior.image_size
    metrics_path = out / "metrics.jsonl"
    sampled = sample_units(prior, sampler, noise, units)
    x_all, stats, rows = sampled.x, sampled.result.stats, sampled.x.shape[0]
    failed_rows = {f["index"]: f for f in sampled.result.failures()}
    # the call's cost, on every record of its rows: seconds shared out, calls per chain
    cost = {"seconds": sampled.seconds / rows, **{k2: stats[k2] for k2 in ("nfe", "forward", "vjp", "steps")},
            **{k2: stats[k2] for k2 in ("decoder_forward", "decoder_vjp") if k2 in stats}}
    n_new, start = 0, 0
    for u in units:
        item, ks = u.item, u.ks
        x = x_all[start:start + len(ks)]
        failed = {row - start: f for row, f in failed_rows.items() if start <= row < start + len(ks)}
        start += len(ks)
        scores = evaluator.per_sample(x, u.x0.expand_as(x))
        misfit = noise.misfit(u.y.expand(len(ks), *u.y.shape[1:]), u.operator(x)).tolist()
        records, images = [], {}
        for b, k in enumerate(ks):
            if k not in u.todo:
                continue
            rec = {"id": item.id, "k": k, **({} if u.label is None else {"class_label": u.label}),
                   **{f"naive_{name}": v[0] for name, v in u.base.items()},
                   **cost,
                   **{k2: v for k2, v in item.info.items() if k2 in ("orig_size", "orig_mode", "resized", "file")}}
            if len(units) > 1:
                rec["measurement_batch"] = len(units)
            if b in failed:
                rec.update(failed=True, fail_step=failed[b]["step"], last_misfit=failed[b]["last_misfit"])
                log.warning("sample %s_%d diverged at step %d; recorded and skipped", item.id, k, failed[b]["step"])
            else:
                images[k] = x[b]
                rec.update({name: values[b] for name, values in scores.items()}, misfit=misfit[b])
            records.append(rec)
        with write_section():  # a chunk's images and records land together, even on Ctrl-C
            for k, img in images.items():
                save_png(img, out / "recon" / f"{item.id}_{k}.png")
            append_jsonl(metrics_path, records)
        for rec in records:
            logger.log_sample(rec)
        done.update((item.id, k) for k in u.todo)
        n_new += len(u.todo)
        grid = save_grid(out, item.id, u.naive[0], size)
        logger.log_images(f"grid/{item.id}", grid)
    return n_new


# -- Gaussian mixture -------------------------------------------------------------------------------
def gmm_problem(cfg, prior):
    """The seeded multimodal instance (A, x0, y, exact posterior, tries) of task=gmm_linear."""
    return find_multimodal_problem(prior.mixture, cfg.task.m, cfg.task.sigma_y,
                                   torch.Generator().manual_seed(int(cfg.seed)),
                                   cfg.task.min_modes, cfg.task.min_weight)


def run_gmm(cfg, prior, sampler, noise, out: Path, device, logger) -> dict:
    from ..metrics.posterior import posterior_report, sw_noise_floor

    A, x0, y, posterior, tries = gmm_problem(cfg, prior)
    mix = prior.mixture
    atomic_save_npz(out / "problem.npz", weights=mix.weights.numpy(), means=mix.means.numpy(),
                    covs=mix.covs.numpy(), A=A.numpy(), y=y.numpy(), sigma_y=np.float64(cfg.task.sigma_y),
                    x0=x0.numpy())
    n, samples_path = cfg.num_samples, out / "samples.npy"
    cost = None
    if samples_path.exists() and np.load(samples_path).shape == (n, mix.dim):
        samples = torch.from_numpy(np.load(samples_path))
        prev = read_records(out / "metrics.jsonl")
        cost = prev[-1].get("cost") if prev else None
    else:
        operator = MatrixOperator(A.to(device))
        y_dev = y[None].to(device)
        parts, stats, seconds, failures = [], [], [], []
        for ks in tqdm(sample_chunks(n, cfg.get("batch_size")), desc=f"gmm/{cfg.sampler.name}",
                       disable=not cfg.progress or n <= (cfg.get("batch_size") or n), unit="batch"):
            cgen = generator(device, item_seed(cfg.seed, f"gmm/samples{ks[0]}"))
            result, chunk_seconds = timed(lambda: sampler.run(prior, operator, noise, y_dev.expand(len(ks), -1),
                                                              (len(ks), mix.dim), cgen), device)
            parts.append(result.x0.cpu())
            stats.append(result.stats)
            seconds.append(chunk_seconds)
            failures += [dict(f, index=ks[0] + f["index"]) for f in result.failures()]
        samples = torch.cat(parts)
        atomic_save_npy(samples_path, samples.numpy())
        cost = {"seconds_total": sum(seconds), "nfe": stats[0]["nfe"],
                "forward": stats[0]["forward"], "vjp": stats[0]["vjp"], "steps": stats[0]["steps"],
                "n_failed": len(failures)}
        append_jsonl(out / "metrics.jsonl", [{"id": "gmm", "k": "all", "cost": cost, "failures": failures}])
    reference = posterior.sample(n, torch.Generator().manual_seed(item_seed(cfg.seed, "gmm/reference")))
    report = posterior_report(samples, posterior, reference, A, y)
    report["sw_noise_floor"] = sw_noise_floor(posterior, n)
    return {"n_measurements": 1, "n_samples": int(report.get("n_finite", 0)),
            "n_failed": n - int(report.get("n_finite", 0)), "instance_tries": tries,
            "posterior_weights": sorted(posterior.weights.tolist(), reverse=True)[:5],
            "metrics": report, "cost": cost}
