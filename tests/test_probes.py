"""Broken files and odd directories: each probe ends in one line on stderr naming the file and what to do, exit
code 2 and no traceback, and every finished file (PNGs, records, summaries) is still there byte for byte. Then
what the aggregate does with a broken job or an incomplete sweep, migrate's report, two shards into one run
directory, and the checks no other test held: the summary's ddof, the completeness count, the centre crop and
resume after a PNG is lost (each against a reference written here, not the code under test)."""

import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from PIL import Image

from dps_map.io import append_jsonl, pil_to_tensor, read_jsonl
from dps_map.runner import run
from dps_map.runner.summary import summarize_images

from support import ROOT, compose, run_with_guard

# 2 photographs x 2 crops x 2 samples with a 4-step random network (as tests/test_faults.py)
TINY = ["progress=false", "prior.random_init=true", "sampler=dps", "sampler.respacing=4", "data.per_photo=2",
        "num_samples=2"]
#: files a rerun may rewrite with the same content or Hydra owns (its saved config and log, the lock's holder)
VOLATILE = (".hydra", "run.lock", "run.log")


def cli(module, *args):
    return run_with_guard([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                          cpu_limit=300)


def contents(out: Path) -> dict:
    """Every finished file of a run directory, by content."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not any(part in VOLATILE for part in p.relative_to(out).parts)}


def one_line(stderr: str, *names) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for name in names:
        assert str(name) in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run (4 measurements x 2 samples), copied by each test that changes it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    run(compose(*TINY), out)
    return out


def copy_of(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


# -- probes: one line, exit 2, nothing lost --------------------------------------------------------------
def test_empty_checkpoint_is_one_line_naming_it(tmp_path):
    empty = tmp_path / "tiny_prior.pt"
    empty.write_bytes(b"")  # an interrupted download
    result = cli("dps_map.run", *TINY[:1], "sampler=dps", "sampler.respacing=4", "num_samples=1",
                 f"prior.checkpoint={empty}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    line = one_line(result.stderr, empty)
    assert "0 bytes" in line and "fresh copy" in line
    assert empty.read_bytes() == b""


def test_truncated_run_json_is_one_line_and_the_outputs_stay(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    marker = out / "run.json"
    marker.write_bytes(marker.read_bytes()[:20])  # cut short
    before = contents(out)
    result = cli("dps_map.run", *TINY, f"hydra.run.dir={out}")
    assert result.returncode == 2
    assert "restore it" in one_line(result.stderr, marker)
    assert contents(out) == before


def test_a_run_dir_that_is_a_file_is_one_line(tmp_path):
    path = tmp_path / "run"
    path.write_text("my notes\n")
    result = cli("dps_map.run", *TINY, f"hydra.run.dir={path}")
    assert result.returncode == 2
    assert "is a file" in one_line(result.stderr, path)
    assert path.read_text() == "my notes\n"


def test_a_read_only_run_dir_is_one_line_and_untouched(finished, tmp_path, monkeypatch, capsys):
    from dps_map.run import main

    out = copy_of(finished, tmp_path)
    before = contents(out)
    os.chmod(out, 0o555)
    if os.geteuid() == 0:  # root writes anywhere: report the directory as a user would find it
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == out else real(p, mode, **kw))
    monkeypatch.setattr(sys, "argv", ["dps-map", *TINY, f"hydra.run.dir={out}"])
    monkeypatch.setattr("dps_map.runner.execute.build_prior", lambda *a, **k: pytest.fail("a model was built"))
    try:
        with pytest.raises(SystemExit) as stop:
            main()
    finally:
        os.chmod(out, 0o755)
    assert stop.value.code == 2
    assert "not writable" in one_line(capsys.readouterr().err, out)
    assert contents(out) == before


@pytest.mark.parametrize("edit,problem", [
    (lambda r: {k: v for k, v in r.items() if k != "k"}, "no integer 'k'"),
    (lambda r: dict(r, psnr=str(r["psnr"])), "'psnr' is '"),
])
def test_an_unusable_record_is_one_line_and_nothing_is_rewritten(finished, tmp_path, edit, problem):
    out = copy_of(finished, tmp_path)
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = json.dumps(edit(json.loads(lines[1])))
    path.write_text("\n".join(lines) + "\n")
    before = contents(out)
    result = cli("dps_map.run", *TINY, f"hydra.run.dir={out}")
    assert result.returncode == 2
    line = one_line(result.stderr, path)
    assert problem in line and "record 2" in line
    assert contents(out) == before


def _gmm_run(out: Path, *extra):
    result = cli("dps_map.run", "task=gmm_linear", "prior=gmm", "data=gmm", "sampler=exact", "num_samples=20",
                 "progress=false", f"hydra.run.dir={out}", *extra)
    assert result.returncode == 0, result.stderr
    return out


def _as_v1(out: Path) -> None:
    """Make a run directory look like one of dps-map 0.1 (run.json without schema, the 0.1 digest)."""
    from dps_map.migrate import v1_digest

    old = v1_digest(OmegaConf.create(yaml.safe_load((out / ".hydra" / "config.yaml").read_text())))
    (out / "run.json").write_text(json.dumps({"digest": old, "version": "0.1.0"}))
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps(dict(summary, digest=old)))  # 0.1 wrote its digest there too


@pytest.fixture(scope="module")
def gmm_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gmm")
    _gmm_run(root / "a")
    _gmm_run(root / "b", "seed=5")
    return root


@pytest.mark.parametrize("broken", ["run.json", ".hydra/config.yaml"])
def test_migrate_of_a_garbage_file_is_one_line_and_changes_nothing(gmm_runs, tmp_path, broken):
    out = tmp_path / "a"
    shutil.copytree(gmm_runs / "a", out)
    _as_v1(out)
    (out / broken).write_text("{: not [ json or yaml\x00")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = cli("dps_map.migrate", str(out))
    assert result.returncode == 2
    assert "FAILED" in one_line(result.stderr, out / broken)
    assert "Traceback" not in result.stdout and "1 failed" in result.stdout
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_migrate_reports_each_directory_and_goes_on_after_a_failure(gmm_runs, tmp_path):
    for name in ("a", "b"):
        shutil.copytree(gmm_runs / name, tmp_path / name)
        _as_v1(tmp_path / name)
    (tmp_path / "a" / "summary.json").write_text('{"digest": ')  # a: fails; b (after it) is still migrated
    result = cli("dps_map.migrate", "--force", str(tmp_path))
    assert result.returncode == 2
    one_line(result.stderr, tmp_path / "a" / "summary.json")
    assert "schema" not in json.loads((tmp_path / "a" / "run.json").read_text())  # left as it was
    new = json.loads((tmp_path / "b" / "run.json").read_text())
    assert new["schema"] == 2 and json.loads((tmp_path / "b" / "summary.json").read_text())["digest"] == new["digest"]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"{tmp_path / 'b'}: migrated ")
    assert lines[-1] == "2 run directories: 1 migrated or already current, 0 left alone, 1 failed"


# -- the aggregate: a broken job, an incomplete sweep -------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Two shards of one config and a job of another seed, each with the .hydra/config.yaml a sweep saves."""
    root = tmp_path_factory.mktemp("sweep") / "sweep"
    for name, extra in (("shard0", ("data.num_shards=2", "data.shard=0")),
                        ("shard1", ("data.num_shards=2", "data.shard=1")), ("seed1", ("seed=1",))):
        cfg = compose(*TINY, *extra)
        run(cfg, root / name)
        (root / name / ".hydra").mkdir()
        OmegaConf.save(cfg, root / name / ".hydra" / "config.yaml")
    return root


def _aggregate(root: Path, *flags):
    result = cli("dps_map.aggregate", str(root), "--random-weights", *flags)
    return result, json.loads((root / "aggregate.json").read_text())


@pytest.mark.parametrize("broken", ["run.json", "summary.json", "metrics.jsonl"])
def test_a_broken_job_is_named_and_the_rest_aggregated(sweep, tmp_path, broken):
    root = tmp_path / "sweep"
    shutil.copytree(sweep, root)
    path = root / "shard1" / broken
    path.write_text('{"id": "x", "k": ' if broken != "metrics.jsonl" else '{"id": "x"}\n')
    other = {p: p.read_bytes() for p in (root / "seed1").rglob("*") if p.is_file()}
    result, agg = _aggregate(root)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--partial" in result.stderr.strip().splitlines()[-1]
    (job,) = agg["broken_jobs"]
    assert job["dir"] == str(root / "shard1") and str(path) in job["error"]
    groups = {len(g["jobs"]): g for g in agg["groups"].values()}
    assert groups[2]["complete"] is False and groups[2]["metrics"] == {}  # the group of the broken job is marked
    assert job["group"] == groups[2]["label"]
    assert [s["status"] for s in groups[2]["incomplete_jobs"]] == ["broken"]
    assert groups[2]["partial_metrics"]["psnr"]["n"] == 4  # shard 0's samples only
    assert groups[1]["complete"] and groups[1]["metrics"]["psnr"]["n"] == 8  # the other config: aggregated
    assert str(root / "shard1") in (root / "aggregate.md").read_text()
    assert {p: p.read_bytes() for p in (root / "seed1").rglob("*") if p.is_file()} == other


def test_an_incomplete_sweep_exits_1_unless_partial_is_asked(sweep, tmp_path):
    root = tmp_path / "sweep"
    shutil.copytree(sweep, root)
    complete, agg = _aggregate(root)
    assert complete.returncode == 0 and not agg["incomplete_groups"] and not agg["broken_jobs"]
    shutil.rmtree(root / "shard1")  # a missing shard
    partial, agg = _aggregate(root)
    assert partial.returncode == 1 and len(agg["incomplete_groups"]) == 1
    assert "--partial" in partial.stderr and "INCOMPLETE" in partial.stdout
    accepted, agg = _aggregate(root, "--partial")
    assert accepted.returncode == 0 and len(agg["incomplete_groups"]) == 1


def test_a_job_one_record_short_of_n_expected_is_unfinished(sweep, tmp_path):
    from dps_map.runner.sweep_results import aggregate

    root = tmp_path / "sweep"
    shutil.copytree(sweep / "seed1", root / "seed1")
    path = root / "seed1" / "metrics.jsonl"
    expected = json.loads((root / "seed1" / "summary.json").read_text())["n_expected"]
    lines = path.read_text().splitlines()
    assert len(lines) == expected == len(list((root / "seed1" / "recon").glob("*.png")))
    assert aggregate(root, random_weights=True)["groups"].popitem()[1]["complete"]  # exactly n_expected: complete
    path.write_text("\n".join(lines[:-1]) + "\n")  # one record short
    (group,) = aggregate(root, random_weights=True)["groups"].values()
    assert not group["complete"]
    assert group["incomplete_jobs"][0]["status"] == "unfinished"
    assert group["incomplete_jobs"][0]["n_records"] == expected - 1


def test_jobs_that_differ_only_in_seed_are_two_groups(sweep):
    from dps_map.runner.sweep_results import find_jobs, group_jobs

    groups = group_jobs(find_jobs(sweep))
    assert sorted(len(js) for js in groups.values()) == [1, 2]
    (alone,) = [js for js in groups.values() if len(js) == 1]
    assert alone[0]["dir"].name == "seed1"


# -- two shards into one run directory --------------------------------------------------------------------
def test_a_second_shard_into_one_run_dir_is_refused_and_nothing_is_lost(tmp_path):
    out = tmp_path / "run"
    run(compose(*TINY, "data.num_shards=2", "data.shard=0"), out)
    before = contents(out)
    result = cli("dps_map.run", *TINY, "data.num_shards=2", "data.shard=1", f"hydra.run.dir={out}")
    assert result.returncode == 2
    assert "own hydra.run.dir" in one_line(result.stderr, out)
    assert contents(out) == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == len(read_jsonl(out / "metrics.jsonl")) == len(list((out / "recon").glob("*.png")))


# -- what no other test held ------------------------------------------------------------------------------
def test_summary_std_is_the_sample_std_and_sem_its_standard_error():
    psnr = [21.0, 23.5, 22.25, 30.0]
    records = [{"id": f"i{n // 2}", "k": n % 2, "psnr": v, "seconds": 1.0, "nfe": 4, "forward": 4, "vjp": 4,
                "steps": 4} for n, v in enumerate(psnr)]
    stat = summarize_images(records, {"i0", "i1"})["metrics"]["psnr"]
    assert stat["mean"] == pytest.approx(statistics.mean(psnr))
    assert stat["std"] == pytest.approx(statistics.stdev(psnr))  # ddof=1
    assert stat["sem"] == pytest.approx(statistics.stdev(psnr) / len(psnr) ** 0.5)
    assert stat["n"] == 4


@pytest.mark.parametrize("width,height", [(12, 8), (13, 8), (8, 11)])
def test_pil_to_tensor_takes_the_centre_square(width, height):
    rng = np.random.default_rng(width * height)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    reference = pixels[top:top + side, left:left + side].astype(np.float32) / 127.5 - 1
    x, info = pil_to_tensor(Image.fromarray(pixels), side)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), reference, atol=1e-6)
    assert info["orig_size"] == [width, height]


def test_pil_to_tensor_resizes_the_whole_centre_square():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    square = Image.fromarray(np.ascontiguousarray(pixels[:, 4:20]))  # the centre 16 x 16
    reference = np.asarray(square.resize((8, 8), Image.BICUBIC), dtype=np.float32) / 127.5 - 1
    x, _ = pil_to_tensor(Image.fromarray(pixels), 8)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), reference, atol=1e-6)


def test_resume_redoes_a_sample_whose_png_is_gone(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    lost = sorted((out / "recon").glob("*.png"))[0]
    lost.unlink()
    summary = run(compose(*TINY), out)
    pngs = sorted(p.name for p in (out / "recon").glob("*.png"))
    records = read_jsonl(out / "metrics.jsonl")
    assert summary["n_new_samples"] == 1 and lost.exists()
    assert pngs == sorted(f"{r['id']}_{r['k']}.png" for r in {(r["id"], r["k"]): r for r in records}.values())
    assert summary["n_samples"] == len(pngs) == 8


def test_a_corrupt_line_in_the_middle_keeps_the_good_records_around_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    good = [{"id": "a", "k": k} for k in range(3)]
    path.write_text(json.dumps(good[0]) + "\n" + '{"id": "a", "k"\n' + json.dumps(good[1]) + "\n")
    assert read_jsonl(path) == good[:2]
    append_jsonl(path, [good[2]])  # rewrites the file: the cut line goes, the good ones stay
    assert read_jsonl(path) == good
    assert len(path.read_text().splitlines()) == 3


def test_the_run_lock_is_exclusive(tmp_path):
    from dps_map.runner.lock import RunDirLocked, _flock, lock_holder, run_lock

    with run_lock(tmp_path):
        assert lock_holder(tmp_path)["pid"] == os.getpid()  # a probe sees the holder
        with pytest.raises(RunDirLocked, match=str(tmp_path)):
            _flock(tmp_path)  # a second open file (another process's, or this one's) does not get it
    assert lock_holder(tmp_path) is None


def test_the_restoration_table_refuses_a_partial_sweep_unless_asked(sweep, tmp_path, capsys):
    from experiments.restoration_table import main

    root = tmp_path / "sweep"
    shutil.copytree(sweep, root)
    shutil.rmtree(root / "shard1")
    with pytest.raises(SystemExit) as stop:
        main([str(root), "--out", str(tmp_path / "out"), "--name", "t"])
    assert stop.value.code == 1 and "--partial" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    main([str(root), "--out", str(tmp_path / "out"), "--name", "t", "--partial"])
    assert (tmp_path / "out" / "t.csv").exists()
    with pytest.raises(SystemExit) as stop:  # nothing to tabulate: a user error, exit 2, one line
        main([str(tmp_path / "empty"), "--out", str(tmp_path / "out2")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and str(tmp_path / "empty") in err
