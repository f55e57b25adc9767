"""dps-map installs as a package, not only as the editable checkout of `make install`. The Hydra config tree is
conf/ at the top of the repository; pyproject.toml ships it as the package dps_map.conf, and
dps_map.config.CONF_DIR finds it (dps_map/config/sweep.py):

- a wheel holds the YAML tree once, as dps_map/conf/, and the `dps-map` command runs from any directory;
- an editable install reads the repository's conf/ itself: an edited or added YAML is used without reinstalling;
- a checkout on PYTHONPATH with nothing installed (`make gpu-check` on a GPU machine without pip) reads its own conf/.

Each test builds from a copy of the repository (so nothing is written into it, and the editable test can edit
conf/) into a clean venv that sees this environment's dependencies (torch, hydra, ...) but not its dps_map: a plain
path entry to this site-packages does not run the editable finder's .pth there."""

import json
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
#: what a build reads: the packages, the config tree and the project's metadata
SOURCES = ("pyproject.toml", "README.md", "dps_map", "conf", "experiments", "tools")
SHOW_CONF = "import dps_map, dps_map.config; print(dps_map.__file__); print(dps_map.config.CONF_DIR)"


def copy_of_the_repository(dest: Path) -> Path:
    dest.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build"))
        else:
            shutil.copy2(ROOT / name, dest / name)
    return dest


def clean_venv(path: Path) -> Path:
    """A venv without pip (pip runs from this environment with --python: the venv's own bundled setuptools would
    be too old to build the project) whose only other site is this environment's site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=300)
    py = path / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "deps_of_the_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py


def pip_into(py: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                    "--no-build-isolation", "--quiet", *args], check=True, timeout=300)


def run(cmd: list, cwd: Path, env: dict | None = None, timeout: int = 300) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def yaml_tree(conf: Path) -> set[str]:
    return {p.relative_to(conf).as_posix() for p in conf.rglob("*.yaml")}


@pytest.mark.slow
def test_wheel_ships_the_config_tree_once_and_runs_from_another_directory(tmp_path):
    repo = copy_of_the_repository(tmp_path / "repo")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(dist), str(repo)], check=True, cwd=tmp_path, timeout=300)
    wheel = next(dist.glob("dps_map-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert len(names) == len(set(names))
    # the whole YAML tree, as dps_map/conf/, and no YAML anywhere else (no stray copy of conf/)
    assert {n for n in names if n.endswith((".yaml", ".yml"))} == {f"dps_map/conf/{p}" for p in yaml_tree(repo / "conf")}
    assert "dps_map/conf/hydra/launcher/slurm.yaml" in names and not any(n.startswith("conf/") for n in names)
    # pyproject lists the packages by hand: every module of dps_map/ must be in the wheel, and nothing else (the
    # studies and tools of experiments/ and tools/ run from a checkout)
    modules = {p.relative_to(repo).as_posix() for p in (repo / "dps_map").rglob("*.py")}
    assert {n for n in names if n.endswith(".py")} == modules | {"dps_map/conf/__init__.py"}
    for asset in ("dps_map/assets/tiny_prior.pt", "dps_map/assets/tiny_prior.json", "dps_map/assets/adapters/sr4_tiny.pt"):
        assert asset in names, asset
    # the sdist (what `python -m build` builds the wheel from) has conf/ at its top
    sdist = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                            "print(build_meta.build_sdist(sys.argv[1]))", str(tmp_path / "sdist")], cwd=repo,
                           capture_output=True, text=True, check=True, timeout=300).stdout.split()[-1]
    with tarfile.open(tmp_path / "sdist" / sdist) as tar:
        top = sdist.removesuffix(".tar.gz")
        in_sdist = {n.removeprefix(f"{top}/conf/") for n in tar.getnames() if n.startswith(f"{top}/conf/")}
    assert yaml_tree(repo / "conf") | {"__init__.py"} <= in_sdist

    py = clean_venv(tmp_path / "venv")
    pip_into(py, str(wheel))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where, conf = run([py, "-c", SHOW_CONF], elsewhere).split()
    site = Path(where).parents[1]
    assert site != ROOT and Path(conf) == site / "dps_map" / "conf", (where, conf)

    dps_map = py.parent / "dps-map"
    cfg = run([dps_map, "--cfg", "job", "task=sr4", "prior=adm512", "sampler=dmap"], elsewhere)
    assert "name: adm512" in cfg and "name: dmap" in cfg
    # an experiment preset, and a step size from the tuned table (conf/tuned/default.yaml), resolved
    tuned = OmegaConf.load(repo / "conf" / "tuned" / "default.yaml").priors.tiny.sr4.dps.zeta
    cfg = OmegaConf.create(run([dps_map, "--cfg", "job", "--resolve", "task=sr4", "sampler=dps", "+experiment=paper",
                                "prior=tiny"], elsewhere))
    assert cfg.sampler.zeta == tuned and cfg.task.sigma_y == 0.0 and cfg.metrics.name == "default"
    run([dps_map, "--multirun", "task=sr4", "prior=tiny", "sampler=dps,dmap", "data.per_photo=1", "sampler.respacing=2",
         "progress=false", "hydra.sweep.dir=sweep"], elsewhere, timeout=600)
    jobs = sorted((elsewhere / "sweep").glob("*/summary.json"))
    assert len(jobs) == 2, jobs
    for job in jobs:
        summary = json.loads(job.read_text())
        assert summary["n_samples"] == 2 and summary["metrics"]["psnr"]["mean"] > 5
    assert sorted(p.name for p in (jobs[0].parent / "recon").iterdir()) == ["chelsea_0_0.png", "coffee_0_0.png"]


@pytest.mark.slow
def test_editable_install_reads_the_top_level_conf_and_sees_edits_without_reinstalling(tmp_path):
    repo = copy_of_the_repository(tmp_path / "repo")
    py = clean_venv(tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # nothing installed, the checkout on PYTHONPATH: its own conf/
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo)}
    where, conf = run([py, "-c", SHOW_CONF], elsewhere, env).split()
    assert (where, conf) == (str(repo / "dps_map" / "__init__.py"), str(repo / "conf"))

    pip_into(py, "-e", str(repo))
    where, conf = run([py, "-c", SHOW_CONF], elsewhere).split()
    assert (where, conf) == (str(repo / "dps_map" / "__init__.py"), str(repo / "conf"))
    files = run([py, "-c", "import importlib.resources as r; print(r.files('dps_map.conf'))"], elsewhere).strip()
    assert files == str(repo / "conf")  # what Hydra's pkg://dps_map.conf reads too

    # edit a YAML of conf/ and add one: the next command reads both, no reinstall
    table = OmegaConf.load(repo / "conf" / "tuned" / "default.yaml")
    assert table.priors.tiny.sr4.dps.zeta != 12.5
    table.priors.tiny.sr4.dps.zeta = 12.5
    OmegaConf.save(table, repo / "conf" / "tuned" / "default.yaml")
    (repo / "conf" / "experiment" / "probe.yaml").write_text("# @package _global_\nnum_samples: 7\n")
    dps_map = py.parent / "dps-map"
    cfg = OmegaConf.create(run([dps_map, "--cfg", "job", "--resolve", "task=sr4", "prior=tiny", "sampler=dps",
                                "+experiment=probe"], elsewhere))
    assert cfg.sampler.zeta == 12.5 and cfg.num_samples == 7

    # a dps_map/conf/ folder left in a checkout (its __pycache__ from before the move) would hide conf/ from
    # the import system: a one-line error saying so, not an empty config tree
    (repo / "dps_map" / "conf" / "__pycache__").mkdir(parents=True)
    proc = subprocess.run([str(py), "-c", SHOW_CONF], cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "delete the folder left over in the checkout, dps_map/conf/" in proc.stderr
