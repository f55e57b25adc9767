"""`make rehearse-paper`: the paper's make targets, run for real at toy scale on this CPU, the way a user
types them, so the first GPU-days are not spent on a typo.

    python -m tools.rehearse_paper [--work DIR] [--only adm512|sd2] [--no-preload]

1. Builds a stand-in for every file the paper's targets read, in the format of the real file:
   - ``512x512_diffusion.pt``: the adm512 flags at 64x64 with 32 channels, a plain state dict;
   - ``128_512_upsampler.pt``: openai's upsampler flags at 16 -> 64, the same way;
   - ``stable-diffusion-2-base/``: a diffusers folder (unet/, vae/ with 8x downsampling, text_encoder/,
     tokenizer/, scheduler/ with SD 2-base's PNDM config, model_index.json), tiny random networks;
   - the LPIPS AlexNet backbone and the FID Inception weights, random, under ``$TORCH_HOME/hub/checkpoints``
     with their real file names;
   - ImageNet validation images in both layouts (flat ``ILSVRC2012_val_XXXXXXXX.JPEG`` with
     ``LOC_val_solution.csv``, and ``<wnid>/``), and a ``<wnid>/`` folder of training images.
2. Runs the targets a user runs, through the variables a user sets (``DPS_MAP_*`` paths, ``TORCH_HOME``,
   ``ARGS``, ``SCORE_ARGS``, ``SHARDS``, ``LAUNCHER=local``, ``PAPER``/``PAPER_SD2`` output folders):
   ``preflight-paper`` (which must stop and name the adapter training), ``train-adapter-paper``,
   ``preflight-paper`` again, ``reproduce-paper`` (the ADM-512 pixel setting, this project's), then the same
   for the SD2-base latent setting of the authors' published tables (``preflight-paper-sd2``,
   ``train-adapter-paper-sd2``, ``reproduce-paper-sd2``: every sampler of ``PAPER_SD2_SAMPLERS``, DMAP and
   DMAP + estimator included, both estimator samplers on the ControlNets it trains). Scale comes down only
   through overrides a user could type (image size and width of the stand-ins, steps, images); no code path
   exists for the rehearsal alone. The targets run on a preloaded Python (make's ``PY``, Preloaded below): each
   ``$(PY) -m MODULE ARGS`` of a recipe is a fork of one interpreter that has imported what the modules import,
   running the module as ``python -m`` would (its own arguments, environment, working directory, standard
   streams and exit status), so the ~25 commands of a rehearsal cost one interpreter start-up, not 25;
   ``--no-preload`` starts a fresh interpreter for each.
3. Checks the artefact of every stage (preflight.json, adapter checkpoint and ControlNet folders, every
   shard of every sweep, the evaluated metrics, aggregate.json, the restoration tables, the diversity
   aggregate and the score diagnostics; each table's rows and the setting its title names) and prints one line
   per check. Exit code 1 if one fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from dps_map.config import compose

ROOT = Path(__file__).resolve().parents[1]

# -- the scale-down a user would type --------------------------------------------------------------------
#: adm512 at 64x64 with 32 channels, one residual block per level and attention at 8x8 only (channel_mult "" is
#: guided_diffusion's choice for the size: 1,2,3,4); 4.5M parameters, ~0.1 s per forward + VJP on one core
ADM_TOY = ["prior.unet.image_size=64", "prior.unet.num_channels=32", "prior.unet.num_head_channels=16",
           "prior.unet.num_res_blocks=1", "prior.unet.attention_resolutions=8"]
#: the 128 -> 512 upsampler as 16 -> 64 (SR x4 as at 512), the same way
UPSAMPLER_TOY = ["reference.unet.large_size=64", "reference.unet.small_size=16", "reference.unet.num_channels=32",
                 "reference.unet.num_head_channels=16", "reference.unet.num_res_blocks=1",
                 "reference.unet.attention_resolutions=8"]
SD2_TOY = ["prior.image_size=64"]
#: 2 diffusion steps: a guided step (DMAP's inner loop included) and the last one, all a run's code paths; 4 images
#: in 2 shards: 2 per shard, the fewest a run's FID/KID accepts
STEPS, IMAGES, SHARDS = 2, 4, 2
RUN_SCALE = [f"prior.respacing={STEPS}", f"data.max_images={IMAGES}"]
TRAIN_SCALE = ["steps=2", "batch_size=2", "accumulate=1", f"data.n_images={IMAGES}", "save_every=1"]
#: wnids of the stand-in images (real ILSVRC-2012 classes)
WNIDS = ("n01440764", "n02123045", "n03063599", "n04254680")
SD2_TASKS = ("sr8", "gaussian_deblur", "motion_deblur")
#: the samplers make reproduce-paper-sd2 sweeps by default (Makefile PAPER_SD2_SAMPLERS): the baselines, DMAP (the
#: authors' --mode max) and both estimator samplers, which read the same ControlNet folder per task
SD2_SAMPLERS = ("dps", "dmap", "psld", "freedom", "dsg", "adapter_dps", "adapter_dmap")
#: the title line of each restoration table names its setting
TITLES = {"adm512": "ADM-512 pixel setting (this project's; DPS2022's protocol)",
          "sd2": "SD2-base latent setting (the authors' published tables)"}


# -- 1. stand-ins ------------------------------------------------------------------------------------------

def build_adm_checkpoints(ckpt: Path) -> dict:
    """The ADM files (adm512, the 128->512 upsampler, adm256_uncond): state dicts of seeded random networks with
    the flags a run builds from the toy overrides (zero-initialised layers re-drawn, so eps depends on x, t, y)."""
    import torch
    from omegaconf import OmegaConf

    from dps_map.priors.adm import build_unet, random_network
    from dps_map.priors.upsampler import build_sr_unet

    paper = compose("prior=adm512", *ADM_TOY, "+prior@reference=adm128_512_upsampler", *UPSAMPLER_TOY)
    uncond = compose("prior=adm256_uncond", *ADM_TOY)
    ckpt.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, build, flags in (("512x512_diffusion.pt", build_unet, paper.prior.unet),
                               ("128_512_upsampler.pt", build_sr_unet, paper.reference.unet),
                               ("256x256_diffusion_uncond.pt", build_unet, uncond.prior.unet)):
        model = random_network(build, OmegaConf.to_container(flags, resolve=True), seed=len(out))
        torch.save(model.state_dict(), ckpt / name)
        out[name] = ckpt / name
    return out


def build_sd2_folder(folder: Path) -> Path:
    """A Stable Diffusion 2-base folder in the diffusers layout, with tiny random networks: the UNet at 8x8
    latents, a VAE with SD's 8x downsampling and scaling factor, a CLIP text encoder and tokenizer, and
    SD 2-base's scheduler config (PNDM, scaled-linear betas)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 32, 32),
                        latent_channels=4, layers_per_block=1, norm_num_groups=16, sample_size=64,
                        scaling_factor=0.18215)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=77, bos_token_id=62,
                                        eos_token_id=63, pad_token_id=63))
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    text.save_pretrained(folder / "text_encoder", safe_serialization=True)
    vocab_dir = folder.parent / "clip_vocab"  # what the tokenizer is built from (not part of the folder)
    vocab_dir.mkdir(parents=True, exist_ok=True)
    vocab = {chr(97 + k): k for k in range(26)} | {"<|startoftext|>": 62, "<|endoftext|>": 63}
    (vocab_dir / "vocab.json").write_text(json.dumps(vocab))
    (vocab_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"),
                  model_max_length=77).save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "PNDMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "trained_betas": None}, indent=2))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.8.0",
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}, indent=2))
    return folder


def build_metric_weights(hub: Path) -> None:
    """Random weights in the formats of torchvision's AlexNet (LPIPS backbone) and pytorch-fid's Inception."""
    from unittest import mock

    import torch
    import torchvision
    from pytorch_fid import inception as pfi

    from dps_map.metrics.weight_files import WEIGHT_FILES

    hub.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), hub / WEIGHT_FILES["lpips_backbone_alex"].filename)
    # the state dict pytorch-fid's fid_inception_v3 loads: torchvision's Inception3 with the FID blocks
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(torchvision.models.inception.Inception3, "load_state_dict", lambda *a, **k: None):
        inception = pfi.fid_inception_v3()
    torch.save(inception.state_dict(), hub / WEIGHT_FILES["fid_inception"].filename)


def build_imagenet(root: Path, n_val: int = 6, n_train: int = 6) -> dict:
    """ImageNet-like JPEGs cut from scikit-image's photographs (non-square, so the centre crop is exercised):
    validation images flat with LOC_val_solution.csv and in <wnid>/ folders, training images in <wnid>/."""
    import numpy as np
    from PIL import Image

    from dps_map.data import TRAIN_PHOTOS, load_photo

    rng = np.random.default_rng(0)

    def image(k):
        photo = load_photo(TRAIN_PHOTOS[k % len(TRAIN_PHOTOS)])
        h, w = photo.shape[:2]
        ch, cw = min(h, 150), min(w, 180)
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return Image.fromarray(photo[top:top + ch, left:left + cw]).resize((96, 80))

    flat, by_class, train = root / "val_flat", root / "val_wnid", root / "train100"
    rows = []
    for k in range(n_val):
        stem, wnid = f"ILSVRC2012_val_{k + 1:08d}", WNIDS[k % len(WNIDS)]
        img = image(k)
        flat.mkdir(parents=True, exist_ok=True)
        img.save(flat / f"{stem}.JPEG", quality=95)
        (by_class / wnid).mkdir(parents=True, exist_ok=True)
        img.save(by_class / wnid / f"{stem}.JPEG", quality=95)
        rows.append((stem, f"{wnid} 1 1 60 50"))
    with open(root / "LOC_val_solution.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("ImageId", "PredictionString"), *rows])
    for k in range(n_train):
        wnid = WNIDS[k % len(WNIDS)]
        (train / wnid).mkdir(parents=True, exist_ok=True)
        image(100 + k).save(train / wnid / f"{wnid}_{1000 + k}.JPEG", quality=95)
    return {"val_flat": flat, "val_wnid": by_class, "labels": root / "LOC_val_solution.csv", "train": train}


def build_standins(work: Path) -> dict:
    """Every stand-in under work/standins; returns the environment a user would export."""
    base = work / "standins"
    ckpt = base / "checkpoints"
    build_adm_checkpoints(ckpt)
    build_sd2_folder(ckpt / "stable-diffusion-2-base")
    build_metric_weights(base / "torch" / "hub" / "checkpoints")
    data = build_imagenet(base / "imagenet")
    return {"DPS_MAP_CHECKPOINTS": str(ckpt), "DPS_MAP_IMAGENET_VAL": str(data["val_flat"]),
            "DPS_MAP_IMAGENET_VAL_LABELS": str(data["labels"]), "DPS_MAP_TRAIN_IMAGES": str(data["train"]),
            "TORCH_HOME": str(base / "torch"), "_val_wnid": str(data["val_wnid"])}


# -- a preloaded Python: one start-up for every `$(PY) -m MODULE` of the targets ------------------------------
#: what the targets' commands import (each module's own imports, and the libraries they import lazily); a fresh
#: interpreter spends seconds on these, ~25 times in a rehearsal
PRELOAD = ("dps_map.run", "dps_map.preflight", "dps_map.train_adapter", "dps_map.aggregate",
           "experiments.restoration_table", "experiments.score_diagnostics", "dps_map.runner.execute",
           "dps_map.metrics", "dps_map.priors.adm", "dps_map.priors.upsampler", "dps_map.priors.latent",
           "dps_map.adapters", "dps_map.training.adapter", "dps_map.training.latent_controlnet", "lpips", "pytorch_fid",
           "diffusers", "transformers")

#: the `python` the targets run as $(PY): `-m MODULE ARGS` goes to the server, which forks a child that runs the
#: module as `python -m` would, on this command's stdin/stdout/stderr (passed over the socket), working directory
#: and environment, and sends back its exit status; anything else runs on the real interpreter
CLIENT = """#!{python} -IS
import json, os, socket, struct, sys
args = sys.argv[1:]
if len(args) < 2 or args[0] != "-m":
    os.execv({python!r}, [{python!r}, *args])
request = json.dumps({{"argv": args[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
conn = socket.socket(socket.AF_UNIX)
conn.connect({socket!r})
socket.send_fds(conn, [struct.pack("!Q", len(request))], [0, 1, 2])
conn.sendall(request)
status = conn.recv(4)
sys.exit(struct.unpack("!i", status)[0] if len(status) == 4 else 1)  # no status: the child died
"""


def _recv_exactly(conn, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("the client hung up")
        data += chunk
    return data


def _run_forked(conn) -> int:
    """In the forked child: become the client's `python -m MODULE ARGS` and run it; its exit status."""
    import atexit
    import runpy
    import traceback

    import torch

    msg, fds, _, _ = socket.recv_fds(conn, 8, 3)
    request = json.loads(_recv_exactly(conn, struct.unpack("!Q", msg)[0]))
    for k, fd in enumerate(fds):
        os.dup2(fd, k)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # what a fresh `python -m` would do: its directory first on the path, the module run afresh as __main__,
    # torch's threads from this command's OMP_NUM_THREADS
    sys.path[0] = os.getcwd()
    module, *args = request["argv"]
    sys.modules.pop(module, None)
    sys.argv = [module, *args]
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:  # as the interpreter: sys.exit(n) is status n, sys.exit("message") prints it, 1
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # as the interpreter: the traceback, status 1
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # what an interpreter runs at exit (logging's shutdown, ...), then the output
    sys.stdout.flush()
    sys.stderr.flush()
    code &= 0xFF
    conn.sendall(struct.pack("!i", code))
    return code


def serve(path: str) -> None:
    """The server: import PRELOAD once, then fork one child per connection (`python -m tools.rehearse_paper
    --serve SOCKET`; started and ended by Preloaded). Imports only, no computation, before the forks: what
    tests/mutants.py does too (a torch that has run an OpenMP region is not safe to fork)."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(8)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:  # the child: never returns into this loop
            server.close()
            code = 1
            try:
                code = _run_forked(conn)
            finally:
                os._exit(code)
        conn.close()
        while True:  # reap the children that have ended
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


class Preloaded:
    """A preloaded Python for the targets' commands: `with Preloaded(folder, env) as python:` starts the server in
    the targets' environment and writes the client script `python` (pass it as make's PY); the server ends with the
    block."""

    def __init__(self, folder: Path, env: dict):
        self.folder, self.env = folder, env

    def __enter__(self) -> Path:
        import tempfile

        self.folder.mkdir(parents=True, exist_ok=True)
        # a socket's path has at most 107 bytes: a short one of its own, not under the (maybe long) work folder
        self.sockdir = tempfile.mkdtemp(prefix="rehearse-")
        path = os.path.join(self.sockdir, "s")
        self.server = subprocess.Popen([sys.executable, "-m", "tools.rehearse_paper", "--serve", path],
                                       cwd=ROOT, env=self.env, stdout=subprocess.PIPE, text=True)
        if self.server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the preloaded Python did not start (exit {self.server.wait()})")
        client = self.folder / "python"
        client.write_text(CLIENT.format(python=sys.executable, socket=path))
        client.chmod(0o755)
        return client

    def __exit__(self, *exc) -> None:
        import shutil

        self.server.kill()
        self.server.wait()
        shutil.rmtree(self.sockdir, ignore_errors=True)


# -- 2. the targets ----------------------------------------------------------------------------------------
def user_environment(standins: dict) -> dict:
    """The environment a user runs the targets in: this one, with the stand-ins' variables exported."""
    env = {**os.environ, **{k: v for k, v in standins.items() if not k.startswith("_")}}
    env.pop("MAKEFLAGS", None)  # a make that runs this script must not leak its jobserver into ours
    env.pop("MFLAGS", None)
    return env


class Rehearsal:
    def __init__(self, work: Path, env: dict, python: Path | str):
        self.work, self.python = work, python
        self.env = user_environment(env)
        self.extra = env
        self.log = work / "rehearsal.log"
        self.results: list[tuple[str, bool, str]] = []
        self.times: dict[str, float] = {}

    def make(self, target: str, expect: int = 0, env: dict | None = None, **variables) -> subprocess.CompletedProcess:
        """`make <target> VAR=value ...` from the repository, as a user types it; its output goes to the log."""
        cmd = ["make", "--no-print-directory", "-C", str(ROOT), target,
               *[f"{k}={v}" for k, v in variables.items()]]
        # the targets run on the Python that runs this script (make rehearse-paper's .venv, which its `install`
        # prerequisite has just brought up to date; -o: not again for every target, and never a second venv in a
        # checkout that borrows another's Python), preloaded (Preloaded) unless --no-preload
        cmd[4:4] = ["-o", ".venv/.installed", f"PY={self.python}"]
        shown = " ".join(shlex.quote(c) for c in cmd)
        print(f"$ {shown}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, env={**self.env, **(env or {})}, capture_output=True, text=True)
        self.times[target if target not in self.times else f"{target} ({len(self.times)})"] = \
            time.perf_counter() - start
        with open(self.log, "a") as fh:
            fh.write(f"$ {shown}\n{proc.stdout}\n{proc.stderr}\n[exit {proc.returncode}]\n\n")
        self.check(f"make {target} exits {expect}", proc.returncode == expect,
                   f"exit {proc.returncode}; last lines: {' | '.join(proc.stderr.strip().splitlines()[-3:])}")
        return proc

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        self.results.append((what, bool(ok), "" if ok else detail))
        print(f"  [{'ok' if ok else 'FAIL'}] {what}" + ("" if ok else f": {detail}"), flush=True)
        return bool(ok)


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_preflight(r: Rehearsal, folder: Path, n_jobs: int) -> None:
    data = _json(folder / "preflight.json")
    r.check(f"{folder.relative_to(r.work)}/preflight.json: {n_jobs} valid jobs, each timed",
            data is not None and data["n_jobs"] == n_jobs and data["n_invalid"] == 0
            and all(j.get("measured_hours") is not None for j in data["jobs"]), f"got {data and {k: data[k] for k in ('n_jobs', 'n_invalid')}}")


def check_sweep(r: Rehearsal, sweep: Path, n_configs: int, samples_per_image: int = 1) -> None:
    """Every shard of every configuration finished, with its records and evaluated metrics, and the aggregate
    holds every configuration complete."""
    summaries = sorted(sweep.rglob("summary.json"))
    shards = [s for s in summaries if "data.shard=" in str(s.parent)]
    per_shard = IMAGES // SHARDS * samples_per_image
    ok = [s for s in shards if (d := _json(s)) and d["n_samples"] == d["n_expected"] == per_shard]
    r.check(f"{sweep.relative_to(r.work)}: {n_configs} configurations x {SHARDS} shards finished",
            len(shards) == len(ok) == n_configs * SHARDS, f"{len(ok)} of {len(shards)} shard runs complete")
    metrics = [(_json(s) or {}).get("metrics", {}) for s in shards]
    r.check(f"{sweep.relative_to(r.work)}: every run evaluated (LPIPS per sample, FID/KID per run)",
            bool(metrics) and all("lpips" in m and "fid" in m for m in metrics),
            f"metric keys {sorted(metrics[0]) if metrics else None}")
    agg = _json(sweep / "aggregate.json")
    r.check(f"{sweep.relative_to(r.work)}/aggregate.json: {n_configs} complete groups",
            agg is not None and len(agg["groups"]) == n_configs
            and all(not g.get("incomplete") and g["n_samples"] == IMAGES * samples_per_image
                    for g in agg["groups"].values()),
            f"{agg and [(g.get('label'), g['n_samples'], g.get('incomplete')) for g in agg['groups'].values()]}")


def check_table(r: Rehearsal, stem: Path, n_rows: int, setting: str, samplers: tuple = ()) -> None:
    files = [stem.with_suffix(s) for s in (".md", ".csv", ".png")]
    rows = list(csv.DictReader(open(files[1]))) if files[1].is_file() else []
    r.check(f"{stem.relative_to(r.work)}.{{md,csv,png}}: {n_rows} rows, each with PSNR over {IMAGES} samples",
            all(f.is_file() for f in files) and len(rows) == n_rows
            and all(row["psnr"] and int(row["n_samples"]) == IMAGES for row in rows),
            f"{len(rows)} rows; files {[f.name for f in files if f.is_file()]}")
    title = files[0].read_text().splitlines()[0] if files[0].is_file() else ""
    r.check(f"{stem.name}.md's title names its setting: {TITLES[setting]}", TITLES[setting] in title, title)
    if samplers:
        got = {(row["task"], row["sampler"]) for row in rows}
        want = {(t, s) for t in SD2_TASKS for s in samplers}
        r.check(f"{stem.name}: a row for every task x {', '.join(samplers)}", got == want,
                f"missing {sorted(want - got)}, extra {sorted(got - want)}")


def rehearse_adm512(r: Rehearsal) -> None:
    paper = r.work / "paper"
    run_args = " ".join(ADM_TOY + RUN_SCALE)
    common = {"PAPER": paper, "SHARDS": SHARDS, "LAUNCHER": "local", "ARGS": run_args,
              "SCORE_ARGS": " ".join(UPSAMPLER_TOY + ["--num", "2"])}
    adapter = Path(r.env["DPS_MAP_CHECKPOINTS"]) / "adapters" / "sr4_adm512.pt"
    # a fresh user: the adapters reproduce-paper needs are not trained yet
    proc = r.make("preflight-paper", expect=2, **common)
    r.check("preflight-paper names the missing adapter and the command that trains it",
            str(adapter) in proc.stderr and "make train-adapter-paper" in proc.stderr, proc.stderr[-400:])
    r.make("train-adapter-paper", PAPER=paper, ARGS=" ".join(ADM_TOY + TRAIN_SCALE))
    card = _json(adapter.with_suffix(".json"))
    r.check("adapter sr4_adm512.pt with its card, trained with each image's class label from <wnid>/ folders",
            adapter.is_file() and card is not None and card["data"].get("class_labels") == {
                "source": "folder", "n_labelled": IMAGES}, f"card data: {card and card.get('data')}")
    r.make("preflight-paper", **common)
    for name, n in (("restoration", 15), ("adapters", 3), ("diversity", 4)):
        check_preflight(r, paper / "preflight" / name, n * SHARDS)
    scores = _json(paper / "preflight" / "score_diagnostics" / "preflight.json")
    r.check("preflight/score_diagnostics/preflight.json: prior, upsampler, adapter, images and labels all there",
            scores is not None and scores["n_invalid"] == 0, f"{scores}")
    r.make("reproduce-paper", **common)
    check_sweep(r, paper / "restoration", 18)
    check_table(r, paper / "results" / "restoration_adm512", 18, "adm512")
    check_sweep(r, paper / "diversity", 4, samples_per_image=8)
    agg = _json(paper / "diversity" / "aggregate.json") or {"groups": {}}
    r.check("diversity aggregate: per-pixel std and pairwise LPIPS in every group",
            bool(agg["groups"]) and all("pixel_std" in json.dumps(g["metrics"]) and "pairwise_lpips" in
                                        json.dumps(g["metrics"]) for g in agg["groups"].values()),
            f"{[sorted(g['metrics']) for g in agg['groups'].values()][:1]}")
    scores = paper / "results" / "score_diagnostics_adm512.csv"
    methods = {row["method"] for row in csv.DictReader(open(scores))} if scores.is_file() else set()
    r.check("score_diagnostics_adm512.{csv,md,png}: reference, unconditional, dps and adapter scores",
            methods == {"reference", "unconditional", "dps", "adapter"}
            and scores.with_suffix(".md").is_file() and scores.with_suffix(".png").is_file(), f"methods {methods}")


def rehearse_sd2(r: Rehearsal) -> None:
    paper = r.work / "paper_sd2"
    env = {"DPS_MAP_IMAGENET_VAL": r.extra["_val_wnid"], "DPS_MAP_IMAGENET_VAL_LABELS": ""}  # the <wnid>/ layout
    common = {"PAPER_SD2": paper, "SHARDS": SHARDS, "LAUNCHER": "local", "ARGS": " ".join(SD2_TOY + RUN_SCALE)}
    folders = [Path(r.env["DPS_MAP_CHECKPOINTS"]) / "adapters" / f"{t}_sd2_base" for t in SD2_TASKS]
    proc = r.make("preflight-paper-sd2", expect=2, env=env, **common)
    r.check("preflight-paper-sd2 names the missing ControlNet folder and the command that trains it",
            str(folders[0]) in proc.stderr and "make train-adapter-paper-sd2" in proc.stderr, proc.stderr[-400:])
    r.make("train-adapter-paper-sd2", env=env, PAPER_SD2=paper, ARGS=" ".join(SD2_TOY + TRAIN_SCALE))
    r.check("ControlNet folders (config, safetensors, card) for sr8, gaussian_deblur, motion_deblur",
            all((f / "config.json").is_file() and (f / "diffusion_pytorch_model.safetensors").is_file()
                and (f / "dps_map_card.json").is_file() for f in folders), f"{[f.name for f in folders if not f.is_dir()]}")
    r.make("preflight-paper-sd2", env=env, **common)
    n = len(SD2_SAMPLERS)
    check_preflight(r, paper / "preflight" / "sr8", n * SHARDS)
    check_preflight(r, paper / "preflight" / "deblur", 2 * n * SHARDS)
    r.make("reproduce-paper-sd2", env=env, **common)
    check_sweep(r, paper / "restoration", len(SD2_TASKS) * n)
    check_table(r, paper / "results" / "restoration_sd2", len(SD2_TASKS) * n, "sd2", SD2_SAMPLERS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "rehearse_paper",
                        help="stand-ins, outputs and rehearsal.log (emptied first)")
    parser.add_argument("--only", choices=("adm512", "sd2"), default=None)
    parser.add_argument("--no-preload", action="store_true",
                        help="every command of the targets on a fresh interpreter (slower) instead of a fork of one "
                             "that has imported them")
    parser.add_argument("--serve", metavar="SOCKET", help=argparse.SUPPRESS)  # Preloaded's server
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)  # until Preloaded ends it
        return 0
    import shutil
    from contextlib import nullcontext

    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    env = build_standins(work)
    stand_ins = time.perf_counter() - start
    print(f"stand-ins built in {stand_ins:.0f} s under {work / 'standins'}", flush=True)
    with nullcontext(sys.executable) if args.no_preload else Preloaded(work / "bin", user_environment(env)) as python:
        r = Rehearsal(work, env, python)
        r.times["stand-ins"] = stand_ins
        if args.only in (None, "adm512"):
            rehearse_adm512(r)
        if args.only in (None, "sd2"):
            rehearse_sd2(r)
    failed = [what for what, ok, _ in r.results if not ok]
    total = time.perf_counter() - start
    summary = {"checks": [{"check": w, "ok": ok, "detail": d} for w, ok, d in r.results],
               "seconds": {k: round(v, 1) for k, v in r.times.items()}, "total_seconds": round(total, 1),
               "preloaded": not args.no_preload}
    (work / "rehearsal.json").write_text(json.dumps(summary, indent=2))
    print(f"rehearsal: {len(r.results) - len(failed)} of {len(r.results)} checks passed in {total / 60:.1f} min "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in r.times.items())}); log: {r.log}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
