"""What a run's records add up to: the summary (means and standard errors), the per-measurement grid
image, and the one-line report a finished run prints."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from ..config.metrics import BUILTIN, score_fields
from ..errors import UserError
from ..io import atomic_write_bytes, iter_jsonl, load_image, unique_records

GRID_PADDING = 2  # pixels around each tile of grids/<id>.png (scoring.stored_naive reads the first tile)


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


#: the numeric fields of a sample's record in metrics.jsonl (a number, or null where undefined): the scores of the
#: built-in per-sample metrics (and their naive_ baseline), the misfit and the cost
NUMERIC_FIELDS = (*score_fields(BUILTIN), "misfit", "seconds", "nfe", "forward", "vjp", "steps")


def record_problem(record: dict, extra=()) -> str | None:
    """What makes a metrics.jsonl record unusable (None: it is fine): a sample's record needs a string `id`, an
    integer `k` and numbers in NUMERIC_FIELDS and in the fields of the user's metrics `extra` (their names,
    config.metrics.extra_names); the Gaussian-mixture cost record has k "all"."""
    if not isinstance(record.get("id"), str):
        return "no string 'id'"
    k = record.get("k")
    if k == "all":
        return None
    if not isinstance(k, int) or isinstance(k, bool):
        return "no integer 'k'" if k is None else f"'k' is {k!r}, not an integer"
    for name in (*NUMERIC_FIELDS, *score_fields(extra)):
        value = record.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            return f"'{name}' is {value!r}, not a number"
    return None


def read_records(path, extra=()) -> list[dict]:
    """The records of a metrics.jsonl (a line cut short by a crash is skipped with a warning, io.iter_jsonl); a
    record that parses but is unusable (no k, a string PSNR: edited by hand or by another tool) raises UserError
    naming the file and the line, before anything is written. `extra`: the names of the user's metrics."""
    path = Path(path)
    records = [r for _, r in iter_jsonl(path) if r is not None]
    for number, record in enumerate(records, 1):
        problem = record_problem(record, extra)
        if problem is not None:
            raise UserError(f"'{path}' record {number} ({str(record)[:60]}) is unusable: {problem}; fix or delete "
                            "that line (a deleted sample is recomputed on the next run)")
    return records


def mean_sem(values) -> dict:
    """Mean, sample standard deviation (ddof=1), standard error std/sqrt(n) and count of the finite values
    (None where undefined)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "sem": None, "n": 0}
    std = float(v.std(ddof=1)) if v.size > 1 else None
    return {"mean": float(v.mean()), "std": std, "sem": None if std is None else std / float(np.sqrt(v.size)),
            "n": int(v.size)}


def summarize_images(records: list[dict], ids: set, extra=()) -> dict:
    """Counts, means and standard errors over the records of these ids, each (id, k) counted once, of the
    built-in per-sample metrics, the misfit and the user's metrics `extra` (their names)."""
    records, n_duplicates = unique_records([r for r in records if r["id"] in ids], "metrics.jsonl")
    ok = [r for r in records if not r.get("failed")]
    metric_names = sorted({k for r in ok for k in r if k in (*BUILTIN, "misfit", *extra)})
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
                  for name in (*BUILTIN, *(n for n in extra if any(f"naive_{n}" in r for r in per_id.values())))},
        "cost": {"seconds_per_sample": mean_sem(r["seconds"] for r in records)["mean"],
                 "nfe_per_sample": mean_sem(r["nfe"] for r in records)["mean"],
                 "forward_per_sample": mean_sem(r["forward"] for r in records)["mean"],
                 "vjp_per_sample": mean_sem(r["vjp"] for r in records)["mean"],
                 "steps": records[0]["steps"] if records else None},
    }


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
