"""The real-size 512x512 ADM (559M parameters) end to end on the CPU, through the real checkpoint path: a
random network saved in the official file's format, loaded by `python -m dps_map.run prior=adm512`, class labels
from an ImageFolder, DMAP with gradient checkpointing (one forward and one VJP through the whole network, then the
last step's forward), metrics and a 512x512 PNG.

Marked slow (a few minutes and up to ~10 GB of RAM on 2 CPU cores): `make test` and CI run it, `make test-fast`
leaves it out. Wall time and peak RSS are printed (-s shows them), never asserted.
"""

import os
import resource
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from dps_map.config.sweep import compose_job
from dps_map.io import read_jsonl
from dps_map.priors.adm import build_unet, random_network

from support import png_psnr, run_with_guard

pytestmark = pytest.mark.slow


def test_full_size_adm512_dmap_with_checkpointing_and_labels_from_an_imagefolder(tmp_path):
    cfg = compose_job(["prior=adm512"])
    flags = dict(cfg.prior.unet)
    assert (flags["image_size"], flags["num_channels"], flags["class_cond"]) == (512, 256, True)
    ckpt = tmp_path / "512x512_diffusion.pt"
    model = random_network(build_unet, flags)
    n_params = sum(p.numel() for p in model.parameters())
    torch.save(model.state_dict(), ckpt)  # plain tensors: loads with weights_only=True like the official file
    del model
    assert 5.5e8 < n_params < 5.6e8
    root = tmp_path / "val" / "n09472597"  # ImageFolder layout: class 980 (volcano)
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((600, 700, 3)) * 255).astype("uint8")).save(root / "ILSVRC2012_val_00000001.JPEG")
    out = tmp_path / "run"
    args = [sys.executable, "-m", "dps_map.run", "prior=adm512", f"paths.adm512={ckpt}", "prior.unet.use_checkpoint=true",
            "task=sr8", "sampler=dmap", "sampler.respacing=2", "sampler.num_inner=1", "data=folder",
            f"data.path={tmp_path / 'val'}", "metrics=fast", "progress=false", f"hydra.run.dir={out}"]
    # the cores this test may use: all of them, or its share when `make test` runs a worker per core (threads on a
    # core another worker holds only wait for each other); the CPU guard is several times what a run uses
    threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = run_with_guard(args, cpu_limit=3600, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    peak_gib = after.ru_maxrss / 2**20
    print(f"\nadm512 at 512x512, DMAP (K=1) 2 steps, use_checkpoint, {threads} thread(s): {wall:.0f} s wall, "
          f"{cpu:.0f} s CPU, peak RSS of the largest child {peak_gib:.1f} GiB")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record,) = read_jsonl(out / "metrics.jsonl")
    # step 1: one forward + K=1 VJP; step 2 (the last): one forward, the sphere's centre (no inner steps). K=1, not
    # the default 3: the same code paths at full size (the inner loop's count is checked on small networks,
    # tests/test_contract.py), for 2 fewer VJPs of the 512 network (each costs more than two forwards: gradient
    # checkpointing recomputes the forward inside the backward pass)
    assert (record["class_label"], record["forward"], record["vjp"], record["steps"]) == (980, 2, 1, 2)
    assert not record.get("failed")
    ident = "n09472597__ILSVRC2012_val_00000001"
    assert abs(record["psnr"] - png_psnr(out / "recon" / f"{ident}_0.png", out / "label" / f"{ident}.png")) < 0.1
    recon = Image.open(out / "recon" / "n09472597__ILSVRC2012_val_00000001_0.png")
    assert recon.size == (512, 512)
