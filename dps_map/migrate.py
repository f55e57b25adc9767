"""Migrate run directories written by dps-map 0.1 to the run.json of this version (schema 2).

    python -m dps_map.migrate DIR [DIR ...] [--dry-run] [--force]

A run directory holds run.json (its config digest) beside the outputs; dps-map 0.2 computes the digest
another way (help text, paths and the tuned table left out; dps_map/config/digest.py), so it refuses an
0.1 directory instead of mixing or redoing its outputs. For every run directory at or below DIR this
command reads the config Hydra saved (.hydra/config.yaml), checks that it gives the 0.1 digest recorded in
run.json (so the outputs are known to come from that config), and rewrites run.json with the new digest,
keeping the recorded weights. A directory whose saved config does not give its recorded digest (edited,
or composed on another machine: the 0.1 digest held absolute install paths) is reported and left alone;
--force migrates it anyway, trusting the saved config. A directory without .hydra/ (a run made from
Python) cannot be migrated: rerun it.

Each directory is reported on its own line as it is done (a file that cannot be read: "DIR: FAILED: ..." on
stderr, that directory left as it was, the others still migrated), then one summary line. Exit code 0 if every
directory is migrated (or already was), 1 if some were left alone (digest mismatch, no saved config), 2 if some
failed or no run directory was found.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from omegaconf import OmegaConf

from .config import config_digest, resolved
from .config.tuned import table_value
from .errors import UserError
from .io import atomic_write_json, first_line, read_json
from .runner.rundir import RUN_FILE, SCHEMA, run_dirs, write_marker

#: what the 0.1 digest left out: these top-level keys, data.shard/num_shards, and `_target_`s starting with
#: "dps_map."; and it put the tuned step sizes of the built-in samplers back in as task.zeta / task.w
V1_NON_OUTPUT = ("hydra", "logger", "progress", "device", "overwrite", "metrics", "tuned", "measurement_batch")
V1_TASK_KEYS = {"zeta": ("dps", "dmap", "dmap_adam", "adapter_dps", "adapter_dmap"), "w": ("dsg",)}


def _strip_builtin_targets(plain: dict) -> dict:
    return {k: (_strip_builtin_targets(v) if isinstance(v, dict) else v) for k, v in plain.items()
            if not (k == "_target_" and isinstance(v, str) and v.startswith("dps_map."))}


def v1_digest(cfg) -> str:
    """The config digest of dps-map 0.1."""
    plain = {k: v for k, v in _strip_builtin_targets(resolved(cfg)).items() if k not in V1_NON_OUTPUT}
    if isinstance(plain.get("prior"), dict) and plain["prior"].get("adapter", False) is None:  # 0.1 had no prior.adapter
        plain["prior"] = {k: v for k, v in plain["prior"].items() if k != "adapter"}
    legacy = {}
    for key, samplers in V1_TASK_KEYS.items():
        values = {s: v for s in samplers if (v := table_value(cfg, key, s)) is not None}
        if values:
            legacy[key] = values
    plain["task"] = {**legacy, **plain.get("task", {})}
    plain["data"] = {k: v for k, v in plain.get("data", {}).items() if k not in ("num_shards", "shard")}
    blob = OmegaConf.to_yaml(OmegaConf.create(plain), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def migrate(run_dir: Path, force: bool = False, dry_run: bool = False) -> str:
    """Migrate one run directory; returns what was done (one line). A file that cannot be read raises UserError
    naming it, before anything is written (every file is read, and the new digest computed, first)."""
    marker = read_json(run_dir / RUN_FILE, "restore it from a backup, or rerun this directory's config")
    if marker.get("schema") == SCHEMA:
        return f"{run_dir}: already schema {SCHEMA}"
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        return f"{run_dir}: NOT migrated: no .hydra/config.yaml to recompute its digest from (rerun it)"
    try:
        cfg = OmegaConf.load(saved)
        old = v1_digest(cfg)
        new = config_digest(cfg)
    except Exception as err:  # noqa: BLE001 - yaml's, OmegaConf's and a resolver's errors share no other base
        raise UserError(f"'{saved}' is not a usable config (corrupt or edited: {first_line(err)}): restore it, or "
                        "rerun this directory's config") from err
    summary = run_dir / "summary.json"
    data = read_json(summary, "rerun this directory's config, or move summary.json away and migrate again") \
        if summary.is_file() else None
    if old != marker.get("digest") and not force:
        return (f"{run_dir}: NOT migrated: its saved config gives digest {old}, run.json records "
                f"{marker.get('digest')} (config edited, or composed with other install paths); --force trusts it")
    if not dry_run:
        if data is not None:  # the summary names the digest too; written first, so run.json is the commit point
            data["digest"] = new
            atomic_write_json(summary, data)
        write_marker(run_dir, new, marker.get("weights") or {})
    return f"{run_dir}: {'would migrate' if dry_run else 'migrated'} {marker.get('digest')} -> {new}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m dps_map.migrate", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", type=Path, help="run directories, or folders (a sweep) holding them")
    p.add_argument("--force", action="store_true", help="migrate even where the saved config does not give the "
                   "recorded 0.1 digest")
    p.add_argument("--dry-run", action="store_true", help="report only")
    args = p.parse_args(argv)
    found = [d for root in args.dirs for d in run_dirs(root)]
    if not found:
        print(f"dps-map: error: no run directories (with {RUN_FILE}) at or below {' '.join(map(str, args.dirs))}",
              file=sys.stderr)
        sys.exit(2)
    counts = {"migrated": 0, "left alone": 0, "failed": 0}
    for run_dir in found:  # each reported as it is done: a later failure never hides an earlier rewrite
        try:
            line = migrate(run_dir, args.force, args.dry_run)
        except (UserError, OSError) as err:
            counts["failed"] += 1
            print(f"dps-map: error: {run_dir}: FAILED, left as it was: {first_line(err)}", file=sys.stderr, flush=True)
            continue
        counts["left alone" if "NOT migrated" in line else "migrated"] += 1
        print(line, flush=True)
    print(f"{len(found)} run director{'y' if len(found) == 1 else 'ies'}: {counts['migrated']} "
          f"{'would be ' if args.dry_run else ''}migrated or already current, {counts['left alone']} left alone, "
          f"{counts['failed']} failed", flush=True)
    if counts["failed"]:
        sys.exit(2)
    if counts["left alone"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
