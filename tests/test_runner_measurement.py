"""The runner's measurement, from the files a run writes: `input/<id>.png` must be restrict(A x0 + sigma_y n),
recomputed here from the saved ground truth `label/<id>.png` and the id's own random stream, with every piece
written out rather than called: the stream's seed (sha256 of "<seed>/<id>", docs/sweeps.md "Sweeps: GPUs, SLURM, shards, resume, aggregation"), the box mask drawn
from it (a randint of the top-left corner, then the noise), PIL's bicubic downsampling for SR x4.

Both PNGs are 8-bit. The demo crops are 8-bit images already, so the saved ground truth is x0 itself and the
recomputed measurement equals the saved one at every pixel (measured, both tasks); the test allows one level at
under 1% of the pixels, for inputs that are not 8-bit (half a level lost when the ground truth is saved). A wrong
stream, a missing restrict or the noise added before A moves most pixels by several levels (sigma_y = 0.05 is 6.4
levels).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dps_map.runner import run

from support import compose

SEED, SIGMA, SIZE = 3, 0.05, 64


def config(*overrides):
    return compose("progress=false", *overrides)


def stream_seed(seed: int, key: str) -> int:
    """The 63-bit seed of one measurement's stream: the first 8 bytes of sha256("<seed>/<id>"), little-endian, >> 1."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "little") >> 1


def read_png(path: Path) -> np.ndarray:
    """(C, H, W) float64 in [-1, 1] from an 8-bit RGB PNG."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64).transpose(2, 0, 1) / 127.5 - 1


def to_levels(x: np.ndarray) -> np.ndarray:
    return np.round((np.clip(x, -1, 1) + 1) * 127.5)


def expected_measurement(task: str, x0: np.ndarray, seed: int) -> np.ndarray:
    """restrict(A x0 + sigma n) with the stream seeded by `seed`, each step written out."""
    gen = torch.Generator().manual_seed(seed)
    if task == "inpaint_box":  # box_fraction 0.5 at a random place, a margin of size / 16 from the border
        box, margin = SIZE // 2, SIZE // 16
        top, left = torch.randint(margin, SIZE - box - margin + 1, (2,), generator=gen).tolist()
        mask = np.ones((1, SIZE, SIZE))
        mask[:, top:top + box, left:left + box] = 0
        n = torch.randn(1, 3, SIZE, SIZE, generator=gen)[0].double().numpy()
        return mask * (x0 + SIGMA * n)
    small = np.stack([np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((SIZE // 4, SIZE // 4),
                                                                                        Image.BICUBIC)) for c in x0])
    n = torch.randn(1, 3, SIZE // 4, SIZE // 4, generator=gen)[0].double().numpy()
    return small + SIGMA * n


@pytest.mark.parametrize("task", ["inpaint_box", "sr4"])
def test_saved_measurement_is_restrict_of_A_x0_plus_noise_from_the_ids_stream(tmp_path, task):
    run(config(f"task={task}", "prior=tiny", "sampler=ddpm", "sampler.respacing=1", "data=demo", "data.per_photo=1",
               "num_samples=1", "metrics=fast", f"seed={SEED}"), tmp_path)
    ids = sorted(p.stem for p in (tmp_path / "label").glob("*.png"))
    assert ids == ["chelsea_0", "coffee_0"]
    for item in ids:
        x0 = read_png(tmp_path / "label" / f"{item}.png")
        saved = to_levels(read_png(tmp_path / "input" / f"{item}.png"))
        off = np.abs(saved - to_levels(expected_measurement(task, x0, stream_seed(SEED, item))))
        assert off.max() <= 1 and (off > 0).mean() < 0.01, (item, off.max(), (off > 0).mean())
        # the other id's stream, or the run's seed without the id, is far off: the check can tell streams apart
        other = ids[1 - ids.index(item)]
        for wrong in (stream_seed(SEED, other), SEED):
            assert np.abs(saved - to_levels(expected_measurement(task, x0, wrong))).mean() > 2
