"""Aggregate a sweep: group its jobs by config (shards of one config form one group), merge their
metrics.jsonl, compute FID/KID over all samples of a group (when the Inception weights exist; one network per
call, each set of references through it once), and write aggregate.json and aggregate.md into the sweep directory.

    python -m dps_map.aggregate outputs/multirun/2026-01-01_00-00-00 [--wandb] [--random-weights]

A job is any directory below SWEEP_DIR holding run.json (written by dps_map.run); its config digest
(run.json) ignores the settings that do not change the samples (dps_map.config.keys.NON_OUTPUT, the
shard among them), so the shards of one config share a digest. Each (id, k) is counted once. A group with a missing shard, or with a job
that is running (its run.lock is held) or unfinished (no summary.json, or fewer records than its
n_expected), is incomplete: named with its jobs' counts in both files, never averaged into `metrics`. A group
whose jobs ran on different devices (device type, device_name or precision in their summary.json) is flagged.
Each group names the class labels its class-conditional prior was given (`class_label_policy`, from run.json).
A job whose run.json, summary.json, metrics.jsonl or .hydra config cannot be read (truncated, edited) is broken:
named with the reason under `broken_jobs`, left out of every count, and its group (known from run.json, else from
the digest of its saved config) is incomplete; the other jobs are aggregated.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ..config import config_digest, prior_image_size, resolve_device
from ..config.keys import LABEL_EXCLUDED
from ..config.metrics import extra_names, score_fields
from ..errors import UserError
from ..io import atomic_write_bytes, atomic_write_json, first_line, load_image, read_json, unique_records
from .lock import lock_holder
from .rundir import RUN_FILE, read_marker
from .summary import mean_sem, read_records

log = logging.getLogger(__name__)

#: the per-sample fields averaged over a group (naive: the no-prior baseline); the user's metrics (metrics.extra)
#: and their naive_ baseline follow (extra_metrics)
PER_SAMPLE = ("psnr", "ssim", "lpips", "misfit", "naive_psnr", "naive_ssim")
#: the summary.json fields that say what a job computed on; a group whose jobs differ in one is flagged
DEVICE_FIELDS = ("device", "device_name", "precision")


def find_jobs(root: Path) -> list[dict]:
    """Every run directory below root (those with run.json), read once: its digest, run.json (`marker`), config,
    overrides, summary.json (None if absent) and records. A job with a file that cannot be read gets `error` (one
    line naming the file) and no records or summary; its digest is None when run.json is the broken file. A
    run.json of dps-map 0.1 raises ConfigError (never mixed with this version's digests)."""
    jobs = []
    for marker_file in sorted(root.rglob(RUN_FILE)):
        job = {"dir": marker_file.parent, "digest": None, "marker": {}, "cfg": None, "overrides": [],
               "summary": None, "records": [], "error": None}
        if ".submitit" in job["dir"].parts:
            continue
        try:
            read_json(marker_file, "restore it, or rerun this job into a fresh directory")
        except UserError as err:
            job["error"] = str(err)
        else:
            job["marker"] = read_marker(job["dir"])  # raises for a 0.1 directory: the whole sweep must be migrated
            job["digest"] = job["marker"].get("digest")
        try:
            _read_job_files(job)
        except UserError as err:
            job["error"] = job["error"] or str(err)
        if job["error"] is not None:  # nothing of a broken job is counted
            job["summary"], job["records"] = None, []
        jobs.append(job)
    return jobs


def _load_yaml(path: Path):
    try:
        return OmegaConf.load(path)
    except Exception as err:  # noqa: BLE001 - yaml's and OmegaConf's errors have no common base but Exception
        raise UserError(f"'{path}' is not a readable config (corrupt: {first_line(err)}): restore it, or rerun this "
                        "job into a fresh directory") from err


def _read_job_files(job: dict) -> None:
    """Fill in the job's config, overrides, summary and records (UserError naming a file that cannot be read)."""
    cfg_file, ov_file = job["dir"] / ".hydra" / "config.yaml", job["dir"] / ".hydra" / "overrides.yaml"
    if cfg_file.exists():
        job["cfg"] = _load_yaml(cfg_file)
    if ov_file.exists():
        job["overrides"] = [str(o) for o in _load_yaml(ov_file)]
    summary = job["dir"] / "summary.json"
    if summary.exists():
        job["summary"] = read_json(summary, "rerun this job (the same command resumes it and writes a new summary)")
    extra = extra_names(job["cfg"].get("metrics")) if job["cfg"] is not None else []
    job["records"] = [r for r in read_records(job["dir"] / "metrics.jsonl", extra) if r.get("k") != "all"]


def extra_metrics(jobs: list[dict]) -> list[str]:
    """The names of the user's metrics (metrics.extra) of a group's jobs, in config order. metrics are not part
    of the digest, so shards may differ: each mean says over how many samples it is (n)."""
    names = [n for job in jobs if job["cfg"] is not None for n in extra_names(job["cfg"].get("metrics"))]
    return list(dict.fromkeys(names))


def saved_digest(job: dict) -> str | None:
    """The digest of a job's saved config (.hydra/config.yaml), None if it has none or it does not compose: the
    group of a job whose run.json is broken."""
    if job["cfg"] is None:
        return None
    try:
        return config_digest(job["cfg"])
    except Exception:  # noqa: BLE001 - a config that no longer resolves: the job stays without a group
        return None


def group_jobs(jobs: list[dict]) -> dict[str, list[dict]]:
    """The jobs by config digest; a job whose run.json is broken joins the group its saved config's digest names,
    if one exists (else it is only under `broken_jobs`)."""
    groups: dict[str, list[dict]] = {}
    for job in jobs:
        if job["digest"] is not None:
            groups.setdefault(job["digest"], []).append(job)
    for job in jobs:
        if job["digest"] is None and saved_digest(job) in groups:
            groups[saved_digest(job)].append(job)
    return groups


def _shards(jobs: list[dict]) -> dict:
    """Which shards of the group are present (and which are missing)."""
    seen, total = set(), 1
    for job in jobs:
        data = job["cfg"].data if job["cfg"] is not None else {}
        seen.add(int(data.get("shard", 0)))
        total = int(data.get("num_shards", 1))
    return {"num_shards": total, "present": sorted(seen), "missing": sorted(set(range(total)) - seen)}


def _label(job: dict) -> str:
    cfg = job["cfg"]
    head = f"{cfg.task.name}/{cfg.prior.name}/{cfg.sampler.name}" if cfg is not None else job["dir"].name
    rest = [o for o in job["overrides"] if o.split("=", 1)[0].lstrip("+~") not in LABEL_EXCLUDED
            and not o.startswith(("task=", "prior=", "sampler="))]
    return " ".join([head, *rest])


class FidNetwork:
    """The FID Inception network and the references' features, shared by the groups of one aggregate call: one
    network per weights file and device, the features of a reference set computed once per (its images' bytes,
    image size), so the groups of a sweep on the same images pay for them once."""

    def __init__(self, random_weights: bool = False):
        self.random_weights = random_weights
        self._nets: dict = {}
        self._references: dict = {}

    def network(self, weights_path, device):
        key = (weights_path, str(device))
        if key not in self._nets:
            from ..metrics import InceptionFeatures

            self._nets[key] = InceptionFeatures(weights_path=weights_path, random_weights=self.random_weights,
                                                device=device)
        return self._nets[key]

    def features(self, files: list[Path], size: int, weights_path, device) -> np.ndarray:
        """The Inception features of the image files, in batches of 16."""
        import torch

        net, out = self.network(weights_path, device), []
        for start in range(0, len(files), 16):
            batch = torch.stack([load_image(p, size)[0] for p in files[start:start + 16]]).to(device)
            with torch.no_grad():
                out.append(net(batch).cpu().numpy())
        return np.concatenate(out)

    def reference_features(self, files: list[Path], size: int, weights_path, device) -> np.ndarray:
        """features() of the reference images, keyed by their contents: every job writes its own label/ copies."""
        contents = tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in files)
        key = (weights_path, str(device), size, contents)
        if key not in self._references:
            self._references[key] = self.features(files, size, weights_path, device)
        return self._references[key]


def _fid_kid(jobs: list[dict], records: list[dict], fid_network: FidNetwork) -> dict:
    """FID and KID of all reconstructions of the group against all its ground truths (records: the
    group's unique records, each with `_dir`, its job directory)."""
    from ..metrics import check_weights, fid_from_features, kid

    cfg = jobs[0]["cfg"]
    if cfg is None or cfg.data.get("kind") == "gmm":
        return {"fid_skipped": "not an image run"}
    paths = OmegaConf.to_container(cfg.paths, resolve=True)
    if not fid_network.random_weights:
        try:
            check_weights(["fid", "kid"], paths)
        except UserError as err:
            log.warning("FID/KID skipped: %s", err)
            return {"fid_skipped": str(err)}
    size = int(prior_image_size(cfg.prior))  # ADM, upsampler or latent prior: the size of the images
    fake = [r["_dir"] / "recon" / f"{r['id']}_{r['k']}.png" for r in records if not r.get("failed")]
    real = sorted({r["_dir"] / "label" / f"{r['id']}.png" for r in records})
    fake = [p for p in fake if p.exists()]
    real = [p for p in real if p.exists()]
    if len(fake) < 2 or len(real) < 2:
        reason = f"FID/KID need at least 2 images on each side (have {len(fake)} samples, {len(real)} references)"
        log.warning("FID/KID skipped: %s", reason)
        return {"fid_skipped": reason}
    device = resolve_device("auto")  # a GPU where there is one (the paper's 1000 images per group)
    weights = paths.get("fid_inception")
    f_fake = fid_network.features(fake, size, weights, device)
    f_real = fid_network.reference_features(real, size, weights, device)
    k_mean, k_std = kid(f_fake, f_real, subsets=100, subset_size=min(100, len(fake), len(real)),
                        generator=np.random.default_rng(0))
    result = {"fid": float(fid_from_features(f_fake, f_real)), "kid": {"mean": float(k_mean), "std": float(k_std)},
              "fid_n_samples": len(fake), "fid_n_references": len(real)}
    if fid_network.random_weights:
        result["fid_note"] = "random Inception weights (--random-weights): numbers are meaningless"
    return result


def diversity(jobs: list[dict]) -> dict | None:
    """The group's diversity (several samples per measurement): each job's summary holds the means over its
    measurements of the per-pixel std, pairwise L2 and pairwise LPIPS, with their count; the group's are the
    means weighted by those counts, i.e. the means over all the group's measurements."""
    parts = []
    for job in jobs:
        part = (job["summary"] or {}).get("metrics", {}).get("diversity")
        if part and part.get("n_measurements"):
            parts.append(part)
    if not parts:
        return None
    n = sum(p["n_measurements"] for p in parts)
    keys = [k for k in parts[0] if k != "n_measurements" and all(k in p for p in parts)]
    return {**{k: float(sum(p[k] * p["n_measurements"] for p in parts) / n) for k in keys}, "n_measurements": n}


def devices(jobs: list[dict]) -> dict:
    """What a group's finished jobs ran on: {"devices": {field: {value: [job dirs]}}, "mixed_devices": the
    fields with more than one value}, from each summary.json's device (its type: cuda:0 and cuda:1 are one
    kind), device_name and precision. A field a summary lacks (older runs wrote neither device_name nor
    precision) is unknown, not a difference."""
    seen: dict[str, dict[str, list[str]]] = {field: {} for field in DEVICE_FIELDS}
    for job in sorted(jobs, key=lambda j: str(j["dir"])):
        summary = job["summary"] or {}
        for field in DEVICE_FIELDS:
            value = summary.get(field)
            if value is None:
                continue
            value = str(value).split(":")[0] if field == "device" else str(value)
            seen[field].setdefault(value, []).append(str(job["dir"]))
    return {"devices": seen, "mixed_devices": [field for field in DEVICE_FIELDS if len(seen[field]) > 1]}


def class_policy(jobs: list[dict]) -> str | None:
    """The class label policy of a group (dps_map.runner.rundir.class_label_policy; None: an unconditional
    prior), from its jobs' run.json (summary.json where run.json predates the field). The policy is part of
    the config, hence of the digest, so a group has one."""
    for job in sorted(jobs, key=lambda j: str(j["dir"])):
        if job["marker"].get("class_label_policy"):
            return job["marker"]["class_label_policy"]
        if (job["summary"] or {}).get("class_label_policy"):
            return job["summary"]["class_label_policy"]
    return None


def job_status(job: dict) -> dict:
    """Whether a job has finished: 'broken' (a file of it cannot be read: `error` says which), 'running' (a live
    process holds its run.lock), 'unfinished' (no summary.json: stopped before the end, or still queued to
    resume) or 'complete' (its summary exists and every expected (id, k) has a record), with its counts."""
    records = {(r["id"], r["k"]) for r in job["records"]}
    summary = job["summary"]
    expected = summary.get("n_expected") if summary else None
    holder = lock_holder(job["dir"])
    if job["error"] is not None:
        status = "broken"
    elif holder is not None:
        status = "running"
    elif summary is None or (expected is not None and len(records) < expected):
        status = "unfinished"
    else:
        status = "complete"
    out = {"dir": str(job["dir"]), "status": status, "n_records": len(records), "n_expected": expected}
    if holder is not None:
        out["holder"] = holder
    if job["error"] is not None:
        out["error"] = job["error"]
    return out


def aggregate_group(jobs: list[dict], random_weights: bool = False, fid_network: FidNetwork | None = None) -> dict:
    """Merged per-sample records of one config's jobs: counts, means and standard errors, FID/KID.
    Each (id, k) is counted once. A group with a missing shard or a running or unfinished job is
    marked incomplete: its means go to `partial_metrics`, never to `metrics`, and FID/KID are skipped.
    fid_network: the network and reference features shared with the sweep's other groups (default: its own)."""
    records = [dict(r, _dir=job["dir"]) for job in sorted(jobs, key=lambda j: str(j["dir"])) for r in job["records"]]
    label = _label(next((j for j in jobs if j["error"] is None), jobs[0]))
    records, n_duplicates = unique_records(records, f"group {label}")
    ok = [r for r in records if not r.get("failed")]
    extra = extra_metrics(jobs)
    out = {"label": label, "jobs": [str(j["dir"]) for j in jobs], "shards": _shards(jobs),
           "n_measurements": len({r["id"] for r in records}), "n_samples": len(ok),
           "n_failed": len(records) - len(ok), "n_duplicate_records": n_duplicates,
           "metrics": {m: mean_sem(r.get(m) for r in ok) for m in (*PER_SAMPLE, *score_fields(extra))
                       if any(m in r for r in ok)},
           "cost": {"seconds_per_sample": mean_sem(r.get("seconds") for r in records)["mean"],
                    "nfe_per_sample": mean_sem(r.get("nfe") for r in records)["mean"],
                    "vjp_per_sample": mean_sem(r.get("vjp") for r in records)["mean"]}}
    if extra:
        out["extra_metrics"] = extra
    out.update(image_ids_and_preprocessing(jobs, records))
    out["class_label_policy"] = class_policy(jobs)
    out.update(devices(jobs))
    for field in out["mixed_devices"]:
        log.warning("group %s: its jobs ran on different devices: %s %s", label, field,
                    ", ".join(sorted(out["devices"][field])))
    if out["shards"]["missing"]:
        log.warning("group %s: shards %s of %d missing (incomplete)", out["label"], out["shards"]["missing"],
                    out["shards"]["num_shards"])
    unfinished = [s for s in (job_status(j) for j in sorted(jobs, key=lambda j: str(j["dir"])))
                  if s["status"] != "complete"]
    out["complete"] = not unfinished and not out["shards"]["missing"]
    if unfinished:
        out["incomplete_jobs"] = unfinished
        for s in unfinished:
            log.warning("group %s: job %s is %s (%d of %s records)", label, s["dir"], s["status"], s["n_records"],
                        s["n_expected"] if s["n_expected"] is not None else "?")
    if not records:  # Gaussian-mixture runs: one summary per job, no per-sample image records
        summaries = [j["summary"] for j in jobs if j["summary"] is not None]
        out["n_samples"] = sum(s.get("n_samples", 0) for s in summaries)
        out["n_failed"] = sum(s.get("n_failed", 0) for s in summaries)
        out["metrics"] = {k: mean_sem(s["metrics"].get(k) for s in summaries)
                          for k in (summaries[0]["metrics"] if summaries else {})
                          if isinstance(summaries[0]["metrics"][k], (int, float))}
    elif out["complete"]:
        out["metrics"].update(_fid_kid(jobs, records, fid_network or FidNetwork(random_weights)))
        spread = diversity(jobs)
        if spread is not None:
            out["metrics"]["diversity"] = spread
    if not out["complete"]:  # never silently averaged: the partial means are kept apart
        out["partial_metrics"], out["metrics"] = out["metrics"], {}
    return out


def image_ids_and_preprocessing(jobs: list[dict], records: list[dict]) -> dict:
    """The sorted ids of the group's images (from its jobs' summary.json, else its records) and how they
    were preprocessed (policy and image size of the first summary, original sizes of all), so a table can
    be redone on the same images."""
    ids, prep = {r["id"] for r in records}, None
    for job in sorted(jobs, key=lambda j: str(j["dir"])):
        summary = job["summary"] or {}
        ids.update(summary.get("image_ids", []))
        if summary.get("preprocessing"):
            part = summary["preprocessing"]
            if prep is None:
                prep = {k: v for k, v in part.items() if k not in ("original_sizes", "sources")}
                prep.update(original_sizes={}, sources={})
            prep["original_sizes"].update(part.get("original_sizes", {}))
            prep["sources"].update(part.get("sources", {}))
    ids.discard("gmm")
    return {"image_ids": sorted(ids), **({"preprocessing": prep} if prep is not None else {})}


def _fmt(stat) -> str:
    if not isinstance(stat, dict) or stat.get("mean") is None:
        return "" if not isinstance(stat, float) else f"{stat:.4g}"
    return f"{stat['mean']:.4g} ± {stat['sem']:.2g}" if stat.get("sem") is not None else f"{stat['mean']:.4g}"


def to_markdown(result: dict) -> str:
    extra = list(dict.fromkeys(n for g in result["groups"].values() for n in g.get("extra_metrics", [])))
    cols = ["psnr", "ssim", "lpips", "fid", "kid"]
    spread = any("diversity" in g["metrics"] for g in result["groups"].values())
    lines = [f"# Sweep {result['sweep_dir']}", "",
             f"{result['total']['n_groups']} configs, {result['total']['n_jobs']} jobs, "
             f"{result['total']['n_samples']} samples ({result['total']['n_failed']} failed). "
             "Mean ± standard error over samples; FID/KID over all samples of a config"
             + ("; diversity: per-pixel std, pairwise L2 and LPIPS among the samples of a measurement, mean over "
                "measurements" if spread else "") + ".", "",
             "| config | samples | failed | shards | " + " | ".join(cols + extra) + " | s/sample | NFE |"
             + (" pixel std | pairwise L2 | pairwise LPIPS |" if spread else ""),
             "|---" * (len(cols) + len(extra) + 6 + 3 * spread) + "|"]
    for g in sorted(result["groups"].values(), key=lambda g: g["label"]):
        m = g["metrics"]
        kid_v = m.get("kid", {}).get("mean") if isinstance(m.get("kid"), dict) else None
        vals = [_fmt(m.get(c)) for c in cols[:3]] + [_fmt(m.get("fid")), "" if kid_v is None else f"{kid_v:.4g}"] \
            + [_fmt(m.get(c)) for c in extra]
        if not g.get("complete", True):
            vals = ["INCOMPLETE"] + [""] * (len(cols) + len(extra) - 1)
        shards = g["shards"]
        flag = " **MIXED DEVICES**" if g.get("mixed_devices") else ""
        shard_txt = f"{len(shards['present'])}/{shards['num_shards']}"
        cost = g["cost"]
        div = m.get("diversity") or {}
        lines.append(f"| {g['label']}{flag} | {g['n_samples']} | {g['n_failed']} | {shard_txt} | " + " | ".join(vals)
                     + f" | {_fmt(cost.get('seconds_per_sample'))} | {_fmt(cost.get('nfe_per_sample'))} |"
                     + ("".join(f" {_fmt(div.get(k))} |" for k in ("pixel_std", "pairwise_l2", "pairwise_lpips"))
                        if spread else ""))
    incomplete = [g for g in sorted(result["groups"].values(), key=lambda g: g["label"]) if not g.get("complete", True)]
    if incomplete:
        lines += ["", "Incomplete groups (not averaged; their partial means are under `partial_metrics` in "
                  "aggregate.json). Rerun the sweep to finish them:", ""]
        for g in incomplete:
            if g["shards"]["missing"]:
                lines.append(f"- {g['label']}: shards {g['shards']['missing']} of {g['shards']['num_shards']} missing")
            for s in g.get("incomplete_jobs", []):
                expected = s["n_expected"] if s["n_expected"] is not None else "?"
                what = f"broken ({s['error']})" if s["status"] == "broken" else s["status"]
                lines.append(f"- {g['label']}: `{s['dir']}` {what}, {s['n_records']} of {expected} records")
    lost = [b for b in result.get("broken_jobs", []) if b["group"] is None]
    if lost:
        lines += ["", "Broken jobs of no known config (left out of every group: their run.json cannot be read and "
                  "their saved config matches no group):", ""]
        lines += [f"- `{b['dir']}`: {b['error']}" for b in lost]
    mixed = [g for g in sorted(result["groups"].values(), key=lambda g: g["label"]) if g.get("mixed_devices")]
    if mixed:
        lines += ["", "Groups whose jobs ran on different devices (marked MIXED DEVICES: their timings differ and "
                  "their samples may; the jobs of each value are under `devices` in aggregate.json):", ""]
        for g in mixed:
            parts = [f"{field} " + ", ".join(f"{value} ({len(dirs)} job{'s' if len(dirs) > 1 else ''})"
                                             for value, dirs in sorted(g["devices"][field].items()))
                     for field in g["mixed_devices"]]
            lines.append(f"- {g['label']}: " + "; ".join(parts))
    policies: dict[str, list[str]] = {}
    for g in sorted(result["groups"].values(), key=lambda g: g["label"]):
        if g.get("class_label_policy"):
            policies.setdefault(g["class_label_policy"], []).append(g["label"])
    if policies:  # the class a class-conditional prior was told: "data" is the image's own (docs/paper.md)
        lines += ["", "Class labels given to the class-conditional prior (`class_label_policy`): "
                  + "; ".join(f"`{p}` ({len(ls)} config{'s' if len(ls) > 1 else ''})"
                              for p, ls in sorted(policies.items())) + "."]
    dupes = sum(g.get("n_duplicate_records", 0) for g in result["groups"].values())
    if dupes:
        lines += ["", f"{dupes} duplicate records of the same (id, k) ignored (each sample counted once)."]
    skipped = {g["metrics"]["fid_skipped"] for g in result["groups"].values() if "fid_skipped" in g["metrics"]}
    if skipped:
        lines += ["", "FID/KID skipped: " + "; ".join(sorted(skipped))]
    return "\n".join(lines) + "\n"


def aggregate(root, random_weights: bool = False) -> dict:
    """Aggregate the sweep below root; writes root/aggregate.json and root/aggregate.md."""
    root = Path(root)
    jobs = find_jobs(root)
    if not jobs:
        raise UserError(f"no dps-map run directories (with {RUN_FILE}) below '{root}'")
    grouped = group_jobs(jobs)
    fid_network = FidNetwork(random_weights)  # one network, each reference set's features once
    groups = {digest: aggregate_group(js, random_weights, fid_network) for digest, js in sorted(grouped.items())}
    group_of = {str(j["dir"]): groups[digest]["label"] for digest, js in grouped.items() for j in js}
    broken = [{"dir": str(j["dir"]), "error": j["error"], "group": group_of.get(str(j["dir"]))}
              for j in jobs if j["error"] is not None]
    for b in broken:
        log.warning("broken job %s (%s): left out of %s", b["dir"], b["error"],
                    f"group {b['group']}, marked incomplete" if b["group"] else "every group")
    result = {"sweep_dir": str(root), "groups": groups, "broken_jobs": broken,
              "total": {"n_groups": len(groups), "n_jobs": len(jobs),
                        "n_samples": sum(g["n_samples"] for g in groups.values()),
                        "n_failed": sum(g["n_failed"] for g in groups.values())},
              "incomplete_groups": sorted(g["label"] for g in groups.values() if not g["complete"]),
              "mixed_device_groups": sorted(g["label"] for g in groups.values() if g["mixed_devices"])}
    atomic_write_json(root / "aggregate.json", result)
    atomic_write_bytes(root / "aggregate.md", to_markdown(result).encode())
    return result


def log_wandb(result: dict, root: Path, project: str) -> None:
    """One wandb run (offline unless WANDB_MODE says otherwise) with the table and the summary."""
    import wandb

    from .loggers import flatten

    run = wandb.init(project=project, mode=os.environ.get("WANDB_MODE", "offline"), dir=str(root),
                     name=f"aggregate/{root.name}", job_type="aggregate", reinit="finish_previous")
    extra = list(dict.fromkeys(n for g in result["groups"].values() for n in g.get("extra_metrics", [])))
    cols = ["config", "n_samples", "n_failed", "psnr", "ssim", "lpips", "fid", *extra]
    table = wandb.Table(columns=cols)
    for g in result["groups"].values():
        m = g["metrics"]
        table.add_data(g["label"], g["n_samples"], g["n_failed"],
                       *[(m.get(c) or {}).get("mean") for c in ("psnr", "ssim", "lpips")], m.get("fid"),
                       *[(m.get(c) or {}).get("mean") for c in extra])
    run.log({"aggregate": table})
    for key, value in flatten({"total": result["total"],
                                **{g["label"]: g["metrics"] for g in result["groups"].values()}}).items():
        run.summary[key] = value
    run.finish()
