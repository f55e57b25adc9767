"""Fault injection: what clusters do to jobs. Each test asserts that nothing finished is lost and
nothing is counted twice: two runs on one directory, a lock left by a killed run, SIGKILL in the
middle of a chunk's writes, a full disk, a truncated metrics.jsonl line, duplicates written by an
older version, and a sweep aggregated while some of its jobs are unfinished or running."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from dps_map.errors import UserError
from dps_map.io import read_jsonl
from dps_map.runner import run
from dps_map.runner.lock import LOCK_FILE, OWNER_FILE, RunDirLocked, lock_holder, run_lock

from support import CONF, compose, run_with_guard

ROOT = Path(__file__).resolve().parents[1]
# 2 photographs x 2 crops x 2 samples (one chunk per measurement) with a 4-step random network
TINY = ["progress=false", "prior.random_init=true", "sampler=dps", "sampler.respacing=4", "data.per_photo=2",
        "num_samples=2"]


def config(*overrides):
    return compose(*overrides)


def cli(*args):
    return run_with_guard([sys.executable, "-m", "dps_map.run", *args], cwd=ROOT)


#: `python -m dps_map.run ARGS` that first prints its pid (the pid a lock message names)
PRINT_PID = """
import os, runpy, sys
print(os.getpid(), flush=True)
sys.argv = ["dps_map/run.py", *sys.argv[1:]]
runpy.run_module("dps_map.run", run_name="__main__", alter_sys=True)
"""


def keys(out: Path) -> list:
    return sorted((r["id"], r["k"]) for r in read_jsonl(out / "metrics.jsonl"))


def assert_complete_once(out: Path, n: int) -> dict:
    """n distinct records, none twice, an image for each, no temp file, summary.json agrees."""
    records = keys(out)
    assert len(records) == n and len(set(records)) == n, records
    assert sorted(p.name for p in (out / "recon").glob("*.png")) == sorted(f"{i}_{k}.png" for i, k in records)
    for p in (out / "recon").glob("*.png"):
        Image.open(p).load()  # a complete PNG
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == n and summary["n_duplicate_records"] == 0 and summary["n_expected"] == n
    return summary


def snapshot(out: Path) -> dict:
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*")}


def test_two_concurrent_runs_one_writes_the_other_stops_with_one_line(tmp_path):
    """One run command, twice at once: 4 records, n_samples 4, the loser exits 2 with one line."""
    out = tmp_path / "conc"
    args = ["prior=tiny", "task=sr4", "sampler=dps", "data=demo", "data.per_photo=2", "sampler.respacing=8",
            "metrics=fast", "progress=false", f"hydra.run.dir={out}"]  # the issue's, with 8 steps not 20
    with ThreadPoolExecutor(2) as pool:  # both at once, each guarded against a hang only
        results = list(pool.map(lambda _: run_with_guard([sys.executable, "-c", PRINT_PID, *args], cwd=ROOT),
                                range(2)))
    assert sorted(r.returncode for r in results) == [0, 2], results
    err = next(r.stderr for r in results if r.returncode == 2)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dps-map: error: run dir '{out}' is in use by another dps-map "
                                                   "run (pid "), err
    winner = int(next(r.stdout for r in results if r.returncode == 0).split()[0])
    assert f"(pid {winner} on host " in lines[0] and ", started 20" in lines[0]
    assert_complete_once(out, 4)
    assert (out / LOCK_FILE).read_text() == ""  # released


HOLD = textwrap.dedent("""
    import sys, time
    from dps_map.runner.lock import run_lock
    with run_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


def test_locked_dir_writes_nothing_and_a_killed_holders_lock_is_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    first = run(config(*TINY, "data.num_shards=2", "data.shard=0"), out)  # half of the work finished
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock_holder(out)["pid"] == holder.pid
        before = snapshot(out)
        proc = cli(*TINY, f"hydra.run.dir={out}")
        err = proc.stderr
        assert proc.returncode == 2 and err.count("\n") == 1, err
        assert f"is in use by another dps-map run (pid {holder.pid} on host " in err
        assert snapshot(out) == before  # not even .hydra/ or a log line
        with pytest.raises(RunDirLocked, match=f"pid {holder.pid}"):  # the library call too
            run(config(*TINY), out)
        assert snapshot(out) == before
    finally:
        holder.kill()  # SIGKILL: no clean release, its pid and host stay in run.lock
        holder.wait()
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid and lock_holder(out) is None
    summary = run(config(*TINY), out)
    assert f"taking over the lock of pid {holder.pid} on host" in caplog.text
    assert_complete_once(out, 8)
    assert summary["n_new_samples"] == 8 - first["n_samples"]


def test_fallback_lock_where_flock_is_unsupported(tmp_path, monkeypatch, caplog):
    """Lustre without -o flock: flock fails with ENOSYS; the O_EXCL owner file takes its place."""
    import dps_map.runner.lock as lock

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(lock.fcntl, "flock", no_flock)
    out = tmp_path / "run"
    with run_lock(out):
        owner = json.loads((out / OWNER_FILE).read_text())
        assert owner["pid"] == os.getpid()
    assert not (out / OWNER_FILE).exists() and "flock is not supported" in caplog.text
    # a holder alive (this process's parent) blocks; a dead one on this host is taken over
    (out / OWNER_FILE).write_text(json.dumps({"pid": os.getppid(), "host": lock.socket.gethostname(),
                                              "started": "2026-01-01T00:00:00Z"}))
    with pytest.raises(RunDirLocked, match=f"pid {os.getppid()} .*if that process is dead, delete"):
        with run_lock(out):
            pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / OWNER_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": lock.socket.gethostname(),
                                              "started": "2026-01-01T00:00:00Z"}))
    with run_lock(out):
        assert json.loads((out / OWNER_FILE).read_text())["pid"] == os.getpid()
    assert f"taking over the lock of pid {int(dead.stdout)}" in caplog.text
    # on another host nobody can tell whether it is alive: refused, with what to do
    (out / OWNER_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "2026-01-01T00:00:00Z"}))
    with pytest.raises(RunDirLocked, match="pid 1 on host elsewhere"):
        with run_lock(out):
            pass


KILL_IN_WRITE = textwrap.dedent("""
    import os, signal, sys
    import dps_map.io as io
    from hydra import compose, initialize_config_dir
    from dps_map.runner import run

    real_replace, renamed = os.replace, []

    def replace(src, dst):  # SIGKILL with the 2nd PNG of the 2nd chunk written to its temp file, not renamed
        if str(dst).endswith(".png") and "/recon/" in str(dst):
            renamed.append(dst)
            if len(renamed) == 4:
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    io.os.replace = replace
    with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
        cfg = compose("config", overrides=sys.argv[3:])
    run(cfg, sys.argv[2])
""")


def test_sigkill_during_a_chunks_writes_then_resume(tmp_path):
    out = tmp_path / "run"
    proc = run_with_guard([sys.executable, "-c", KILL_IN_WRITE, str(CONF), str(out), *TINY], capture_output=True,
                          text=True, cpu_limit=300, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    finished = keys(out)
    assert len(finished) == 2  # the first chunk; the second chunk's record was never appended
    assert len(list((out / "recon").glob(".*.tmp"))) == 1  # the killed write's temp file
    assert sorted(p.name for p in (out / "recon").glob("*.png")) == [f"{i}_{k}.png" for i, k in finished] + \
        [f"{finished[0][0].rsplit('_', 1)[0]}_1_0.png"]  # the second chunk's first PNG, without its record
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "recon").glob("*.png")
            if (p.stem.rsplit("_", 1)[0], int(p.stem.rsplit("_", 1)[1])) in finished}
    summary = run(config(*TINY), out)
    assert_complete_once(out, 8)
    assert summary["n_new_samples"] == 6
    assert {n: (out / "recon" / n).stat().st_mtime_ns for n in kept} == kept  # finished work not redone


def test_full_disk_is_one_clear_error_and_the_run_resumes_after_space_is_freed(tmp_path, monkeypatch):
    import dps_map.io as io

    out = tmp_path / "run"
    real_fsync, calls = os.fsync, []

    def fsync(fd):  # ENOSPC on the 2nd sample image of the 2nd chunk (data written, not yet durable)
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "/recon/" in name:
            calls.append(name)
            if len(calls) == 4:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(io.os, "fsync", fsync)
    with pytest.raises(UserError) as err:
        run(config(*TINY), out)
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message and "rerun the same command" in message
    assert "/recon/" in message and message.startswith("cannot write '")
    assert len(keys(out)) == 2  # the first chunk; nothing of the second was recorded
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    for p in (out / "recon").glob("*.png"):
        Image.open(p).load()  # no partial PNG
    monkeypatch.setattr(io.os, "fsync", real_fsync)  # space freed
    summary = run(config(*TINY), out)
    assert_complete_once(out, 8)
    assert summary["n_new_samples"] == 6


def test_truncated_last_metrics_line_is_skipped_with_a_warning_and_recomputed(tmp_path, caplog):
    out = tmp_path / "run"
    run(config(*TINY), out)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    cut = json.loads(lines[-1])
    (out / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])  # no newline either
    (out / "recon" / f"{cut['id']}_{cut['k']}.png").unlink()  # the crash also lost its image
    assert len(read_jsonl(out / "metrics.jsonl")) == 7
    assert "line 8 is not a complete JSON record" in caplog.text
    summary = run(config(*TINY), out)
    assert_complete_once(out, 8)
    assert summary["n_new_samples"] == 1
    assert (out / "metrics.jsonl").read_text().endswith("}\n")  # the broken line is gone


def test_duplicates_of_an_older_version_are_counted_once(tmp_path, caplog):
    from dps_map.runner.sweep_results import aggregate

    out = tmp_path / "sweep" / "job"
    clean = run(config(*TINY), out)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(lines + lines[:3]) + "\n")  # as two writers left it
    summary = run(config(*TINY), out)
    assert summary["n_samples"] == 8 and summary["n_duplicate_records"] == 3 and summary["n_new_samples"] == 0
    assert summary["metrics"]["psnr"] == clean["metrics"]["psnr"]
    assert "3 duplicate records of the same (id, k) ignored" in caplog.text
    group = next(iter(aggregate(tmp_path / "sweep", random_weights=True)["groups"].values()))
    assert group["n_samples"] == 8 and group["n_duplicate_records"] == 3 and group["complete"]
    assert group["metrics"]["psnr"]["mean"] == pytest.approx(clean["metrics"]["psnr"]["mean"])
    assert "3 duplicate records" in (tmp_path / "sweep" / "aggregate.md").read_text()


def test_aggregate_names_running_and_unfinished_jobs_and_does_not_average_them(tmp_path):
    from dps_map.runner.sweep_results import aggregate

    sweep = tmp_path / "sweep"
    done = sweep / "data.shard=0"
    run(config(*TINY, "data.num_shards=2", "data.shard=0"), done)
    part = sweep / "data.shard=1"
    run(config(*TINY, "data.num_shards=2", "data.shard=1"), part)
    lines = (part / "metrics.jsonl").read_text().splitlines()
    (part / "metrics.jsonl").write_text("\n".join(lines[:1]) + "\n")  # stopped after one sample
    (part / "summary.json").unlink()
    other = sweep / "other"
    run(config(*TINY, "seed=1", "data.per_photo=1"), other)
    with run_lock(other):  # still running
        result = aggregate(sweep, random_weights=True)
    table = (sweep / "aggregate.md").read_text()
    groups = {g["label"]: g for g in result["groups"].values()}
    assert len(groups) == 2 and all(not g["complete"] for g in groups.values())
    shards = next(g for g in groups.values() if len(g["jobs"]) == 2)
    assert shards["metrics"] == {} and shards["partial_metrics"]["psnr"]["n"] == 5
    assert shards["incomplete_jobs"] == [{"dir": str(part), "status": "unfinished", "n_records": 1,
                                          "n_expected": None}]
    running = next(g for g in groups.values() if len(g["jobs"]) == 1)
    (job,) = running["incomplete_jobs"]
    assert job["status"] == "running" and job["n_records"] == job["n_expected"] == 4
    assert job["holder"]["pid"] == os.getpid()
    assert sorted(result["incomplete_groups"]) == sorted(groups)
    assert "INCOMPLETE" in table and f"`{part}` unfinished, 1 of ? records" in table
    assert f"`{other}` running, 4 of 4 records" in table
    # once finished (lock released, shard rerun), the groups are complete and averaged
    run(config(*TINY, "data.num_shards=2", "data.shard=1"), part)
    result = aggregate(sweep, random_weights=True)
    assert not result["incomplete_groups"] and all(g["complete"] for g in result["groups"].values())
    assert "INCOMPLETE" not in (sweep / "aggregate.md").read_text()


def _main(monkeypatch, capsys, *args):
    from dps_map.run import main

    monkeypatch.setattr(sys, "argv", ["dps-map", *args])
    monkeypatch.setattr("dps_map.runner.execute.build_prior", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, capsys.readouterr().err


def test_sweep_whose_jobs_share_a_directory_or_write_a_locked_one_is_refused_before_submitting(
        tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    # device is left out of the job directory names (override_dirname.exclude_keys): both jobs -> one dir
    code, err = _main(monkeypatch, capsys, "-m", "device=cpu,auto", "seed=3", f"hydra.sweep.dir={sweep}")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("dps-map: error: jobs 'device=cpu seed=3 ") and f"would both write to '{sweep}/seed=3'" in err
    assert not sweep.exists()  # nothing submitted, nothing written
    # a job directory another process is writing (a second sweep into the same hydra.sweep.dir)
    with run_lock(sweep / "seed=1"):
        code, err = _main(monkeypatch, capsys, "-m", "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("dps-map: error: job 'seed=1 ") and f"(pid {os.getpid()} on host " in err
    assert sorted(p.name for p in sweep.rglob("*")) == ["run.lock", "seed=1"]  # the holder's; no job ran
