"""The 512x512 ADM (adm512, 559M parameters, random weights) on this CPU: what its runs cost in time and memory.

    python -m tools.adm512_cpu [--sections preflight memory vjp128 controlnet] [--work outputs/adm512_cpu]

Writes experiments/results/adm512_cpu.md and .csv (the 512x512 measurements on a CPU in docs/sweeps.md, docs/performance.md). Each section
runs the project's own commands in a child process, so its peak RSS is that process's alone:

- `preflight`: `python -m dps_map.preflight --steps 1 prior=adm512 prior.random_init=true
  prior.class_label=random task=sr8 sampler=dps,dmap data=folder data.path=<one 512x512 image>`: the
  preflight's own table (one warm-up and one timed step per sampler) and the command's wall time.
- `memory`: `dps_map.run` with the random weights saved as a state dict and loaded through `paths.adm512`
  (the real checkpoint path), DMAP (K=3) for 2 steps (2 forwards + 3 VJPs), batch 1, with
  `prior.unet.use_checkpoint=false` and `true`, each under `/usr/bin/time -v`: the whole run's wall time, the
  sampler's seconds (summary.json) and the peak RSS.
- `vjp128`: the adm512 network (the same 559M parameters) on a 128x128 input, batch 1: the peak RSS above the
  resident weights during one VJP of eps (`perf` off, `perf.grad_checkpoint=true`, `perf.precision=bf16`), one
  child process each; VmHWM reset after the weights are built.
- `controlnet`: `python -m dps_map.train_adapter prior=sd2_tiny task=sr4 batch_size=8` (one thread), 20 steps:
  seconds per training step from the exported card.

All times depend on the load of the machine (printed with each section); the forward and VJP counts and
the memory do not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SECTIONS = ("preflight", "memory", "vjp128", "controlnet")
GIB = 2**30


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def one_image_folder(work: Path) -> Path:
    """A folder with one 512x512 photograph (scikit-image's astronaut, resized) for the adm512 runs."""
    from PIL import Image
    from skimage import data as skdata

    folder = work / "image"
    if not (folder / "astronaut.png").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(skdata.astronaut()).resize((512, 512), Image.BICUBIC).save(folder / "astronaut.png")
    return folder


def random_weights(work: Path) -> Path:
    """The adm512 flags with seeded random weights, saved as a state dict (what the official file holds)."""
    import torch

    from dps_map.config.sweep import compose_job
    from dps_map.priors.adm import build_unet, random_network

    path = work / "adm512_random.pt"
    if not path.is_file():
        model = random_network(build_unet, dict(compose_job(["prior=adm512"]).prior.unet))
        torch.save(model.state_dict(), path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
    return path


def timed(args: list[str], threads: int) -> dict:
    """Run a command under /usr/bin/time -v: exit code, wall seconds, peak RSS (bytes), its stdout."""
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - started
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, "peak_rss": int(rss.group(1)) * 1024 if rss else None, "stdout": proc.stdout}


def minsec(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(round(seconds % 60))} s"


# -- sections --------------------------------------------------------------------------------------------
def preflight(work: Path, rows: list) -> list[str]:
    folder = one_image_folder(work)
    args = [sys.executable, "-m", "dps_map.preflight", "--steps", "1", "--out", str(work / "preflight"),
            "prior=adm512", "prior.random_init=true", "prior.class_label=random", "task=sr8", "sampler=dps,dmap",
            "data=folder", f"data.path={folder}"]
    start_load = load()
    r = timed(args, os.cpu_count() or 1)
    result = json.loads((work / "preflight" / "preflight.json").read_text())
    for job in result["jobs"]:
        rows.append({"section": "preflight", "setting": job["sampler"], "seconds_per_step": job["seconds_per_step"],
                     "forward_per_step": job["forward_per_step"], "vjp_per_step": job["vjp_per_step"],
                     "peak_memory_bytes": job["peak_memory_bytes"], "measured_hours": job["measured_hours"]})
    table = [line for line in r["stdout"].splitlines() if line.startswith("|")]
    return ["## Preflight of the ADM-512 pixel setting (sr8, DPS and DMAP, 1000 steps)", "",
            "`python -m dps_map.preflight --steps 1 prior=adm512 prior.random_init=true prior.class_label=random "
            "task=sr8 sampler=dps,dmap data=folder data.path=<one 512x512 image>`: random adm512 weights, one warm-up "
            "and one timed step per sampler, all threads.", "", *table, "",
            f"Exit 0 after {minsec(r['wall_s'])}, peak RSS {r['peak_rss'] / GIB:.1f} GiB; 1-min load average "
            f"{start_load} at the start, {load()} at the end.", ""]


def memory(work: Path, rows: list) -> list[str]:
    folder, ckpt = one_image_folder(work), random_weights(work)
    lines = ["## adm512 at 512x512: time and peak memory of a short DMAP run", "",
             "`/usr/bin/time -v python -m dps_map.run prior=adm512 paths.adm512=<random weights> "
             "prior.class_label=random prior.unet.use_checkpoint=false|true task=sr8 sampler=dmap "
             "sampler.respacing=2 data=folder data.path=<one 512x512 image> metrics=fast`, 2 threads: DMAP (K=3) "
             "2 steps = 2 forwards + 3 VJPs, batch 1. The peak RSS includes the 2.1 GB of weights.", "",
             "| setting | wall (whole run) | sampler | peak RSS | forwards | VJPs | load (start, end) |",
             "|---|---|---|---|---|---|---|"]
    for checkpointing in ("false", "true"):
        out = work / f"run_use_checkpoint_{checkpointing}"
        start_load = load()
        r = timed([sys.executable, "-m", "dps_map.run", "prior=adm512", f"paths.adm512={ckpt}",
                   "prior.class_label=random", f"prior.unet.use_checkpoint={checkpointing}", "task=sr8",
                   "sampler=dmap", "sampler.respacing=2", "data=folder", f"data.path={folder}", "metrics=fast",
                   "progress=false", "overwrite=true", f"hydra.run.dir={out}"], 2)
        summary = json.loads((out / "summary.json").read_text())
        record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
        sampler_s = summary["cost"]["seconds_per_sample"]
        setting = "fp32" + (", `prior.unet.use_checkpoint=true`" if checkpointing == "true" else "")
        rows.append({"section": "memory", "setting": setting, "wall_s": round(r["wall_s"], 1),
                     "sampler_s": round(sampler_s, 1), "peak_rss_bytes": r["peak_rss"],
                     "forward": record["forward"], "vjp": record["vjp"]})
        lines.append(f"| {setting} | {minsec(r['wall_s'])} | {sampler_s:.0f} s | {r['peak_rss'] / GIB:.1f} GiB | "
                     f"{record['forward']} | {record['vjp']} | {start_load}, {load()} |")
    return lines + [""]


def _vjp128_child(mode: str) -> None:
    """In a fresh process: build adm512 (random weights), reset the RSS high-water mark, one VJP at 128x128."""
    import torch

    from dps_map.config.sweep import compose_job
    from dps_map.priors.adm import adm_prior
    from dps_map.runner.timing import PeakMemory

    torch.set_num_threads(2)
    cfg = compose_job(["prior=adm512"]).prior
    prior = adm_prior(unet=dict(cfg.unet), random_init=True, class_label=0)
    prior.configure_perf(precision="bf16" if mode == "bf16" else "fp32", grad_checkpoint=mode == "grad_checkpoint")
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0), requires_grad=True)
    t = torch.tensor([500])
    peak = PeakMemory("cpu")  # resets VmHWM to the current RSS (the built weights)
    if not peak.kind.startswith("peak RSS"):
        raise SystemExit(f"vjp128 needs a resettable RSS high-water mark (/proc/self/clear_refs); here: {peak.kind}")
    resident = int(re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
    eps, _ = prior.predict(x, t)
    (grad,) = torch.autograd.grad((eps * torch.ones_like(eps)).sum(), x)
    assert torch.isfinite(grad).all()
    print(json.dumps({"resident": resident, "peak": round(peak.peak_mb() * 2**20)}))


def vjp128(work: Path, rows: list) -> list[str]:
    lines = ["## One VJP of the adm512 network at 128x128", "",
             "The adm512 network (559M parameters, random weights) on a 128x128 input, batch 1, 2 threads: the "
             "peak RSS above the resident weights during one VJP of eps w.r.t. x_t (`python -m "
             "tools.adm512_cpu --sections vjp128`; each setting in its own process).", "",
             "| setting | resident after build | peak above resident |", "|---|---|---|"]
    for mode in ("fp32", "grad_checkpoint", "bf16"):
        proc = subprocess.run([sys.executable, "-m", "tools.adm512_cpu", "--vjp128-child", mode],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"vjp128 {mode} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        above = r["peak"] - r["resident"]
        rows.append({"section": "vjp128", "setting": mode, "resident_bytes": r["resident"], "peak_above_bytes": above})
        label = {"fp32": "fp32", "grad_checkpoint": "`perf.grad_checkpoint=true`", "bf16": "`perf.precision=bf16`"}[mode]
        lines.append(f"| {label} | {r['resident'] / 1e9:.2f} GB | {above / 1e9:.2f} GB |")
    return lines + ["", f"1-min load average at the end {load()}.", ""]


def controlnet(work: Path, rows: list) -> list[str]:
    out = work / "controlnet"
    steps = 20
    r = timed([sys.executable, "-m", "dps_map.train_adapter", "prior=sd2_tiny", "task=sr4", "batch_size=8",
               f"steps={steps}", "data.n_images=16", "threads=1", "progress_mininterval=60", "resume=false",
               f"out_dir={out / 'train'}", f"export_path={out / 'sr4_sd2_tiny.pt'}"], 1)
    card = json.loads((out / "sr4_sd2_tiny" / "dps_map_card.json").read_text())
    per_step = card["training"]["wall_time_s"] / card["training"]["steps"]
    rows.append({"section": "controlnet", "setting": "sd2_tiny batch 8", "seconds_per_step": round(per_step, 3)})
    return ["## ControlNet training step on prior=sd2_tiny", "",
            f"`python -m dps_map.train_adapter prior=sd2_tiny task=sr4 batch_size=8 steps={steps} data.n_images=16 "
            f"threads=1`: {per_step:.2f} s per step (the training loop's wall time over its {steps} steps; the whole "
            f"command {r['wall_s']:.0f} s, peak RSS {r['peak_rss'] / GIB:.1f} GiB; load average {load()}).", ""]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--work", type=Path, default=Path("outputs/adm512_cpu"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--vjp128-child", choices=("fp32", "grad_checkpoint", "bf16"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.vjp128_child:
        return _vjp128_child(args.vjp128_child)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    started, rows, body = time.perf_counter(), [], []
    for name in args.sections:
        print(f"adm512_cpu: {name} (load {load()})", flush=True)
        body += globals()[name](args.work, rows)
    from experiments.common import header, write_csv

    command = "python -m tools.adm512_cpu " + " ".join(argv if argv is not None else sys.argv[1:])
    extra = ("Random weights: the times and memory of the network, not the quality of any sample. Times depend on "
             "the load other jobs put on the 2 cores (given per section); counts and memory do not.")
    text = "\n".join(header("adm512 (512x512 ADM) on this CPU: time and memory", command.strip(),
                            time.perf_counter() - started, extra) + body) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "adm512_cpu.csv")
    (args.out / "adm512_cpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
