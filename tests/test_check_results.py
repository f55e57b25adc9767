"""tools.provenance (the record a result carries) and tools.check_results (make check-results)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tools import check_results as cr
from tools import provenance as prov

ROOT = Path(__file__).resolve().parents[1]


def sha(path: Path) -> str:
    return prov.sha256_file(path)


def make_fixture(tmp_path: Path, asset_digest: str | None = None, stale: str | None = None,
                 text: str = "| PSNR | 25.27 ± 0.71 | 10.55 |\n") -> tuple[Path, Path]:
    """A repository root with one shipped asset and a results folder with one result group and its record."""
    root = tmp_path / "repo"
    asset = root / "dps_map" / "assets" / "tiny_prior.pt"
    asset.parent.mkdir(parents=True)
    asset.write_bytes(b"shipped weights")
    results = root / "experiments" / "results"
    results.mkdir(parents=True)
    (results / "restoration_tiny.md").write_text(text)
    (results / "restoration_tiny.csv").write_text("sampler,psnr\ndmap,25.2712\n")
    record = {"schema": 1, "result": "restoration_tiny", "command": "python -m x", "commit": "0" * 40,
              "commits": ["0" * 40], "dirty": False, "dirty_files": [], "machine": {"host": "h"},
              "started": "2026-12-05T00:00:00+00:00", "finished": "2026-12-05T00:01:00+00:00", "wall_s": 60.0,
              "steps": [{"command": "python -m x", "exit_code": 0}], "stale": stale, "note": None,
              "assets": {"dps_map/assets/tiny_prior.pt": asset_digest or sha(asset)},
              "files": {n: sha(results / n) for n in ("restoration_tiny.md", "restoration_tiny.csv")}}
    (results / "restoration_tiny.provenance.json").write_text(json.dumps(record))
    return root, results


def run_check(root: Path, results: Path, docs: list[Path] | None = None, capsys=None) -> tuple[int, str]:
    code = cr.main(["--results", str(results), "--root", str(root), "--docs", *[str(d) for d in (docs or [])]])
    return code, capsys.readouterr().out if capsys else ""


def test_check_passes_with_the_shipped_asset(tmp_path, capsys):
    root, results = make_fixture(tmp_path)
    code, out = run_check(root, results, capsys=capsys)
    assert code == 0, out
    assert "0 failure(s)" in out


def test_check_fails_on_a_wrong_asset_hash(tmp_path, capsys):
    root, results = make_fixture(tmp_path, asset_digest="f" * 64)
    code, out = run_check(root, results, capsys=capsys)
    assert code == 1
    assert "made with assets other than the shipped ones" in out and "tiny_prior.pt" in out


def test_check_fails_when_the_asset_is_gone(tmp_path, capsys):
    root, results = make_fixture(tmp_path)
    (root / "dps_map" / "assets" / "tiny_prior.pt").unlink()
    code, out = run_check(root, results, capsys=capsys)
    assert code == 1 and "absent" in out


def test_stale_is_reported_and_accepted(tmp_path, capsys):
    root, results = make_fixture(tmp_path, asset_digest="f" * 64, stale="made with the 2200-step prior")
    code, out = run_check(root, results, capsys=capsys)
    assert code == 0, out
    assert "STALE (accepted) restoration_tiny.provenance.json: made with the 2200-step prior" in out
    assert "1 stale" in out


def test_a_file_without_provenance_fails(tmp_path, capsys):
    root, results = make_fixture(tmp_path)
    (results / "orphan.png").write_bytes(b"\x89PNG")
    code, out = run_check(root, results, capsys=capsys)
    assert code == 1 and "orphan.png: no provenance" in out


def test_a_file_edited_after_its_record_fails_until_amended(tmp_path, capsys):
    root, results = make_fixture(tmp_path)
    (results / "restoration_tiny.md").write_text("| PSNR | 99.99 |\n")
    code, out = run_check(root, results, capsys=capsys)
    assert code == 1 and "restoration_tiny.md: changed since its provenance was recorded" in out
    assert prov.main(["--out", str(results), "--amend", "restoration_tiny", "--note", "typo"]) == 0
    code, out = run_check(root, results, capsys=capsys)
    assert code == 0, out
    record = json.loads((results / "restoration_tiny.provenance.json").read_text())
    assert record["amendments"][0]["changed"] == ["restoration_tiny.md"]


def test_a_failed_step_fails(tmp_path, capsys):
    root, results = make_fixture(tmp_path)
    path = results / "restoration_tiny.provenance.json"
    record = json.loads(path.read_text())
    record["steps"][0]["exit_code"] = 2
    path.write_text(json.dumps(record))
    code, out = run_check(root, results, capsys=capsys)
    assert code == 1 and "a step of the record failed" in out


# -- citations -----------------------------------------------------------------------------------------
def doc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "README.md"
    path.write_text(text)
    return path


def test_a_cited_number_found_in_the_file_passes(tmp_path, capsys):
    root, results = make_fixture(tmp_path)
    d = doc(tmp_path, "# Results\n\nOn 8 crops (`restoration_tiny.md`): DMAP 25.27 dB ± 0.71, the adapter 10.6 dB.\n")
    code, out = run_check(root, results, [d], capsys)
    assert code == 0, out
    assert "2 cited numbers checked" in out or "3 cited numbers checked" in out


def test_a_cited_number_missing_from_the_file_fails(tmp_path, capsys):
    root, results = make_fixture(tmp_path)
    d = doc(tmp_path, "# Results\n\nOn 8 crops (experiments/results/restoration_tiny.md): DMAP 25.38 dB.\n")
    code, out = run_check(root, results, [d], capsys)
    assert code == 1
    assert "README.md:3: 25.38 not in the cited restoration_tiny.md" in out


def test_rounding_is_at_the_precision_written(tmp_path):
    results = tmp_path
    (results / "a.csv").write_text("x\n10.55\n30123.4\n")
    paths = [results / "a.csv"]
    assert cr.found_in("10.6", paths) and cr.found_in("10.55", paths) and cr.found_in("3.0e4", paths)
    assert not cr.found_in("10.4", paths) and not cr.found_in("10.56", paths) and not cr.found_in("3.1e4", paths)


def test_a_measured_number_without_citation_fails(tmp_path, capsys):
    root, results = make_fixture(tmp_path)
    d = doc(tmp_path, "# Timing\n\nMeasured on this CPU: 19.0 min wall.\n")
    code, out = run_check(root, results, [d], capsys)
    assert code == 1 and "README.md:3: numbers from a run (19.0) cite no result file" in out


def test_not_from_a_run_directive_and_code_and_config_values(tmp_path, capsys):
    root, results = make_fixture(tmp_path)
    d = doc(tmp_path, "# Paper\n\nThe paper reports 22.33 dB PSNR. <!-- not-from-a-run -->\n\n"
                      "DPS with `sampler.zeta=1.0` and sigma_y=0.05 reaches 25.27 dB (`restoration_tiny.md`).\n\n"
                      "    python -m dps_map.run sampler.zeta=3.7   # 99.9 dB\n")
    code, out = run_check(root, results, [d], capsys)
    assert code == 0, out


def test_a_table_inherits_its_captions_citation_within_the_section(tmp_path, capsys):
    root, results = make_fixture(tmp_path)
    d = doc(tmp_path, "# A\n\nOn the demo crops (`restoration_tiny.md`):\n\n| sampler | PSNR |\n|---|---|\n"
                      "| dmap | 25.27 |\n| dps | 24.01 |\n\n# B\n\n| x | PSNR |\n|---|---|\n| y | 25.27 |\n")
    code, out = run_check(root, results, [d], capsys)
    assert code == 1
    assert "README.md:5: 24.01 not in the cited restoration_tiny.md" in out  # the table, cited by its caption
    assert "README.md:12: numbers from a run (25.27) cite no result file" in out  # another section: no citation


def test_signed_differences_are_derived_not_failures(tmp_path, capsys):
    root, results = make_fixture(tmp_path)
    d = doc(tmp_path, "# A\n\nDMAP 25.27 dB (`restoration_tiny.md`), +0.17 dB over DPS.\n")
    code, out = run_check(root, results, [d], capsys)
    assert code == 0, out


def test_invisible_citation_comment(tmp_path, capsys):
    root, results = make_fixture(tmp_path)
    d = doc(tmp_path, "# A\n\nDMAP scores 25.27 dB. <!-- results: restoration_tiny.md -->\n")
    code, out = run_check(root, results, [d], capsys)
    assert code == 0, out


# -- the wrapper -----------------------------------------------------------------------------------------
def test_the_wrapper_records_command_assets_files_and_refuses_a_failed_command(tmp_path):
    script = tmp_path / "job.py"
    out = tmp_path / "results"
    out.mkdir()
    (out / "demo_other.md").write_text("not written by the job")
    import os
    old = out / "demo_other.md"
    os.utime(old, (0, 0))
    script.write_text(
        "import sys\n"
        f"open({str(ROOT / 'dps_map' / 'assets' / 'tiny_prior.pt')!r}, 'rb').read(16)\n"
        f"open({str(out / 'demo.md')!r}, 'w').write('PSNR 25.27')\n"
        "sys.exit(int(sys.argv[1]))\n")
    cmd = [sys.executable, "-m", "tools.provenance", "--out", str(out), "--results", "demo", "--",
           sys.executable, str(script)]
    r = subprocess.run(cmd + ["3"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 3 and not (out / "demo.provenance.json").exists()
    r = subprocess.run(cmd + ["0"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rec = json.loads((out / "demo.provenance.json").read_text())
    asset = "dps_map/assets/tiny_prior.pt"
    assert rec["assets"] == {asset: sha(ROOT / asset)}  # seen by the audit hook, not declared
    assert rec["steps"][0]["assets_opened"] == [asset]
    assert list(rec["files"]) == ["demo.md"]  # demo_other.md predates the run: not claimed
    assert rec["command"].endswith("job.py 0") and len(rec["commit"]) == 40 and rec["wall_s"] >= 0
    assert rec["machine"]["cores"] and rec["started"] <= rec["finished"] and rec["stale"] is None
    # --append adds a step, --stale marks it
    r = subprocess.run([sys.executable, "-m", "tools.provenance", "--out", str(out), "--append", "--results",
                        "demo", "--", sys.executable, "-c", "pass"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rec = json.loads((out / "demo.provenance.json").read_text())
    assert len(rec["steps"]) == 2 and asset in rec["assets"] and " && " in rec["command"]
    assert prov.main(["--out", str(out), "--stale", "demo", "old prior"]) == 0
    assert json.loads((out / "demo.provenance.json").read_text())["stale"] == "old prior"


# -- the repository itself -------------------------------------------------------------------------------
def test_the_repository_results_have_provenance_and_the_shipped_assets(capsys):
    """Rules 1-2 on experiments/results/, and rule 3 on README.md, docs/ and experiments/results/README.md:
    what `make check-results` checks in CI."""
    code = cr.main([])
    out = capsys.readouterr().out
    assert code == 0, out


def test_stdout_kept_as_a_result_file(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    r = subprocess.run([sys.executable, "-m", "tools.provenance", "--out", str(out), "--results", "bench",
                        "--stdout", "bench.txt", "--", sys.executable, "-c", "print('forward 31.3 ms')"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "bench.txt").read_text() == "forward 31.3 ms\n"
    assert list(json.loads((out / "bench.provenance.json").read_text())["files"]) == ["bench.txt"]


def test_an_asset_card_may_be_cited(tmp_path, capsys):
    root, results = make_fixture(tmp_path)
    (root / "dps_map" / "assets" / "tiny_prior.json").write_text('{"wall_time_s": 12897.2}')
    d = doc(tmp_path, "# A\n\nTrained in 12897.2 s wall (`dps_map/assets/tiny_prior.json`).\n\n"
                      "Trained in 99.5 s wall (`dps_map/assets/tiny_prior.json`).\n")
    code, out = run_check(root, results, [d], capsys)
    assert code == 1 and "README.md:5: 99.5 not in the cited card:dps_map/assets/tiny_prior.json" in out
    assert "README.md:3" not in out
