"""Provenance of a result: run a command and record how its result files were made.

    python -m tools.provenance --results STEM [STEM ...] [--assets PATH ...] [--append] -- COMMAND ...

runs COMMAND (no shell; wrap a pipeline in `sh -c '...'`; `--stdout STEM.txt` keeps what it prints as a
result file), times it and, if it exits 0, writes
`<out>/<STEM>.provenance.json` beside the result group (`<out>/<STEM>.md`, `.csv`, `.png`, every file
`<STEM>.*` or `<STEM>_*` the command wrote or rewrote; `--files GLOB` adds others). The record holds:

- the command (argv, a shell-quoted string, OMP_NUM_THREADS and the working directory);
- the commit (`git rev-parse HEAD`), whether tracked files differed from it (`dirty`, `dirty_files`);
- `assets`: the sha256 of every shipped asset the run read — each weights file under dps_map/assets/
  that the command or any Python process it started opened (seen by an audit hook installed through a
  `sitecustomize` on PYTHONPATH), plus any `--assets PATH` declared (for a step that reuses finished run
  directories and so opens no weights). An asset that changed during the run is an error;
- the machine (host, CPU model, cores, Python, torch, GPU), start and end dates (UTC, ISO 8601), the wall
  time and the 1-minute load average at start and end;
- `files`: the sha256 of each result file it covers, so `make check-results` can tell a file that was
  changed afterwards;
- `stale`: null, or a reason (`--stale STEM REASON`) the check reports but accepts.

A result made by several commands (sweeps, then a table) is one record with one step per command:
`--append` adds a step to the existing record of STEM. Each step records the commit it started at (others may
commit while a long pipeline runs; `commit_end` when HEAD moved during the step: a driver that prints the
commit when it finishes names that one); `commit` is the first step's, `commits` every distinct one.
Other operations, no command run:

    python -m tools.provenance --stale STEM "REASON"      # mark a result stale (or --stale STEM "" to clear)
    python -m tools.provenance --amend STEM --note TEXT  # rehash its files after a hand edit, say why
    python -m tools.provenance --show STEM
    python -m tools.provenance --results STEM --transcribed "README.md at <commit>" --note "WHY NOT RERUN"

A transcribed record (numbers measured earlier whose run output was not kept, copied into a result file so
that the README can cite them) is always stale: the check lists it until the numbers are remeasured.

`tools/check_results.py` (`make check-results`) reads these records.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dps_map.io import sha256_file

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
ASSETS = ROOT / "dps_map" / "assets"
#: file suffixes under dps_map/assets that are weights (the cards .json and sample grids .png are not)
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".npz", ".bin", ".ckpt")
SUFFIX = ".provenance.json"
SCHEMA = 1
LOG_ENV = "DPS_MAP_PROVENANCE_LOG"

# An audit hook in every Python process the command starts (multiprocessing's spawned workers too, since
# they inherit PYTHONPATH): each opened file under ASSETS is appended to the log named by LOG_ENV.
_SITECUSTOMIZE = '''
import os as _os, sys as _sys
_log = _os.environ.get("{log_env}")
_assets = {assets!r}
if _log:
    _seen = set()
    def _dps_map_provenance_hook(event, args):
        if event != "open" or not args or not isinstance(args[0], (str, bytes, _os.PathLike)):
            return
        try:
            p = _os.fsdecode(args[0])
            if not _os.path.isabs(p):
                p = _os.path.join(_os.getcwd(), p)
            p = _os.path.realpath(p)
        except Exception:
            return
        if p.startswith(_assets + _os.sep) and p not in _seen:
            _seen.add(p)
            with open(_log, "a") as f:
                f.write(p + "\\n")
    _sys.addaudithook(_dps_map_provenance_hook)
{chain}
'''


def rel(path: Path) -> str:
    """path relative to the repository root when inside it (records are portable across clones)."""
    path = Path(path).resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def is_weights(path: Path) -> bool:
    return path.suffix in WEIGHT_SUFFIXES


def shipped_assets() -> list[Path]:
    """Every weights file under dps_map/assets/ (the shipped prior, adapters, references)."""
    return sorted(p for p in ASSETS.rglob("*") if p.is_file() and is_weights(p))


def _git(*args: str) -> str:
    r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return r.stdout.rstrip() if r.returncode == 0 else ""


def git_state() -> dict:
    dirty = [line[3:] for line in _git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    return {"commit": _git("rev-parse", "HEAD").strip() or None, "dirty": bool(dirty), "dirty_files": dirty}


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"host": socket.gethostname(), "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # torch absent: still a record
        info["torch"] = None
        info["gpu"] = None
    return info


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def record_path(stem: str, out: Path = RESULTS) -> Path:
    return Path(out) / f"{stem}{SUFFIX}"


def load(stem: str, out: Path = RESULTS) -> dict:
    return json.loads(record_path(stem, out).read_text())


def save(record: dict, stem: str, out: Path = RESULTS) -> Path:
    path = record_path(stem, out)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def result_files(stem: str, out: Path, extra: list[str] = ()) -> list[Path]:
    """The files of a result group: <stem>.* and <stem>_* in out (not provenance records), plus extra globs."""
    out = Path(out)
    files = [p for p in out.iterdir() if p.is_file() and not p.name.endswith(SUFFIX)
             and not p.name.endswith(".tmp")
             and (p.name.startswith(stem + ".") or p.name.startswith(stem + "_"))
             and not any(p.name.startswith(other + ".") for other in _other_stems(out, stem))]
    for pattern in extra:
        files += [p for p in out.rglob("*") if p.is_file() and fnmatch.fnmatch(p.relative_to(out).as_posix(), pattern)]
    return sorted(set(files))


def _other_stems(out: Path, stem: str) -> list[str]:
    """Stems of other records that start with stem + '_' (frontier vs frontier_tiny): not ours."""
    return [p.name[: -len(SUFFIX)] for p in Path(out).glob(f"{stem}_*{SUFFIX}")]


def hash_files(files: list[Path], out: Path) -> dict:
    return {p.relative_to(out).as_posix(): sha256_file(p) for p in files}


def _sitecustomize_dir(log: Path) -> Path:
    d = Path(tempfile.mkdtemp(prefix="dps_map_prov_"))
    chain = ""
    # an existing sitecustomize elsewhere on the path still runs after ours
    chain = ("try:\n    import importlib.util as _u, sys as _s\n"
             "    _p = [x for x in _s.path if x != %r]\n"
             "    _spec = __import__('importlib.machinery').machinery.PathFinder.find_spec('sitecustomize', _p)\n"
             "    if _spec and _spec.loader: _spec.loader.exec_module(_u.module_from_spec(_spec))\n"
             "except Exception:\n    pass\n") % str(d)
    (d / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(log_env=LOG_ENV, assets=str(ASSETS.resolve()),
                                                                chain=chain))
    return d


def run_step(command: list[str], declared: list[str], stdout: Path | None = None) -> dict:
    """Run command with the audit hook; the step's record (command, times, exit code, assets read)."""
    before = {rel(p): sha256_file(p) for p in shipped_assets()}
    commit = git_state()["commit"]
    with tempfile.TemporaryDirectory(prefix="dps_map_prov_log_") as tmp:
        log = Path(tmp) / "opened.txt"
        log.touch()
        site = _sitecustomize_dir(log)
        env = dict(os.environ)
        env[LOG_ENV] = str(log)
        env["PYTHONPATH"] = os.pathsep.join([str(site)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        started, load0, t0 = now(), os.getloadavg()[0], time.perf_counter()
        try:
            if stdout is None:
                code = subprocess.call(command, env=env)
            else:  # tee the command's standard output into a result file (written whole at the end)
                proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, bufsize=1)
                lines = []
                for line in proc.stdout:
                    sys.stdout.write(line)
                    lines.append(line)
                code = proc.wait()
                if code == 0:
                    stdout.parent.mkdir(parents=True, exist_ok=True)
                    stdout.write_text("".join(lines))
        except KeyboardInterrupt:
            code = 130
        wall = time.perf_counter() - t0
        opened = sorted({rel(Path(p)) for p in log.read_text().splitlines() if p})
        for f in site.iterdir():
            f.unlink()
        site.rmdir()
    weights = [p for p in opened if is_weights(Path(p))]
    used = sorted(set(weights) | {rel(Path(p)) for p in declared})
    assets, changed = {}, []
    for p in used:
        path = ROOT / p if not Path(p).is_absolute() else Path(p)
        if not path.is_file():
            raise SystemExit(f"provenance: declared asset {p} does not exist")
        digest = sha256_file(path)
        if p in before and before[p] != digest:
            changed.append(p)
        assets[p] = digest
    commit_end = git_state()["commit"]
    return {"commit": commit, **({"commit_end": commit_end} if commit_end != commit else {}),
            "command": shlex.join(command), "argv": command, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cwd": rel(Path.cwd()), "started": started, "finished": now(), "wall_s": round(wall, 1),
            "load_avg_start": round(load0, 2), "load_avg_end": round(os.getloadavg()[0], 2), "exit_code": code,
            "assets_opened": weights, "assets_declared": sorted(rel(Path(p)) for p in declared),
            "assets": assets, "assets_changed_during_run": changed}


def _combine(record: dict) -> dict:
    """Top-level summary of a record's steps: command(s), union of assets, wall time, dates."""
    steps = record["steps"]
    assets = {}
    for s in steps:
        assets.update(s["assets"])
    record["command"] = " && ".join(s["command"] for s in steps)
    record["commits"] = list(dict.fromkeys(s.get("commit") or record["commit"] for s in steps))
    record["assets"] = dict(sorted(assets.items()))
    record["wall_s"] = round(sum(s["wall_s"] for s in steps), 1)
    record["started"], record["finished"] = steps[0]["started"], steps[-1]["finished"]
    return record


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", nargs="+", default=[], metavar="STEM", help="result groups the command writes")
    p.add_argument("--out", type=Path, default=RESULTS, help="the results folder (default experiments/results)")
    p.add_argument("--assets", nargs="*", default=[], help="shipped files the run depends on besides those it opens")
    p.add_argument("--files", nargs="*", default=[], help="more result files (globs relative to --out)")
    p.add_argument("--append", action="store_true", help="add a step to STEM's existing record")
    p.add_argument("--stdout", default=None, metavar="NAME", help="also write the command's standard output to "
                   "<out>/NAME (a result file of the group, e.g. STEM.txt)")
    p.add_argument("--note", default=None)
    p.add_argument("--stale", nargs=2, metavar=("STEM", "REASON"))
    p.add_argument("--amend", metavar="STEM")
    p.add_argument("--show", metavar="STEM")
    p.add_argument("--transcribed", metavar="SOURCE", help="the files of --results STEM were copied by hand from "
                   "SOURCE (numbers measured earlier whose run output was not kept): a record marked stale with "
                   "--note's reason and no asset hashes")
    args = p.parse_args(argv)
    out = args.out.resolve()

    if args.show:
        print(json.dumps(load(args.show, out), indent=1))
        return 0
    if args.stale:
        stem, reason = args.stale
        record = load(stem, out)
        record["stale"] = reason or None
        save(record, stem, out)
        print(f"{record_path(stem, out)}: stale = {record['stale']!r}")
        return 0
    if args.amend:
        if not args.note:
            p.error("--amend needs --note saying what was edited by hand and why")
        record = load(args.amend, out)
        old = record["files"]
        new = {name: sha256_file(out / name) for name in old if (out / name).is_file()}
        record.setdefault("amendments", []).append(
            {"date": now(), "note": args.note, "commit": git_state()["commit"],
             "changed": sorted(n for n in new if new[n] != old.get(n))})
        record["files"] = new
        save(record, args.amend, out)
        print(f"{record_path(args.amend, out)}: rehashed {len(new)} file(s)")
        return 0
    if args.transcribed:
        if not args.results or not args.note:
            p.error("--transcribed SOURCE needs --results STEM and --note REASON (why it cannot be rerun now)")
        git = git_state()
        for stem in args.results:
            files = result_files(stem, out, args.files)
            if not files:
                p.error(f"--transcribed: no file {stem}.* in {out}")
            step = {"commit": git["commit"], "command": f"transcribed by hand from {args.transcribed}", "argv": [],
                    "started": now(), "finished": now(), "wall_s": 0.0, "exit_code": 0, "assets": {}}
            record = {"schema": SCHEMA, "result": stem, **git, "machine": machine(), "steps": [step],
                      "transcribed": args.transcribed, "assets_unknown": True,
                      "stale": f"transcribed from {args.transcribed}, not rerun: {args.note}", "note": None,
                      "files": hash_files(files, out)}
            save(_combine(record), stem, out)
            print(f"provenance: {record_path(stem, out)} (transcribed, stale)")
        return 0
    if not command or not args.results:
        p.error("give --results STEM ... -- COMMAND (or --stale/--amend/--show/--transcribed)")

    git = git_state()
    step = run_step(command, args.assets, out / args.stdout if args.stdout else None)
    if step["exit_code"] != 0:
        print(f"provenance: command exited {step['exit_code']}; no record written", file=sys.stderr)
        return step["exit_code"]
    if step["assets_changed_during_run"]:
        print(f"provenance: assets changed during the run: {step['assets_changed_during_run']}; no record written",
              file=sys.stderr)
        return 3
    for stem in args.results:
        if args.append and record_path(stem, out).is_file():
            record = load(stem, out)
            record["dirty"] = record["dirty"] or git["dirty"]
            record["dirty_files"] = sorted(set(record["dirty_files"]) | set(git["dirty_files"]))
            record["steps"].append(step)
        else:
            record = {"schema": SCHEMA, "result": stem, **git, "machine": machine(), "steps": [step],
                      "stale": None, "note": None}
        if args.note:
            record["note"] = args.note if not record.get("note") else record["note"] + " " + args.note
        t_start = _dt.datetime.fromisoformat(record["steps"][0]["started"]).timestamp() - 1
        files = [f for f in result_files(stem, out, args.files) if f.stat().st_mtime >= t_start]
        stale_files = [f for f in result_files(stem, out, args.files) if f.stat().st_mtime < t_start]
        if stale_files:
            print(f"provenance: {stem}: not written by this record's commands, left out: "
                  f"{[f.name for f in stale_files]}", file=sys.stderr)
        record["files"] = hash_files(files, out)
        save(_combine(record), stem, out)
        print(f"provenance: {record_path(stem, out)} ({len(files)} file(s), assets "
              f"{', '.join(Path(a).name for a in record['assets']) or 'none'}, {record['wall_s'] / 60:.1f} min)")
        if not files:
            print(f"provenance: {stem}: the command wrote no file {stem}.* in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
