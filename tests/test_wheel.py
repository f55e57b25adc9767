"""dps-map installs as a package, not only as the editable checkout of `make install`: a wheel built from the
repository carries the Hydra config tree (dps_map/conf) and the shipped assets, so the `dps-map` command starts
and runs from any directory."""

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_into_a_clean_venv_and_runs_from_another_directory(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(dist), str(ROOT)], check=True, cwd=tmp_path, timeout=300)
    wheel = next(dist.glob("dps_map-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("dps_map/conf/config.yaml", "dps_map/conf/prior/adm512.yaml", "dps_map/conf/tuned/default.yaml",
                     "dps_map/conf/hydra/launcher/slurm.yaml", "dps_map/assets/tiny_prior.pt",
                     "dps_map/assets/adapters/sr4_tiny.pt"):
        assert required in names, required
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "dps_map" / "conf").rglob("*.yaml")}
    assert shipped <= names, sorted(shipped - names)

    # a clean venv that sees this environment's dependencies (torch, hydra, ...) but not the editable checkout:
    # a plain path entry to site-packages does not run the editable finder's .pth there
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "deps_of_the_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], check=True,
                   timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(py), "-c", "import dps_map; print(dps_map.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(site) and not where.startswith(str(ROOT)), where

    dps_map = venv / "bin" / "dps-map"
    cfg = subprocess.run([str(dps_map), "--cfg", "job", "task=sr4", "prior=adm512", "sampler=dmap"], cwd=elsewhere,
                         capture_output=True, text=True, timeout=300)
    assert cfg.returncode == 0, cfg.stderr[-2000:]
    assert "name: adm512" in cfg.stdout and "name: dmap" in cfg.stdout
    run = subprocess.run([str(dps_map), "task=sr4", "prior=tiny", "sampler=dps", "data.per_photo=1",
                          "sampler.respacing=2", "progress=false", "hydra.run.dir=run"], cwd=elsewhere,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((elsewhere / "run" / "summary.json").read_text())
    assert summary["n_samples"] == 2 and summary["metrics"]["psnr"]["mean"] > 5
    assert sorted(p.name for p in (elsewhere / "run" / "recon").iterdir()) == ["chelsea_0_0.png", "coffee_0_0.png"]
