"""Hydra entry point: measure -> sample -> evaluate -> log.

    python -m dps_map.run task=sr4 prior=tiny sampler=dmap data=demo num_samples=2

Writes, in its run directory (docs/outputs.md): .hydra/, recon/<id>_<k>.png, input/<id>.png,
label/<id>.png, grids/<id>.png, metrics.jsonl (one line per sample), summary.json; GMM runs write
problem.npz and samples.npy instead of images. Writes are atomic, and a rerun of the same config
skips samples already on disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from . import __version__
from .config import config_digest, resolve_device, resolved, validate
from .data import demo_crops, demo_photos, folder_items, shard
from .errors import ConfigError, UserError
from .evaluate import Evaluator
from .io import (
    Interrupted,
    absolute_path,
    append_jsonl,
    atomic_save_npy,
    atomic_save_npz,
    atomic_write_bytes,
    atomic_write_json,
    load_image,
    prior_weights,
    read_jsonl,
    remove_temp_files,
    save_png,
    stop_on_signals,
    unique_records,
    weights_id,
    write_section,
)
from .lock import RunDirLocked, lock_holder, locked_message, run_lock
from .loggers import make_logger
from .operators import MatrixOperator, StackedOperator, build_noise, build_operator
from .priors import build_prior
from .priors.gmm import find_multimodal_problem
from .samplers import build_sampler
from .samplers.base import GeneratorStack

log = logging.getLogger(__name__)
RUN_FILE = "run.json"


def num_gpus() -> int:
    """GPUs on this machine (at least 1; counted through NVML, CUDA is not initialised): the default
    number of parallel jobs of hydra/launcher=gpus, overridable with DPS_MAP_GPUS."""
    return max(torch.cuda.device_count(), 1)


if not OmegaConf.has_resolver("dps_map_num_gpus"):
    OmegaConf.register_new_resolver("dps_map_num_gpus", num_gpus)


def item_seed(seed: int, key: str) -> int:
    """A 63-bit seed for one measurement (or one chunk of samples), independent of sharding and order."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "little") >> 1


def generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def run_weights(cfg: DictConfig) -> dict:
    """The weights a run's outputs depend on, by content (io.weights_id): the prior's checkpoint and an
    adapter sampler's adapter. The config digest names their paths only, and a path keeps its name when the
    file changes (a retrained shipped prior, a re-downloaded checkpoint)."""
    return {"prior": prior_weights(cfg.prior), "adapter": weights_id(cfg.sampler.get("adapter"))}


def claim_run_dir(out: Path, digest: str, overwrite: bool, weights: dict | None = None) -> None:
    """Refuse to mix outputs of two configs, or of one config with other weights, in one directory
    (unless overwrite=true). A weight unknown on either side (None: file absent, or a directory written
    before weights were recorded) is not compared."""
    marker = out / RUN_FILE
    weights = {k: v for k, v in (weights or {}).items() if v is not None}
    if marker.exists():
        saved = json.loads(marker.read_text())
        old, old_weights = saved.get("digest"), saved.get("weights") or {}
        changed = {k: (old_weights[k], v) for k, v in weights.items() if old_weights.get(k) not in (None, v)}
        if old != digest and not overwrite:
            raise ConfigError(f"run dir '{out}' holds outputs of another config (digest {old}, this one {digest});"
                              " choose another hydra.run.dir or pass overwrite=true")
        if changed and not overwrite:
            what = "; ".join(f"{k} {a[:19]}... now {b[:19]}..." for k, (a, b) in changed.items())
            raise ConfigError(f"run dir '{out}' holds outputs made with other weights ({what}): the file at the "
                              "configured path changed; choose another hydra.run.dir or pass overwrite=true")
        if old != digest or changed:
            log.warning("overwrite=true: discarding outputs of config %s (weights %s) in %s", old, old_weights, out)
            for name in ("metrics.jsonl", "summary.json", "samples.npy", "problem.npz"):
                (out / name).unlink(missing_ok=True)
        else:
            weights = {**old_weights, **weights}
    atomic_write_json(marker, {"digest": digest, "version": __version__, **({"weights": weights} if weights else {})})


def run(cfg: DictConfig, out_dir=None) -> dict:
    """Run one config end to end and return its summary (also written to summary.json).

    SIGINT/SIGTERM/SIGUSR2 stop the run between writes (raising io.Interrupted): every sample whose record
    is in metrics.jsonl is complete on disk, no temp file is left, and a rerun resumes from there."""
    with stop_on_signals():
        return _run(cfg, out_dir)


def checked_sampler(cfg: DictConfig):
    """Every start-up check of a config, before any model is built or file written; returns the sampler
    (cheap to build, and the last judge of its own values). Raises ConfigError (one line)."""
    validate(cfg)
    return make_sampler(cfg)


def _run(cfg: DictConfig, out_dir=None) -> dict:
    sampler = checked_sampler(cfg)  # cheap, so first: a bad value stops the run before anything is written
    if out_dir is None:
        from hydra.core.hydra_config import HydraConfig

        out_dir = HydraConfig.get().runtime.output_dir
    out = Path(out_dir)
    with run_lock(out):  # one writer per run directory (dps_map/lock.py)
        return _run_locked(cfg, sampler, out)


def _run_locked(cfg: DictConfig, sampler, out: Path) -> dict:
    if remove_temp_files(out):
        log.warning("removed temp files a killed run left in %s", out)
    digest = config_digest(cfg)
    claim_run_dir(out, digest, cfg.get("overwrite", False), run_weights(cfg))
    device = resolve_device(cfg.device)
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
                       digest=digest, device=str(device), config=resolved(cfg).get("sampler"))
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


def make_prior(cfg, device):
    """The prior of a config on `device`, with the perf knobs applied (README "GPU knobs")."""
    prior = build_prior(cfg.prior, device)
    if cfg.get("perf") is not None and hasattr(prior, "configure_perf"):
        prior.configure_perf(**OmegaConf.to_container(cfg.perf, resolve=True))
    return prior


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


def measure(cfg, item, size: int, noise, device):
    """The measurement of one item as every run draws it (from the stream seeded by (seed, id)):
    returns (that generator, operator, x0 of shape (1, C, S, S), y)."""
    gen = generator(device, item_seed(cfg.seed, item.id))
    operator = build_operator(cfg.task, size, gen).to(device)
    x0 = item.image[None].to(device)
    return gen, operator, x0, operator.restrict(noise.sample(operator(x0), gen))


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
    """measurement_batch (README "Measurement batching"), checked before any sample is drawn: a prior bound
    to one measurement (`condition(operator, y)`: the SR reference models) or a sampler whose conditional
    adapter reads one operator cannot stack measurements with different parameters."""
    mb = int(cfg.get("measurement_batch", 1) or 1)
    if mb > 1 and prior.needs_measurement:
        raise ConfigError(f"measurement_batch={mb}: prior={cfg.prior.name} is conditioned on one measurement at a "
                          "time; use measurement_batch=1")
    if mb > 1 and hasattr(sampler, "check_operator"):
        raise ConfigError(f"measurement_batch={mb}: sampler={cfg.sampler.name} binds its adapter to one "
                          "measurement's operator; use measurement_batch=1")
    return mb


class _Unit:
    """One sampler chunk of one measurement, waiting to be stacked with others (measurement_batch)."""

    def __init__(self, item, operator, x0, y, label, naive, base, model, ks, todo, cgen):
        self.item, self.operator, self.x0, self.y, self.label = item, operator, x0, y, label
        self.naive, self.base, self.model, self.ks, self.todo, self.cgen = naive, base, model, ks, todo, cgen


def sample_units(prior, sampler, noise, units: list) -> tuple[torch.Tensor, dict]:
    """One sampler call for the stacked chunks of `units`: rows of unit j see its own operator, y, class
    label and random stream (operators.StackedOperator, samplers.base.GeneratorStack), so every row equals
    what the unit gives alone. A single unit runs exactly as before (no wrappers). Returns (x, failures
    by row)."""
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
    z = sampler.sample(units[0].model, prior.sampling_operator(operator), noise, y,
                       (y.shape[0], *prior.sample_shape), gen)
    with torch.no_grad():
        x = prior.decode(z)
    return x, {f["index"]: f for f in sampler.failures()}


def run_images(cfg, prior, sampler, noise, out: Path, device, logger, evaluator) -> dict:
    size = prior.image_size
    mbatch = check_measurement_batch(cfg, prior, sampler)
    items = load_items(cfg.data, size)
    metrics_path = out / "metrics.jsonl"
    done = {(r["id"], r["k"]) for r in read_jsonl(metrics_path)
            if r.get("failed") or (out / "recon" / f"{r['id']}_{r['k']}.png").exists()}
    chunks = sample_chunks(cfg.num_samples, cfg.get("batch_size"))
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
            pending.append(_Unit(item, operator, x0, y, label, naive, base, model, ks, todo, cgen))
            if len(pending) == mbatch:
                n_new += write_units(cfg, prior, sampler, noise, pending, out, logger, evaluator, done)
                pending = []
    if pending:
        n_new += write_units(cfg, prior, sampler, noise, pending, out, logger, evaluator, done)
    summary = summarize_images(read_jsonl(metrics_path), {it.id for it in items})
    summary["metrics"].update(evaluator.per_run(out, [it.id for it in items], size))
    summary["n_new_samples"] = n_new
    summary["n_expected"] = len(items) * cfg.num_samples  # records of a finished run (aggregate checks it)
    summary["image_ids"] = sorted(it.id for it in items)  # the exact images, so a table can be redone on them
    summary["preprocessing"] = preprocessing(cfg.data, items, size)
    return summary


def preprocessing(data_cfg, items, size: int) -> dict:
    """How the images were made from their sources: the crop and resize policy and, per id, the original
    size (width, height) of the source (demo crops: the photograph and the crop box [top, left, side])."""
    if data_cfg.kind == "demo":
        policy = (f"fixed square crops of scikit-image photographs (box [top, left, side]), resized to {size}x{size} "
                  "(bicubic), RGB in [-1, 1]")
        sources = {it.id: {"photo": it.info.get("photo"), "box": it.info.get("box")} for it in items}
    else:
        policy = (f"centre crop to a square (side = the shorter edge), resized to {size}x{size} (bicubic) when "
                  "the size differs, RGB in [-1, 1]")
        sources = {it.id: {"file": it.info.get("file"), "orig_mode": it.info.get("orig_mode")} for it in items}
    return {"policy": policy, "image_size": size,
            "original_sizes": {it.id: it.info.get("orig_size") for it in items}, "sources": sources}


def write_units(cfg, prior, sampler, noise, units: list, out: Path, logger, evaluator, done: set) -> int:
    """Sample the stacked units, then write each unit's images and records (one atomic section per unit,
    so resume stays per sample). Returns the number of new samples."""
    size = prior.image_size
    metrics_path = out / "metrics.jsonl"
    x_all, failed_rows = sample_units(prior, sampler, noise, units)
    rows = x_all.shape[0]
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
                   "seconds": sampler.stats["seconds"] / rows, "nfe": sampler.stats["nfe"],
                   "forward": sampler.stats["forward"], "vjp": sampler.stats["vjp"],
                   "steps": sampler.stats["steps"],
                   **{k2: sampler.stats[k2] for k2 in ("decoder_forward", "decoder_vjp") if k2 in sampler.stats},
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


GRID_PADDING = 2  # pixels around each tile of grids/<id>.png (evaluate.stored_naive reads the first tile)


def save_grid(out: Path, ident: str, naive: torch.Tensor, size: int) -> Path:
    """grids/<id>.png: the measurement mapped to image space (operator.naive(y)), every sample on disk,
    the ground truth; one row of size x size tiles, GRID_PADDING pixels apart."""
    from torchvision.utils import save_image

    recon = sorted((out / "recon").glob(f"{ident}_*.png"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    tiles = [naive.cpu().float().clamp(-1, 1)] + [load_image(p, size)[0] for p in recon] \
        + [load_image(out / "label" / f"{ident}.png", size)[0]]
    path = out / "grids" / f"{ident}.png"
    buf = io.BytesIO()
    save_image((torch.stack(tiles) + 1) / 2, buf, format="png", nrow=len(tiles), padding=GRID_PADDING, pad_value=1.0)
    atomic_write_bytes(path, buf.getvalue())
    return path


def mean_sem(values) -> dict:
    """Mean, sample standard deviation (ddof=1), standard error std/sqrt(n) and count of the finite values
    (None where undefined)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "sem": None, "n": 0}
    std = float(v.std(ddof=1)) if v.size > 1 else None
    return {"mean": float(v.mean()), "std": std, "sem": None if std is None else std / float(np.sqrt(v.size)),
            "n": int(v.size)}


def summarize_images(records: list[dict], ids: set) -> dict:
    """Counts, means and standard errors over the records of these ids, each (id, k) counted once."""
    records, n_duplicates = unique_records([r for r in records if r["id"] in ids], "metrics.jsonl")
    ok = [r for r in records if not r.get("failed")]
    metric_names = sorted({k for r in ok for k in r if k in ("psnr", "ssim", "lpips", "misfit")})
    per_id = {}
    for r in records:
        per_id.setdefault(r["id"], r)
    return {
        "n_measurements": len({r["id"] for r in records}),
        "n_samples": len(ok),
        "n_failed": len(records) - len(ok),
        "n_duplicate_records": n_duplicates,
        "failures": [{k: r.get(k) for k in ("id", "k", "fail_step", "last_misfit")}
                     for r in records if r.get("failed")],
        "metrics": {name: mean_sem(r.get(name) for r in ok) for name in metric_names},
        "naive": {name: mean_sem(r.get(f"naive_{name}") for r in per_id.values())
                  for name in ("psnr", "ssim", "lpips")},
        "cost": {"seconds_per_sample": mean_sem(r["seconds"] for r in records)["mean"],
                 "nfe_per_sample": mean_sem(r["nfe"] for r in records)["mean"],
                 "forward_per_sample": mean_sem(r["forward"] for r in records)["mean"],
                 "vjp_per_sample": mean_sem(r["vjp"] for r in records)["mean"],
                 "steps": records[0]["steps"] if records else None},
    }


# -- Gaussian mixture -------------------------------------------------------------------------------
def gmm_problem(cfg, prior):
    """The seeded multimodal instance (A, x0, y, exact posterior, tries) of task=gmm_linear."""
    return find_multimodal_problem(prior.mixture, cfg.task.m, cfg.task.sigma_y,
                                   torch.Generator().manual_seed(int(cfg.seed)),
                                   cfg.task.min_modes, cfg.task.min_weight)


def run_gmm(cfg, prior, sampler, noise, out: Path, device, logger) -> dict:
    from .metrics.posterior import posterior_report, sw_noise_floor

    A, x0, y, posterior, tries = gmm_problem(cfg, prior)
    mix = prior.mixture
    atomic_save_npz(out / "problem.npz", weights=mix.weights.numpy(), means=mix.means.numpy(),
                    covs=mix.covs.numpy(), A=A.numpy(), y=y.numpy(), sigma_y=np.float64(cfg.task.sigma_y),
                    x0=x0.numpy())
    n, samples_path = cfg.num_samples, out / "samples.npy"
    cost = None
    if samples_path.exists() and np.load(samples_path).shape == (n, mix.dim):
        samples = torch.from_numpy(np.load(samples_path))
        prev = read_jsonl(out / "metrics.jsonl")
        cost = prev[-1].get("cost") if prev else None
    else:
        operator = MatrixOperator(A.to(device))
        y_dev = y[None].to(device)
        parts, stats, failures = [], [], []
        for ks in tqdm(sample_chunks(n, cfg.get("batch_size")), desc=f"gmm/{cfg.sampler.name}",
                       disable=not cfg.progress or n <= (cfg.get("batch_size") or n), unit="batch"):
            cgen = generator(device, item_seed(cfg.seed, f"gmm/samples{ks[0]}"))
            x = sampler.sample(prior, operator, noise, y_dev.expand(len(ks), -1), (len(ks), mix.dim), cgen)
            parts.append(x.cpu())
            stats.append(dict(sampler.stats))
            failures += [dict(f, index=ks[0] + f["index"]) for f in sampler.failures()]
        samples = torch.cat(parts)
        atomic_save_npy(samples_path, samples.numpy())
        cost = {"seconds_total": sum(s["seconds"] for s in stats), "nfe": stats[0]["nfe"],
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


# -- command line -------------------------------------------------------------------------------------
def pin_local_gpu(job_num: int | None) -> None:
    """hydra/launcher=gpus: submitit_local shows every job all GPUs (CUDA_VISIBLE_DEVICES=0,...,N-1);
    keep GPU job_num mod N only, so the N jobs of a batch run on N different GPUs. Must run before
    CUDA is initialised; a no-op outside submitit_local jobs."""
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if os.environ.get("SUBMITIT_EXECUTOR") != "local" or job_num is None or len(visible) < 2:
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[job_num % len(visible)]
    log.info("job %d pinned to GPU %s", job_num, visible[job_num % len(visible)])


def _job_num() -> int | None:
    from hydra.core.hydra_config import HydraConfig

    num = OmegaConf.select(HydraConfig.get(), "job.num", default=None)  # missing in single runs
    return None if num is None else int(num)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    pin_local_gpu(_job_num())
    try:
        summary = run(cfg)
    except UserError as err:  # one clear line, no traceback (Hydra would print one)
        print(f"dps-map: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except Interrupted as stop:
        why = " (the time limit is near)" if stop.signum == signal.SIGUSR2 else ""
        print(f"dps-map: interrupted by {stop}{why}: finished samples are on disk; rerun the same command to "
              "resume", file=sys.stderr)
        sys.exit(128 + stop.signum)
    print(format_summary(summary))


def format_summary(summary: dict) -> str:
    parts = [f"{summary['task']}/{summary['prior']}/{summary['sampler']}: {summary['n_samples']} samples"]
    for name, stat in summary.get("metrics", {}).items():
        if name == "diversity" and isinstance(stat, dict):  # several statistics, no mean: show each
            parts += [f"{k}={v:.4g}" for k, v in stat.items() if isinstance(v, float)]
            continue
        value = stat.get("mean") if isinstance(stat, dict) else stat
        if isinstance(value, float):
            parts.append(f"{name}={value:.4g}")
    if summary.get("n_failed"):
        parts.append(f"FAILED={summary['n_failed']}")
    return "  ".join(parts)


def check_command_line(args: list[str], multirun: bool = False) -> list:
    """Compose and validate the config of every job of the command line before Hydra starts, so a typo
    (unknown key, group or option) or an impossible combination is one line and exit code 2 in the
    launching process, before any job is submitted. Returns the jobs (:class:`dps_map.sweep.Job`);
    raises UserError (naming the job's overrides when a sweep has several)."""
    from .sweep import expand_jobs, without_hydra

    jobs = expand_jobs(args, multirun)
    for job in jobs:
        try:
            validate(without_hydra(job.cfg))
        except UserError as err:
            if len(jobs) > 1:
                err.args = (f"job {' '.join(job.overrides)}: {err}",)
            raise
    return jobs


def main() -> None:
    """Console script `dps-map` (user errors print one line and exit 2, no traceback)."""
    args = sys.argv[1:]
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    multirun = len(overrides) < len(args)
    if any(a.startswith("-") for a in overrides):  # --help, --cfg, -cn ...: Hydra's own business
        _hydra_main()
        return
    try:
        jobs = check_command_line(overrides, multirun=multirun)
        if multirun:
            check_job_dirs(jobs)
        run_dir = None if multirun else lockable_dir(jobs[0])
        with ExitStack() as stack:
            if run_dir is not None:  # locked before Hydra writes .hydra/ and its log into the directory
                stack.enter_context(run_lock(run_dir))
            _hydra_main()
    except UserError as err:
        print(f"dps-map: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


def lockable_dir(job) -> Path | None:
    """A single run's directory as Hydra will set it, or None when it holds a time stamp (Hydra's own
    would differ): then run() alone takes the lock."""
    if "now:" in str(job.cfg.hydra.run._get_node("dir")._value()):
        return None
    return Path(job.run_dir).absolute()


def check_job_dirs(jobs) -> None:
    """Before any job of a sweep is submitted: refuse jobs that would share one output directory (they
    would write into each other's run), and job directories another process is writing (a second
    sweep into the same hydra.sweep.dir, or a job of this one still running). Raises UserError."""
    seen = {}
    for job in jobs:
        key = os.path.realpath(job.run_dir)
        if key in seen:
            raise ConfigError(
                f"jobs '{' '.join(seen[key].overrides)}' and '{' '.join(job.overrides)}' would both write to "
                f"'{job.run_dir}': their overrides differ only in keys hydra.job.config.override_dirname.exclude_keys "
                "leaves out of the directory name (device, progress, overwrite, logger), or hydra.sweep.subdir "
                "does not use ${hydra.job.override_dirname}")
        seen[key] = job
    for job in jobs:
        holder = lock_holder(job.run_dir)
        if holder is not None:
            raise RunDirLocked(f"job '{' '.join(job.overrides)}': {locked_message(job.run_dir, holder)}")


if __name__ == "__main__":
    main()
