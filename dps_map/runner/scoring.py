"""Evaluation of a run's samples: per-sample scores (PSNR, SSIM, LPIPS) while sampling, and
run-level scores (FID, KID, diversity) computed from the images on disk, so resumed and sharded
runs are scored exactly like uninterrupted ones."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..io import load_image
from .rundir import run_dirs
from .summary import GRID_PADDING, summarize_images

log = logging.getLogger(__name__)


_NETWORKS: dict = {}


def _network(cls, *args, **kwargs):
    """A frozen metric network (LPIPS, Inception), built once per process for the same arguments: the jobs of a
    sweep on the local launcher share one process, and each would read the weight files again (~330 MB)."""
    key = (cls.__name__, args, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
    if key not in _NETWORKS:
        _NETWORKS[key] = cls(*args, **kwargs)
    return _NETWORKS[key]


class Evaluator:
    """Holds the metric networks a config asks for (built once; weights resolved via paths.*)."""

    def __init__(self, mcfg, paths, device):
        from ..config.metrics import BUILTIN, Scorer, extra_scorers
        from ..metrics import LPIPS, InceptionFeatures, check_weights, psnr, ssim

        self.names = set(mcfg.names)
        self.device = device
        self.kid_subsets, self.kid_subset_size = mcfg.get("kid_subsets", 100), mcfg.get("kid_subset_size", 10)
        random = bool(mcfg.get("random_weights", False))
        if random:
            log.warning("metrics.random_weights=true: LPIPS/FID/KID use random networks (tests only)")
        else:
            check_weights(list(mcfg.names), dict(paths), mcfg.get("lpips_net", "alex"))  # config order
        self.lpips = None
        if "lpips" in self.names:  # also gives diversity its pairwise LPIPS
            self.lpips = _network(LPIPS, mcfg.get("lpips_net", "alex"), backbone_path=paths.get("lpips_backbone"),
                                  random_backbone=random, device=device)
        self.inception = None
        if {"fid", "kid"} & self.names:
            self.inception = _network(InceptionFeatures, weights_path=paths.get("fid_inception"),
                                      random_weights=random, device=device)
        # the per-sample metrics (dps_map.config.metrics): the built-ins this config asks for, then the user's
        callables = {"psnr": psnr, "ssim": ssim, "lpips": self.lpips}
        self.scorers = [Scorer(m, callables[m.name]) for m in BUILTIN.values()
                        if m.always or (m.name in self.names and callables[m.name] is not None)]
        self.scorers += extra_scorers(mcfg)
        self.extra = [s.metric.name for s in self.scorers if s.metric.name not in BUILTIN]

    def per_sample(self, x: torch.Tensor, ref: torch.Tensor) -> dict[str, list[float]]:
        """Scores of each sample in x against its ground truth ref (same shape): {metric name: one per sample}."""
        x = torch.nan_to_num(x).clamp(-1, 1)
        with torch.no_grad():
            return {s.metric.name: s(x, ref) for s in self.scorers}

    def per_run(self, out: Path, ids: list[str], size: int) -> dict:
        """FID/KID of all reconstructions against all ground truths, and diversity per measurement."""
        from ..metrics import fid_from_features, kid, pairwise_l2, pairwise_lpips, pixel_std

        recon = {i: sorted((out / "recon").glob(f"{i}_*.png")) for i in ids}
        result = {}
        if self.inception is not None:
            fake = self._features([p for i in ids for p in recon[i]], size)
            real = self._features([out / "label" / f"{i}.png" for i in ids], size)
            if len(fake) >= 2 and len(real) >= 2:
                if "fid" in self.names:
                    result["fid"] = fid_from_features(fake, real)
                if "kid" in self.names:
                    mean, std = kid(fake, real, subsets=self.kid_subsets,
                                    subset_size=min(self.kid_subset_size, len(fake), len(real)),
                                    generator=np.random.default_rng(0))
                    result["kid"] = {"mean": float(mean), "std": float(std)}
            else:
                log.warning("FID/KID need at least 2 images on each side; skipped")
        if "diversity" in self.names:
            per_id = []
            for i in ids:
                if len(recon[i]) < 2:
                    continue
                samples = torch.stack([load_image(p, size)[0] for p in recon[i]]).to(self.device)
                row = {"pixel_std": pixel_std(samples), "pairwise_l2": pairwise_l2(samples)}
                if self.lpips is not None:
                    row["pairwise_lpips"] = pairwise_lpips(samples, self.lpips)
                per_id.append(row)
            if per_id:
                result["diversity"] = {k: float(np.mean([r[k] for r in per_id])) for k in per_id[0]}
                result["diversity"]["n_measurements"] = len(per_id)
        return result

    def _features(self, files, size: int) -> np.ndarray:
        feats = []
        for start in range(0, len(files), 16):
            batch = torch.stack([load_image(p, size)[0] for p in files[start:start + 16]]).to(self.device)
            with torch.no_grad():
                feats.append(self.inception(batch).cpu().numpy())
        return np.concatenate(feats) if feats else np.zeros((0, 2048))


# -- re-scoring finished runs: python -m dps_map.evaluate RUN_OR_SWEEP_DIR metrics=default ---------------
RESCORE_GROUPS = ("metrics", "paths", "device")  # the overrides `python -m dps_map.evaluate` takes


def rescore_config(overrides: list[str]):
    """metrics, paths and device composed from the command line's overrides (the rest is the run's own)."""
    from ..config.sweep import compose_job, without_hydra
    from ..errors import ConfigError

    bad = [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0] not in RESCORE_GROUPS]
    if bad:
        raise ConfigError(f"python -m dps_map.evaluate takes only metrics=..., metrics.*, paths.* and device "
                          f"overrides, got {' '.join(bad)}")
    return without_hydra(compose_job(list(overrides)))


def stored_naive(out: Path, ident: str, size: int) -> torch.Tensor | None:
    """The naive reconstruction operator.naive(y) of measurement `ident` as its run stored it: the first
    tile of grids/<id>.png (run.save_grid), 8-bit like every image of the run; None without a grid."""
    from PIL import Image


    path = out / "grids" / f"{ident}.png"
    if not path.is_file():
        return None
    with Image.open(path) as grid:
        tile = np.asarray(grid.convert("RGB"))[GRID_PADDING:GRID_PADDING + size, GRID_PADDING:GRID_PADDING + size]
    return torch.from_numpy(tile.copy()).permute(2, 0, 1).float() / 127.5 - 1


def rescore_run(out: Path, cfg, evaluator: "Evaluator") -> str:
    """Add the metrics of `evaluator` a finished image run lacks, from its PNGs: per-sample scores missing
    from a record (e.g. LPIPS or a user's metrics.extra, and the naive baseline's naive_lpips from grids/<id>.png),
    then FID/KID and
    diversity; metrics.jsonl and summary.json are rewritten
    atomically, and only if something changed (a second call changes nothing). Returns what it did."""
    import json

    from ..config.metrics import BUILTIN, RUN_LEVEL
    from ..io import atomic_write_bytes, atomic_write_json, iter_jsonl

    summary_path, metrics_path = out / "summary.json", out / "metrics.jsonl"
    if not (out / "recon").is_dir():
        return "skipped: no images (a Gaussian-mixture run is scored against its exact posterior when it runs)"
    if not summary_path.exists():
        return "skipped: unfinished (no summary.json); rerun it first"
    summary = json.loads(summary_path.read_text())
    lines = [(line, rec) for line, rec in iter_jsonl(metrics_path) if rec is not None]
    if summary.get("n_expected") is not None and len({(r["id"], r["k"]) for _, r in lines}) < summary["n_expected"]:
        return "skipped: unfinished (fewer records than n_expected); rerun it first"
    ids = summary.get("image_ids") or sorted({r["id"] for _, r in lines})
    labels = {i: out / "label" / f"{i}.png" for i in ids}
    from PIL import Image

    with Image.open(next(iter(labels.values()))) as first:  # the run's image size (its ground truths)
        size = first.size[0]
    new_lines, added, naive_scores, refs = [], set(), {}, {}

    def ref_of(ident):  # each ground truth read once, however many samples and baselines it scores
        if ident not in refs:
            refs[ident] = load_image(labels[ident], size)[0][None].to(evaluator.device)
        return refs[ident]

    optional = [s.metric.name for s in evaluator.scorers if not s.metric.always]  # LPIPS and the user's metrics
    for line, rec in lines:
        want = [n for n in optional if n not in rec and not rec.get("failed")]
        new = {}
        if want:
            x = load_image(out / "recon" / f"{rec['id']}_{rec['k']}.png", size)[0][None].to(evaluator.device)
            scores = evaluator.per_sample(x, ref_of(rec["id"]))
            new.update({n: scores[n][0] for n in want})
        # the naive baseline's score, as run.py writes it in every record of the id (failed ones too)
        naive_want = [n for n in optional if f"naive_{n}" not in rec]
        if naive_want:
            if rec["id"] not in naive_scores:
                naive = stored_naive(out, rec["id"], size)
                if naive is None:
                    log.warning("%s: no grids/%s.png, so no naive_%s for it", out, rec["id"], "/".join(naive_want))
                    naive_scores[rec["id"]] = {}
                else:
                    naive_scores[rec["id"]] = evaluator.per_sample(naive[None].to(evaluator.device), ref_of(rec["id"]))
            scored = naive_scores[rec["id"]]
            new.update({f"naive_{n}": scored[n][0] for n in naive_want if n in scored})
        if new:
            rec = dict(rec, **new)
            line = json.dumps(rec, sort_keys=True)
            added.update(new)
        new_lines.append((line, rec))
    records = [rec for _, rec in new_lines]
    # the user's metrics of this re-scoring, and those of the first scoring (kept in the summary)
    extra = list(dict.fromkeys([*evaluator.extra, *(n for n in summary.get("metrics", {})
                                                    if n not in (*BUILTIN, *RUN_LEVEL, "misfit"))]))
    fresh = summarize_images(records, set(ids), extra)
    new_summary = dict(summary)
    new_summary.update({k: fresh[k] for k in ("metrics", "naive", "n_samples", "n_failed", "n_measurements",
                                              "n_duplicate_records")})
    per_run = evaluator.per_run(out, ids, size)
    for name in RUN_LEVEL:  # kept from the first scoring unless re-scored now
        if name in per_run:
            new_summary["metrics"][name] = per_run[name]
        elif name in summary.get("metrics", {}):
            new_summary["metrics"][name] = summary["metrics"][name]
    jsonl = b"".join((line + "\n").encode() for line, _ in new_lines)
    old_jsonl = metrics_path.read_bytes() if metrics_path.exists() else b""
    changed = []
    if jsonl != old_jsonl:
        atomic_write_bytes(metrics_path, jsonl)
        changed.append("metrics.jsonl (" + ", ".join(sorted(added)) + ")")
    if json.dumps(new_summary, sort_keys=True, default=str) != json.dumps(summary, sort_keys=True, default=str):
        atomic_write_json(summary_path, new_summary)
        changed.append("summary.json (" + ", ".join(sorted(set(per_run) | added)) + ")")
    return "updated " + " and ".join(changed) if changed else "unchanged"


def rescore(root, overrides: list[str]) -> dict[str, str]:
    """Re-score every finished run at or below root with the metrics of `overrides`, each under its run
    directory's lock. Returns {run dir: what happened}."""
    from ..config import resolve_device
    from ..errors import UserError
    from .lock import run_lock

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"'{root}' is not a directory")
    dirs = run_dirs(root)
    if not dirs:
        raise UserError(f"no dps-map run directories (with run.json) at or below '{root}'")
    cfg = rescore_config(overrides)
    torch.manual_seed(0)  # metrics.random_weights (tests): the same random networks at every call
    evaluator = Evaluator(cfg.metrics, cfg.paths, resolve_device(cfg.device))  # checks the weight files
    return {str(d): _locked_rescore(d, cfg, evaluator, run_lock) for d in dirs}


def _locked_rescore(out: Path, cfg, evaluator, run_lock) -> str:
    from .lock import RunDirLocked

    try:
        with run_lock(out):  # one writer per run directory
            return rescore_run(out, cfg, evaluator)
    except RunDirLocked as err:  # a run still writing here: left alone, the others are re-scored
        log.warning("%s skipped (not re-scored): %s", out, err)
        return f"skipped: {err}"
