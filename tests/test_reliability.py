"""Reliability and security: start-up validation, untrusted checkpoints, bad images, divergence,
interruption (SIGINT/SIGTERM) and resume. Items already covered elsewhere: the missing-checkpoint CLI
message (test_adm), RGBA/grayscale/odd-size inputs running end to end (test_run)."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dps_map.errors import UnsafeCheckpointError, UserError
from dps_map.io import atomic_write_bytes, pil_to_tensor, read_jsonl, to_uint8
from dps_map.run import main
from dps_map.runner import run
from dps_map.runner.lock import lock_holder
from dps_map.signals import Interrupted, stop_on_signals, write_section

from support import compose, run_with_guard

FAST = ["progress=false", "prior.random_init=true", "sampler=ddpm", "sampler.respacing=2"]


def config(*overrides):
    return compose(*overrides)


def _no_model(*args, **kwargs):
    raise AssertionError("a model was built before validation failed")




@pytest.mark.parametrize("args,expected", [
    (["task.zeat=1"], "unknown key 'task.zeat'"),
    (["+task.zeat=1"], "unknown key zeat in task=sr4"),
    (["+sampler.zzeta=1"], "unknown key zzeta in sampler=dmap"),
    (["+prior.unet.widht=3"], "unknown key widht in prior=tiny unet"),
    (["+data.shards=2"], "unknown key shards in data=demo"),
    (["+metrics.fdi=1"], "unknown key fdi in metrics=fast"),
    (["+num_sample=3"], "unknown key num_sample in the top-level config"),
    (["-m", "sampler=dps,dmap", "+task.zeat=1"], "unknown key zeat"),
    (["task=sr5"], "Could not find 'task/sr5'"),
    (["task=sr8", "prior.unet.image_size=36"], "SR factor 8 does not divide the image size 36"),
    (["task=inpaint_box", "task.box_fraction=1.5"], "box must be smaller than the 64px image"),
    (["task=inpaint_box", "task.box_fraction=0.001"], "a box of 0px does not fit"),
    (["sampler=dps", "+sampler.adapter=/nonexistent/adapter.pt"], "'/nonexistent/adapter.pt' not found"),
    (["sampler=adapter_dps", "paths.adapter=/nonexistent/a.pt"], "missing adapter checkpoint"),
    (["seed=0,1"], "seed=0,1 sweeps over several values: add -m"),
    (["-m", "prior=adm512", "sampler=dps,dmap", "paths.checkpoints=/nonexistent"],  # before any job starts
     "'/nonexistent/512x512_diffusion.pt' not found. Get it from "
     "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/512x512_diffusion.pt"),
])
def test_bad_command_line_is_one_line_exit_2_before_any_model(args, expected, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["dps-map", *args, f"hydra.run.dir={tmp_path / 'run'}"])
    monkeypatch.setattr("dps_map.runner.execute.build_prior", _no_model)
    monkeypatch.setattr("dps_map.runner.execute.Evaluator", _no_model)
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.startswith("dps-map: error: ") and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "run").exists()


def test_bad_value_inside_a_job_is_one_line_exit_2(tmp_path):
    """In a real process: a wrongly typed sampler value (not a typo) is one line, before Hydra starts."""
    out = tmp_path / "run"
    proc = run_with_guard([sys.executable, "-m", "dps_map.run", "sampler=dps", "sampler.zeta=abc",
                           f"hydra.run.dir={out}"], capture_output=True, text=True, cpu_limit=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["dps-map: error: sampler.zeta='abc': expected a finite number >= 0"]
    assert not (out / "run.json").exists()


class Payload:
    """Unpickling this would run code (touch a file): weights_only=True must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_bearing_checkpoint_is_refused_without_running_its_code(tmp_path):
    import torch

    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(1), "payload": Payload(marker)}, evil)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load .*needs pickle code execution"):
        run(config("progress=false", f"prior.checkpoint={evil}"), tmp_path / "run")
    assert not marker.exists()
    assert not list((tmp_path / "run").glob("recon/*"))
    broken = tmp_path / "broken.pt"  # a corrupt file is unreadable, not "unsafe"
    broken.write_bytes(b"\x80\x02garbage")
    with pytest.raises(UserError, match="unreadable .*broken.pt.*not a valid torch checkpoint") as err:
        run(config("progress=false", f"prior.checkpoint={broken}"), tmp_path / "run2")
    assert not isinstance(err.value, UnsafeCheckpointError)


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    """Good images in odd formats (RGBA, 16-bit grayscale, non-square), a corrupt PNG and a text file."""
    from dps_map.data import load_photo

    root = tmp_path_factory.mktemp("odd")
    arr = load_photo("coffee")
    Image.fromarray(arr[:96, :96]).save(root / "a.png")
    Image.fromarray(arr[100:196, 100:196]).convert("RGBA").save(root / "b_rgba.png")
    gray = np.asarray(Image.fromarray(arr[200:296, 200:296]).convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(root / "c_gray16.png")
    Image.fromarray(arr[:150, :200]).save(root / "d_wide.jpg")
    (root / "e_broken.png").write_bytes((root / "a.png").read_bytes()[:200])  # truncated
    (root / "notes.txt").write_text("not an image")
    return root


def test_corrupt_image_skipped_with_warning_and_odd_formats_converted(tmp_path, odd_folder, caplog):
    out = tmp_path / "run"
    summary = run(config(*FAST, "data=folder", f"data.path={odd_folder}"), out)
    assert any("e_broken.png" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    records = {r["id"]: r for r in read_jsonl(out / "metrics.jsonl")}
    assert sorted(records) == ["a", "b_rgba", "c_gray16", "d_wide"] and summary["n_samples"] == 4
    assert records["b_rgba"]["orig_mode"] == "RGBA"
    assert records["c_gray16"]["orig_mode"].startswith("I")  # 16-bit
    assert records["d_wide"]["orig_size"] == [200, 150] and records["d_wide"]["resized"] is True
    assert records["a"]["resized"] is True  # 96 -> 64
    for ident in records:
        assert Image.open(out / "label" / f"{ident}.png").mode == "RGB"
        assert Image.open(out / "label" / f"{ident}.png").size == (64, 64)
    # the 16-bit image is scaled to the same pixels as its 8-bit original (not clipped to white)
    gray8 = Image.open(odd_folder / "c_gray16.png")
    expected = to_uint8(pil_to_tensor(Image.fromarray((np.asarray(gray8) // 257).astype(np.uint8)), 64)[0])
    assert np.abs(np.asarray(Image.open(out / "label" / "c_gray16.png")).astype(int) - expected).max() <= 1


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="contains no images"):
        run(config(*FAST, "data=folder", f"data.path={tmp_path / 'empty'}"), tmp_path / "run")


def test_divergence_is_recorded_and_the_run_continues(tmp_path):
    out = tmp_path / "run"
    summary = run(config("progress=false", "prior.random_init=true", "sampler=dps", "sampler.respacing=3",
                         "sampler.zeta=1e30", "data.per_photo=1", "num_samples=2"), out)
    assert summary["n_measurements"] == 2 and summary["n_failed"] == 4 and summary["n_samples"] == 0
    records = read_jsonl(out / "metrics.jsonl")
    assert len(records) == 4 and all(r["failed"] and isinstance(r["fail_step"], int) for r in records)
    assert all(np.isfinite(r["last_misfit"]) for r in records)
    assert {f["id"] for f in summary["failures"]} == {"chelsea_0", "coffee_0"}
    assert json.loads((out / "summary.json").read_text())["n_failed"] == 4
    assert not (out / "recon").exists()  # nothing written for a diverged sample


def test_signal_inside_a_write_waits_for_it(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    reached = False
    with pytest.raises(Interrupted):
        with stop_on_signals():
            with write_section():
                os.kill(os.getpid(), signal.SIGTERM)
                atomic_write_bytes(tmp_path / "a.bin", b"x" * 4096)
                reached = True
    assert reached and (tmp_path / "a.bin").read_bytes() == b"x" * 4096
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temp file
    with pytest.raises(Interrupted):  # outside a write it stops at once
        with stop_on_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
            raise AssertionError("not interrupted")
    assert signal.getsignal(signal.SIGTERM) is before


def signalled_after_two_records(args, out: Path, signum: int) -> subprocess.CompletedProcess:
    """Run the command (support.run_with_guard) and, once it has written two records, send signum to the process
    that holds the run dir's lock (the run itself)."""
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_with_guard, args, cpu_limit=300)
        while len(read_jsonl(out / "metrics.jsonl")) < 2 and not running.done():
            time.sleep(0.05)
        holder = lock_holder(out)
        if holder:  # else the run has ended: its exit status fails the test
            os.kill(holder["pid"], signum)
        return running.result()


def test_sigint_mid_run_then_resume_completes_without_recomputing(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "dps_map.run", "prior.random_init=true", "sampler=dps", "sampler.respacing=25",
            "data.per_photo=4", "num_samples=1", "progress=false", f"hydra.run.dir={out}"]
    proc = signalled_after_two_records(args, out, signal.SIGINT)
    err = proc.stderr
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "Traceback" not in err
    finished = read_jsonl(out / "metrics.jsonl")
    assert 2 <= len(finished) < 8
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    recon = {p.name: p.stat().st_mtime_ns for p in (out / "recon").glob("*.png")}
    assert sorted(recon) == sorted(f"{r['id']}_{r['k']}.png" for r in finished)  # no image without a record

    again = run_with_guard(args, capture_output=True, text=True, cpu_limit=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == 8 and summary["n_new_samples"] == 8 - len(finished)
    records = read_jsonl(out / "metrics.jsonl")
    assert sorted((r["id"], r["k"]) for r in records) == sorted({(r["id"], r["k"]) for r in records})  # no dupes
    assert {name: (out / "recon" / name).stat().st_mtime_ns for name in recon} == recon  # not rewritten


def test_sigusr2_finishes_the_current_writes_then_requeues_or_stops(tmp_path):
    """SLURM's warning signal (USR2, 120 s before the limit): the write under way completes, then the
    handler installed before ours runs (submitit's: requeue and exit); without one, Interrupted."""
    calls = []

    def requeue(signum, frame):  # what submitit installs in a hydra/launcher=slurm job
        calls.append((signum, (tmp_path / "a.bin").read_bytes() == b"x" * 4096))
        raise SystemExit(-1)

    old = signal.signal(signal.SIGUSR2, requeue)
    try:
        with pytest.raises(SystemExit):
            with stop_on_signals():
                with write_section():
                    os.kill(os.getpid(), signal.SIGUSR2)
                    atomic_write_bytes(tmp_path / "a.bin", b"x" * 4096)
        assert calls == [(signal.SIGUSR2, True)]
        assert signal.getsignal(signal.SIGUSR2) is requeue
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)  # a plain sbatch script: no handler of its own
        with pytest.raises(Interrupted) as stop:
            with stop_on_signals():
                with write_section():
                    os.kill(os.getpid(), signal.SIGUSR2)
                    atomic_write_bytes(tmp_path / "b.bin", b"y" * 4096)
        assert stop.value.signum == signal.SIGUSR2 and (tmp_path / "b.bin").read_bytes() == b"y" * 4096
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]  # no temp file
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR2, old)


REQUEUE_WRAPPER = """
import pathlib, signal, sys
marker = pathlib.Path(sys.argv[1])
def requeue(signum, frame):  # stands in for submitit's handler: `scontrol requeue`, then exit
    marker.write_text("requeued")
    sys.exit(144)
signal.signal(signal.SIGUSR2, requeue)
sys.argv = ["dps_map/run.py", *sys.argv[2:]]
import runpy
runpy.run_module("dps_map.run", run_name="__main__", alter_sys=True)  # as `python -m dps_map.run`
"""


def test_sigusr2_mid_run_requeues_after_the_chunk_and_the_requeued_job_resumes(tmp_path):
    out, marker = tmp_path / "run", tmp_path / "requeued"
    args = ["prior.random_init=true", "sampler=dps", "sampler.respacing=8", "data.per_photo=4", "num_samples=1",
            "progress=false", f"hydra.run.dir={out}"]
    proc = signalled_after_two_records([sys.executable, "-c", REQUEUE_WRAPPER, str(marker), *args], out,
                                       signal.SIGUSR2)
    err = proc.stderr
    assert proc.returncode == 144 and marker.read_text() == "requeued", err
    assert "Traceback" not in err
    finished = read_jsonl(out / "metrics.jsonl")
    assert 2 <= len(finished) < 8
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert sorted(p.name for p in (out / "recon").glob("*.png")) == sorted(f"{r['id']}_{r['k']}.png" for r in finished)
    assert (out / "run.lock").read_text() == ""  # released on the way out
    summary = run(config(*args[:-1]), out)  # the requeued job (in-process: the same config and digest)
    assert summary["n_samples"] == 8 and summary["n_new_samples"] == 8 - len(finished)
    assert summary["n_duplicate_records"] == 0 and len(read_jsonl(out / "metrics.jsonl")) == 8
