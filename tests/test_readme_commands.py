"""Every shell command README.md and docs/*.md show (a line of a code block, or an inline `...` span, that starts
with `make`, `python -m dps_map`, `python -m experiments`, `python -m tools` or `dps-map`) is either run here, as a user types it,
or excused below with its reason. A command that is in neither list fails `test_every_shown_command_is_run_or_excused`.

Run: the command itself in a shell, from a scratch directory (so relative outputs land there), with the stand-in
files of `make rehearse-paper` where the real ones would be (`DPS_MAP_*`, `TORCH_HOME`; placeholders such as
`/my/images` replaced by a stand-in folder), and with `extra` appended: overrides that bring the scale down (steps,
images, the toy size of the adm512 stand-in), which a user could type too. Each must exit as stated.
Excuse: not run here (too long, needs a GPU or a cluster, or runs elsewhere in this suite: the reason says which);
its configuration must still compose and validate (`compose`), its make target must exist (`make -n`), or its
module must answer `--help` (`help`); schematic lines (`task=...`) are only listed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tools.rehearse_paper import ADM_TOY, SD2_TOY, build_standins

from support import run_with_guard

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PREFIX = re.compile(r"^([A-Z_]+=\S+ +)*(make\b|python -m (dps_map|experiments|tools)\b|dps-map( |$))")

TOY = " ".join(ADM_TOY)
FAST = "sampler.respacing=2 data.per_photo=1 progress=false"
ADM_FAST = f"{TOY} sampler.respacing=2 data.max_images=1 progress=false"
REHEARSED = "make rehearse-paper runs it with stand-in files (tests/test_rehearse_paper.py)"


@dataclass
class Run:
    extra: str = ""                    # appended to the command (scale-down overrides)
    subst: dict = field(default_factory=dict)  # placeholder -> value (may name {work}, {val_flat}, ... of the stand-ins)
    expect: int = 0
    stderr: str | None = None          # a regex the error output must match (for an expected failure)
    make_vars: str = ""                # make variables appended to a make command (output folders)


@dataclass
class Excuse:
    reason: str
    check: str | None                  # "compose" | "make" | "help" | None (a schematic)
    config: str = "config"             # the Hydra config a `compose` check composes (train_adapter, bench, ...)


COMMANDS: dict[str, Run | Excuse] = {
    # -- README.md (install, demo, one run, development); docs/sweeps.md (make sweep, re-scoring) ----------
    "make demo": Excuse("about 4 minutes; tests/test_demo.py runs the demo's image and mixture parts", "make"),
    "make test": Excuse("the test suite itself (this test is part of it)", "make"),
    "make test-fast": Excuse("the test suite without the tests marked slow", "make"),
    "make test TEST_WORKERS=0": Excuse("the test suite itself, in one process", "make"),
    "make install": Run(),
    "python -m dps_map.run": Run(FAST),
    "python -m dps_map.run task=sr4 prior=adm512 sampler=dmap data=imagenet_val num_samples=1": Run(ADM_FAST),
    "python -m dps_map.run task=gmm_linear prior=gmm sampler=oracle num_samples=2000 seed=0": Run("progress=false"),
    "dps-map task=inpaint_box prior=adm256_uncond sampler=dps data=folder data.path=/my/images":
        Run(ADM_FAST, {"/my/images": "{val_flat}"}),
    "make sweep": Run(make_vars="SWEEP_DIR={work}/outputs/sweep 'ARGS=sampler.respacing=2 data.per_photo=1'"),
    "python -m dps_map.evaluate outputs/sweep metrics=default": Run(),
    "python -m dps_map.aggregate SWEEP_DIR [--partial] [--wandb]":
        Run(subst={"SWEEP_DIR": "outputs/sweep", "[--partial]": "", "[--wandb]": ""}),
    # -- docs/sweeps.md (GPUs, SLURM, preflight), docs/data-and-weights.md, docs/paper.md ---------------------------
    "python -m dps_map.run -m hydra/launcher=gpus +experiment=paper task=sr4,sr8,gaussian_deblur,motion_deblur,"
    "inpaint_box sampler=dps,dsg,dmap data.num_shards=8 'data.shard=range(8)' hydra.sweep.dir=outputs/paper/restoration":
        Excuse("the paper's sweep on GPUs; " + REHEARSED, "compose"),
    "python -m dps_map.aggregate outputs/paper/restoration": Excuse("after the paper's sweep; " + REHEARSED, "help"),
    "DPS_MAP_SLURM_PARTITION=gpu DPS_MAP_SLURM_TIME_MIN=1440 python -m dps_map.run -m hydra/launcher=slurm "
    "+experiment=paper task=sr4,sr8,gaussian_deblur,motion_deblur,inpaint_box sampler=dps,dsg,dmap "
    "data.num_shards=20 'data.shard=range(20)' hydra.sweep.dir=outputs/paper/restoration":
        Excuse("needs a SLURM cluster", "compose"),
    "python -m dps_map.fid_stats FOLDER out.npz --image-size 512": Run(subst={"FOLDER": "{val_flat}"}),
    'make preflight-paper ARGS="paths.adm512=/data/512x512_diffusion.pt paths.imagenet_val=/data/val"':
        Excuse(REHEARSED, "make"),
    "python -m dps_map.preflight -m +experiment=paper task=sr4,sr8 sampler=dps,dmap data.num_shards=8 "
    "'data.shard=range(8)' hydra.sweep.dir=outputs/paper/restoration": Run(f"{TOY} prior.respacing=2"),
    "make preflight-paper": Excuse(REHEARSED, "make"),
    "make reproduce-paper": Excuse("the paper's run on GPUs; " + REHEARSED, "make"),
    "make train-adapter-paper": Excuse("trains on GPUs (~8 h); " + REHEARSED, "make"),
    "make preflight-paper-sd2": Excuse(REHEARSED, "make"),
    "make train-adapter-paper-sd2": Excuse("trains three ControlNets on GPUs; " + REHEARSED, "make"),
    "make reproduce-paper-sd2": Excuse("the SD2 table on GPUs; " + REHEARSED, "make"),
    "python -m dps_map.migrate DIR": Excuse("tests/test_digest.py refuses, then migrates, a run directory of "
                                           "dps-map 0.1 with it", "help"),
    "python -m dps_map.weights": Excuse("the module's name; its command lines are run or excused here", "help"),
    "dps-map ...": Excuse("a schematic of the console script", None),
    "python -m experiments.NAME": Excuse("a schematic of a study's command (docs/architecture.md)", None),
    "python -m dps_map.weights paper": Run(),  # every stand-in is in place: exit 0
    "python -m dps_map.weights paper paths.checkpoints=/data/ckpt --download":
        Excuse("downloads about 3.5 GB; tests/test_weights.py runs --download offline with file:// stand-ins", "help"),
    "python -m experiments.score_diagnostics adm512 --check DIR":  # no adm512 adapter among the stand-ins
        Run(TOY, {"DIR": "{work}/check"}, expect=2, stderr=r"sr4_adm512\.pt.*make train-adapter-paper"),
    "python -m dps_map.preflight": Run(),
    "python -m dps_map.preflight --steps 1 prior=adm512 prior.random_init=true prior.class_label=random task=sr8 "
    "sampler=dps,dmap data=folder data.path=<a folder with one 512x512 photo>":
        Run(TOY, {"<a folder with one 512x512 photo>": "{one_photo}"}),
    # -- docs/tiny-prior.md (step sizes, the tiny prior), docs/testing.md, docs/adapters.md ------------------------
    "make gmm-study": Excuse("a study of several minutes; tests/test_experiments.py runs its driver small", "make"),
    "make tune-tiny": Excuse("about 90 minutes of CPU with one worker; tests/test_experiments.py runs its driver small", "make"),
    "python -m tools.tune_tiny": Excuse("as make tune-tiny", "help"),
    "python -m experiments.demo_tiny --old-prior outputs/old_prior/tiny_prior_2200.pt": Excuse(
        "about 7 minutes: the runs of make demo with both priors (the earlier prior from the repository's history); "
        "tests/test_demo.py runs the demo, tests/test_experiments.py the multirun helper it uses", "help"),
    "python -m tools.check_results --list": Run(),
    "python -m tools.adm512_cpu": Excuse("about 45 minutes and 15.4 GiB of RAM (adm512 at 512x512); "
                                               "tests/test_experiments.py runs its controlnet section", "help"),
    "python -m tools.provenance --results STEM -- <command>": Excuse(
        "a wrapper around any command (schematic); tests/test_check_results.py runs it", "help"),
    "make lint": Excuse("CI runs it first (.ci/run); seconds", "make"),
    "make check-results": Excuse("CI runs it first (.ci/run); tests/test_check_results.py runs the same check "
                                 "on the repository", "make"),
    "make compare-prior": Excuse("needs a retrained prior (CANDIDATE=); tests/test_compare_priors.py", "make"),
    "make compare-prior CANDIDATE=path/tiny_prior.pt": Excuse("needs a retrained prior", "make"),
    "python -m tools.compare_priors": Excuse("as make compare-prior", "help"),
    "make train-tiny-prior": Excuse("trains the shipped prior for hours; tests/test_train_prior.py trains steps", "make"),
    "python -m dps_map.train_prior": Excuse("as make train-tiny-prior", "compose", "train_prior"),
    "make -j2 train-adapter": Excuse("retrains the shipped adapters (12-25 min each)", "make"),
    "make adapter-ablation": Excuse("trains three adapters (about 75 min)", "make"),
    "make train-tiny-reference": Excuse("trains the tiny reference for an hour; tests/test_reference.py", "make"),
    "python -m dps_map.train_adapter task=sr4 prior=tiny data.n_images=100": Run("steps=2 batch_size=2"),
    "python -m dps_map.run task=sr4 prior=tiny sampler=adapter": Run(FAST),
    "python -m dps_map.run task=sr4 prior=tiny sampler=adapter_dmap": Run(FAST),
    "python -m dps_map.run task=sr4 prior=tiny sampler=dsg prior.adapter=/path/to/sr4_tiny.pt":
        Run(FAST, {"/path/to/sr4_tiny.pt": str(ROOT / "dps_map" / "assets" / "adapters" / "sr4_tiny.pt")}),
    "python -m dps_map.train_adapter task=sr4 prior=adm512 data.kind=folder data.root=/data/train100 "
    "data.n_images=100 batch_size=4 accumulate=16 steps=5000 lr=1e-5 weight_decay=1e-2 perf.precision=bf16 "
    "perf.grad_checkpoint=true export_path=checkpoints/adapters/sr4_adm512.pt":
        Run(f"{TOY} steps=2 batch_size=2 accumulate=1 data.n_images=4", {"/data/train100": "{train}"}),
    "python -m dps_map.train_adapter prior=sd2_base task=sr8 data.kind=folder data.root=/data/train100 "
    "data.n_images=100 batch_size=8 accumulate=8 steps=5000 lr=1e-5 weight_decay=1e-2 warmup=0 "
    "lr_schedule=constant 'augment.crop_scale=[0.9,1.0]' augment.jitter=0.1 export_path=checkpoints/adapters/sr8_sd2_base":
        Run(f"{' '.join(SD2_TOY)} steps=2 batch_size=2 accumulate=1 data.n_images=4", {"/data/train100": "{train}"}),
    # -- docs/latent.md (Stable Diffusion 2), docs/paper.md (reproducing the paper) --------------------------------
    "python -m dps_map.run prior=sd2_tiny task=sr4 sampler=dmap data=demo data.per_photo=1 sampler.respacing=5 "
    "metrics=fast": Run(),
    'make preflight-paper-sd2 ARGS="paths.sd2_base=/models/stable-diffusion-2-base paths.imagenet_val=/data/val"':
        Excuse(REHEARSED, "make"),
    'make train-adapter-paper-sd2 ARGS="paths.sd2_base=/models/stable-diffusion-2-base"': Excuse(REHEARSED, "make"),
    'make reproduce-paper-sd2 ARGS="paths.sd2_base=/models/stable-diffusion-2-base paths.imagenet_val=/data/val"':
        Excuse("the SD2 table on GPUs; " + REHEARSED, "make"),
    "python -m dps_map.run task=sr4 prior=tiny_sr4_reference sampler=ddpm": Run(FAST),
    "make reproduce-paper-small": Excuse("about 26 minutes of CPU; its drivers are tested small in "
                                         "tests/test_experiments.py and tests/test_score_diagnostics.py", "make"),
    r"python -m experiments.score_diagnostics gmm\|tiny\|adm512": Excuse("a table cell naming three commands; the "
                                                                          "paper's one is rehearsed", "help"),
    r"python -m experiments.diversity gmm\|tiny": Excuse("a table cell naming two commands", "help"),
    "python -m experiments.restoration_table SWEEP_DIR": Run(subst={"SWEEP_DIR": "outputs/sweep"}),
    "python -m experiments.adapter_ablation": Excuse("after make adapter-ablation", "help"),
    "python -m experiments.gmm_sampler_study": Excuse("as make gmm-study", "help"),
    "make frontier": Excuse("over an hour on this CPU (the records of frontier_gmm.md and frontier_tiny.md); "
                            "tests/test_experiments.py runs both halves small", "make"),
    "python -m experiments.frontier gmm": Excuse("as make frontier", "help"),
    "python -m experiments.frontier tiny": Excuse("as make frontier", "help"),
    "make dps-regime": Excuse("about 7 minutes; tests/test_experiments.py runs its driver small", "make"),
    "python -m experiments.dps_regime": Excuse("as make dps-regime", "help"),
    "make rehearse-paper": Excuse("tests/test_rehearse_paper.py runs it", "make"),
    "make rehearse-paper ARGS=--no-preload": Excuse("as make rehearse-paper, which tests/test_rehearse_paper.py "
                                                    "runs, with a fresh interpreter per command (slower)", "make"),
    # -- docs/performance.md, docs/testing.md (mutants) ------------------------------------------------------------
    "make bench-quick": Excuse("installs the bench extra (deepinv); tests/test_bench.py runs the bench", "make"),
    "make bench": Excuse("minutes; installs the bench extra; tests/test_bench.py runs the bench", "make"),
    "python -m dps_map.bench prior=adm512 prior.random_init=true device=cuda perf.precision=bf16 batch_sizes=[1,4]":
        Run(f"{TOY} device=cpu quick=true steps=2 repeats=1 net_calls=1 peer=false measurement_batches=[] "
            "samplers=[dps]"),  # the GPU example, on this CPU
    "python -m dps_map.bench": Excuse("make bench-quick; tests/test_bench.py", "compose", "bench"),
    "python -m dps_map.run prior=adm512 prior.class_label=random perf.precision=bf16 perf.grad_checkpoint=true":
        Run(f"{TOY} sampler.respacing=2 data.per_photo=1 progress=false"),
    "python -m dps_map.run prior=tiny task=sr4 sampler=dps data=demo measurement_batch=8":
        Run("sampler.respacing=2 progress=false"),
    "make gpu-wheels": Excuse("downloads from PyPI; tests/test_gpu_check.py checks its pins", "make"),
    "make gpu-check": Excuse("needs a GPU: about 8 minutes on one H100", "make"),
    "make gpu-check SMOKE=1": Excuse("2-3 minutes; tests/test_gpu_check.py runs it (slow)", "make"),
    "python -m dps_map.gpu_check": Excuse("as make gpu-check", "help"),
    "make mutants": Excuse("CI runs it (.ci/run)", "make"),
    'make mutants ARGS="dsg_sign"': Excuse("as make mutants, one mutant", "make"),
    # -- docs/ -----------------------------------------------------------------------------------------------------
    "python -m dps_map.evaluate": Excuse("the module's name; its command lines are run below", "help"),
    "python -m dps_map.aggregate": Excuse("the module's name; make sweep runs it", "help"),
    "python -m dps_map.train_adapter": Excuse("the module's name; docs/adapters.md's command lines", "help"),
    "python -m dps_map.run task=... prior=... sampler=... data=...": Excuse("a schematic of the command line", None),
    "PYTHONPATH=/path/to/mypkg_parent python -m dps_map.run task=sr4 sampler=scaled_dps "
    "'hydra.searchpath=[file:///path/to/myconf]'": Excuse("needs the reader's own module; tests/test_extend.py runs "
                                                         "these examples with its own files", None),
    "python -m dps_map.run task=decimate2 sampler=dmap 'hydra.searchpath=[file:///path/to/myconf]'":
        Excuse("needs the reader's own module; tests/test_extend.py", None),
    "python -m dps_map.run task=gmm_scaled prior=gmm sampler=dps 'hydra.searchpath=[file:///path/to/myconf]'":
        Excuse("needs the reader's own module; tests/test_extend.py", None),
    "python -m dps_map.run -m 'hydra.searchpath=[file:///path/to/myconf]' hydra/launcher=bigcluster ...":
        Excuse("needs a SLURM cluster; tests/test_extend.py composes this launcher from the page", None),
    "python -m dps_map.evaluate RUN_OR_SWEEP_DIR metrics=default": Run(subst={"RUN_OR_SWEEP_DIR": "outputs/sweep"}),
    "python -m dps_map.evaluate outputs/sweep metrics.names=[psnr,ssim,diversity]": Run(),
    "python -m dps_map.run -m ... hydra.sweep.dir=DIR": Excuse("a schematic", None),
    "python -m dps_map.preflight [-m] <overrides>": Excuse("a schematic", None),
    "python -m dps_map.aggregate DIR": Excuse("a schematic", None),
}


def shown_commands() -> dict[str, str]:
    """command -> where it is shown (file: code block / inline), from README.md and docs/*.md."""
    found = {}
    for path in DOCS:
        lines, fence = path.read_text().split("\n"), False
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.strip().startswith("```"):
                fence = not fence
            text = line.strip()
            if (line.startswith("    ") or fence) and PREFIX.match(text):
                while text.endswith("\\") and i + 1 < len(lines):  # continuation lines
                    i += 1
                    text = text[:-1].rstrip() + " " + lines[i].strip()
                found.setdefault(re.split(r"\s+#\s", text)[0].strip(), f"{path.name} (code block)")
            else:
                for m in re.finditer(r"`([^`]+)`", line):
                    if PREFIX.match(m.group(1)):
                        found.setdefault(m.group(1).strip(), f"{path.name} (inline)")
            i += 1
    return found


def test_every_shown_command_is_run_or_excused():
    shown = shown_commands()
    new = sorted(c for c in shown if c not in COMMANDS)
    gone = sorted(c for c in COMMANDS if c not in shown)
    assert not new, "commands shown in README/docs but neither run nor excused here:\n" + "\n".join(
        f"  {c!r}  ({shown[c]})" for c in new)
    assert not gone, "entries here for commands no longer shown:\n" + "\n".join(f"  {c!r}" for c in gone)
    assert all(e.reason for e in COMMANDS.values() if isinstance(e, Excuse))


# -- running them --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Stand-in files (as make rehearse-paper builds them), the environment pointing at them, a scratch working
    directory, and the small sweep `make sweep` writes there (what the evaluate/aggregate commands read)."""
    from PIL import Image

    base = tmp_path_factory.mktemp("readme")
    env = build_standins(base)
    work = base / "work"
    work.mkdir()
    one = base / "one_photo"
    one.mkdir()
    Image.open(next(Path(env["DPS_MAP_IMAGENET_VAL"]).iterdir())).save(one / "photo.png")
    names = {"work": str(work), "val_flat": env["DPS_MAP_IMAGENET_VAL"], "train": env["DPS_MAP_TRAIN_IMAGES"],
             "one_photo": str(one)}
    shell_env = {**os.environ, **{k: v for k, v in env.items() if not k.startswith("_")},
                 "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "WANDB_MODE": "disabled",
                 # experiments/ and tools/ are not installed: a reader runs them in the checkout's root, which this
                 # puts on the path while the commands write into the scratch directory
                 "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for key in ("MAKEFLAGS", "MFLAGS"):
        shell_env.pop(key, None)
    w = {"names": names, "env": shell_env, "work": work, "results": {}}
    w["results"]["make sweep"] = _execute("make sweep", COMMANDS["make sweep"], w)
    return w


def _execute(command: str, spec: Run, world: dict) -> subprocess.CompletedProcess:
    text = command
    for placeholder, value in spec.subst.items():
        text = text.replace(placeholder, value.format(**world["names"]))
    if text.startswith("make"):
        # on the Python that runs the tests (-o: `make test` has just installed it; no .venv of its own for a
        # checkout whose tests run on another environment's Python)
        text = f"{text[:4]} --no-print-directory -C {shlex.quote(str(ROOT))} -o .venv/.installed " \
               f"PY={shlex.quote(sys.executable)}{text[4:]} {spec.make_vars.format(**world['names'])}"
    text = f"{text} {spec.extra}".strip()
    return run_with_guard(["bash", "-c", text], cwd=world["work"], env=world["env"], capture_output=True, text=True,
                          cpu_limit=1800)


RUNS = [c for c, spec in COMMANDS.items() if isinstance(spec, Run)]


@pytest.mark.slow
@pytest.mark.parametrize("command", RUNS)
def test_shown_command_runs(command, world):
    spec = COMMANDS[command]
    proc = world["results"].get(command) or _execute(command, spec, world)
    assert proc.returncode == spec.expect, f"{command}\nexit {proc.returncode}\n{proc.stderr[-3000:]}"
    if spec.stderr:
        assert re.search(spec.stderr, proc.stderr, re.S), proc.stderr[-2000:]
    else:
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


EXCUSED = [c for c, spec in COMMANDS.items() if isinstance(spec, Excuse) and spec.check]


@pytest.mark.slow
@pytest.mark.parametrize("command", EXCUSED)
def test_excused_command_still_composes(command, world, monkeypatch):
    spec = COMMANDS[command]
    words = shlex.split(command.replace("\\|", "|"))
    while "=" in words[0] and not words[0].startswith("-"):  # VAR=value before the command
        key, value = words.pop(0).split("=", 1)
        monkeypatch.setenv(key, value)
    if spec.check == "make":
        proc = run_with_guard(["make", "-n", "--no-print-directory", "-C", str(ROOT), *words[1:]],
                              env=world["env"], capture_output=True, text=True, cpu_limit=120)
        assert proc.returncode == 0, proc.stderr
    elif spec.check == "help":
        module = words[2]
        proc = run_with_guard([sys.executable, "-m", module, "--help"], cwd=world["work"], env=world["env"],
                              capture_output=True, text=True, cpu_limit=300)
        assert proc.returncode == 0 and module.split(".")[-1] in proc.stdout, proc.stderr[-2000:]
    else:  # compose: every job's config composes and passes the start-up checks, with the stand-in files
        for key, value in world["env"].items():
            if key.startswith("DPS_MAP_") or key == "TORCH_HOME":
                monkeypatch.setenv(key, value)
        args = words[3:] if words[0] == "python" else words[1:]
        if spec.config == "config":
            from dps_map.run import check_command_line

            multirun = "-m" in args
            # every (task, sampler, ...) of the sweep, on its first shard: the shards of a configuration differ
            # only in data.shard (composing all 300 jobs of the SLURM example takes minutes)
            args = ["data.shard=0" if a.startswith("data.shard=") else a for a in args]
            jobs = check_command_line([a for a in args if a != "-m"], multirun=multirun)
            assert jobs and all(job.cfg.data.get("shard", 0) == 0 for job in jobs)
        else:
            from support import compose

            cfg = compose(*args, config=spec.config)
            assert cfg.get("prior") is not None
