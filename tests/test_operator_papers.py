"""The operators as the papers' code ran them, each against a reference written here from the upstream algorithm.

| operator | upstream | reference here |
|---|---|---|
| `task.method=imresize` (SR) | DPS2022 util/resizer.py:104-167 (MATLAB imresize), used at guided_diffusion/measurements.py:78; Xu et al.'s op.py:571 (the same resizer.py) | MATLAB's antialiased cubic with symmetric padding, numpy, float64; and resize-right's resize of the image itself |
| `task.drop_ratio=[lo, hi]` (random inpainting) | DPS2022 util/img_utils.py:204-216 with mask_prob_range (0.3, 0.7) (configs/inpainting_config.yaml) | the drop fractions of 200 measurement ids, the exact hidden count |

Motion-blur kernels: DPS2022 and Xu et al. draw them with LeviBorodenko/motionblur (not on PyPI); ours are our own
generator. experiments/results/motion_kernels.md compares the two families (docs/methods.md "Operators").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from resize_right import interp_methods, resize

from dps_map.config import resolved
from dps_map.config.targets import build_operator
from dps_map.errors import ConfigError
from dps_map.operators import SuperResolution, random_inpainting
from dps_map.operators.super_resolution import bicubic_matrix, imresize_matrix
from dps_map.runner import checked_sampler

from support import compose


# -- SR: MATLAB imresize ------------------------------------------------------------------------------------------
def matlab_cubic(s: np.ndarray) -> np.ndarray:
    """MATLAB imresize's cubic kernel (Keys, a = -0.5): 1.5|s|^3 - 2.5|s|^2 + 1 on |s| <= 1, -0.5|s|^3 + 2.5|s|^2 - 4|s| + 2
    on 1 < |s| <= 2, 0 beyond."""
    s = np.abs(s)
    return np.where(s <= 1, 1.5 * s**3 - 2.5 * s**2 + 1, np.where(s <= 2, -0.5 * s**3 + 2.5 * s**2 - 4 * s + 2, 0.0))


def matlab_imresize_matrix(n: int, factor: int) -> np.ndarray:
    """(n / factor, n) matrix of MATLAB imresize's antialiased downsampling by 1 / factor along one axis, from its
    algorithm: output pixel j (0-based) is centred at input position u = factor j + (factor - 1) / 2 (pixel areas
    aligned); the kernel is stretched by the factor, h(s) = cubic(s / factor) / factor, over the taps
    k = ceil(u - 2 factor) .. floor(u + 2 factor); the weights are normalised to sum 1; a tap outside [0, n) reads
    the symmetric reflection of the axis (the edge pixel repeated: -1 -> 0, n -> n - 1)."""
    W = np.zeros((n // factor, n))
    for j in range(n // factor):
        u = factor * j + (factor - 1) / 2
        taps = np.arange(int(np.ceil(u - 2 * factor)), int(np.floor(u + 2 * factor)) + 1)
        w = matlab_cubic((u - taps) / factor) / factor
        w = w / w.sum()
        for k, wk in zip(taps, w):
            k = k % (2 * n)  # symmetric reflection, period 2n
            W[j, k if k < n else 2 * n - 1 - k] += wk
    return W


def apply(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    """W x W^T on every channel of x (..., n, n)."""
    return np.einsum("ij,...jk,lk->...il", W, x, W)


@pytest.mark.parametrize("n,factor", [(64, 4), (64, 8), (128, 8), (36, 3)])
def test_imresize_matrix_is_matlabs_algorithm(n, factor):
    ref = matlab_imresize_matrix(n, factor)
    assert np.abs(imresize_matrix(n, factor).numpy() - ref).max() < 1e-12
    # the border decides it: without the symmetric fold (taps outside the image dropped and the rest renormalised,
    # as torch does) the first and last rows differ; the rows whose taps all lie inside are the same
    torch_rows = bicubic_matrix(n, factor).numpy()
    assert np.abs(torch_rows - ref)[[0, -1]].max() > 1e-3
    assert np.abs(torch_rows - ref)[2:-2].max() < 1e-12


@pytest.mark.parametrize("factor", [4, 8])
def test_imresize_operator_is_resize_right_and_the_reference_on_an_image(factor):
    """On a random image in [-1, 1], float32 as the runs: SuperResolution(f, 'imresize') equals MATLAB's algorithm and
    resize-right's resize of the image itself (numpy, symmetric padding) within 1e-5 everywhere, border included."""
    n = 64
    x = torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(factor), dtype=torch.float64) * 2 - 1
    ours = SuperResolution(factor, "imresize")(x.float()).double().numpy()[0]
    ref = apply(matlab_imresize_matrix(n, factor), x.numpy()[0])
    assert np.abs(ours - ref).max() < 1e-5
    direct = resize(x.numpy()[0], scale_factors=[1, 1 / factor, 1 / factor], interp_method=interp_methods.cubic,
                    antialiasing=True, pad_mode="symmetric")
    assert np.abs(ours - direct).max() < 1e-5


@pytest.mark.parametrize("factor", [4, 8])
def test_bicubic_and_imresize_differ_only_in_the_two_pixel_border(factor):
    """torch's antialiased bicubic and imresize agree inside; in the 2-pixel border of y they differ by several
    hundredths on a random image (the measured gap, sr4 and sr8 at 256 px, is in docs/methods.md "Operators")."""
    n = 128
    x = torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    gap = (SuperResolution(factor, "bicubic")(x) - SuperResolution(factor, "imresize")(x)).abs()[0]
    m = n // factor
    inner = gap[:, 2:m - 2, 2:m - 2]
    assert float(inner.max()) < 1e-12
    assert float(gap.max()) > 0.02
    border = gap.clone()
    border[:, 2:m - 2, 2:m - 2] = 0
    assert float(border.max()) == float(gap.max())


def test_imresize_is_selectable_from_the_config():
    cfg = compose("task=sr4", "task.method=imresize")
    checked_sampler(cfg)
    op = build_operator(cfg.task, 64, torch.Generator().manual_seed(0))
    assert op.method == "imresize" and op.describe()["method"] == "imresize"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert np.abs(op(x).numpy()[0] - apply(matlab_imresize_matrix(64, 4), x.numpy()[0])).max() < 1e-12


# -- random inpainting: DPS2022's per-image drop fraction ---------------------------------------------------------
def test_a_drop_range_draws_each_images_fraction_uniformly():
    """DPS2022 (util/img_utils.py:207-211): p ~ U(lo, hi) per image, then int(N p) pixels hidden. Over 200
    measurement ids (one generator each, as the runner seeds them) the fractions fill [lo, hi]: the smallest near lo,
    the largest near hi, the mean near the middle (the mean of 200 uniforms: std 0.4 / sqrt(12 * 200) = 0.008)."""
    size, lo, hi = 64, 0.3, 0.7
    fractions = []
    for i in range(200):
        op = random_inpainting(size, torch.Generator().manual_seed(i), drop_ratio=[lo, hi])
        mask = op.mask
        assert mask.shape == (1, 1, size, size) and set(mask.unique().tolist()) <= {0.0, 1.0}
        fractions.append(1 - float(mask.mean()))
    f = np.array(fractions)
    assert f.min() >= lo - 1 / size**2 and f.max() <= hi
    assert f.min() < lo + 0.02 and f.max() > hi - 0.02
    assert abs(f.mean() - (lo + hi) / 2) < 0.03
    assert len(np.unique(f)) > 150  # a fresh fraction per image, not a few values


def test_a_drop_range_hides_exactly_int_n_p_pixels_spread_over_the_image():
    size = 32
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        p = 0.2 + 0.4 * float(torch.rand((), generator=g, dtype=torch.float64))  # the first draw: the fraction
        hidden = int((1 - random_inpainting(size, torch.Generator().manual_seed(seed), [0.2, 0.6]).mask).sum())
        assert hidden == int(size * size * p)
    # the hidden pixels are spread (drawn without replacement over all pixels): each quadrant gets its share
    masks = torch.cat([random_inpainting(size, torch.Generator().manual_seed(s), [0.5, 0.5]).mask for s in range(50)])
    quadrants = [masks[..., :16, :16], masks[..., :16, 16:], masks[..., 16:, :16], masks[..., 16:, 16:]]
    assert all(abs(float(1 - q.mean()) - 0.5) < 0.02 for q in quadrants)


def test_a_scalar_drop_ratio_gives_todays_masks_bit_for_bit():
    """The scalar (the shipped default 0.7): the pixel kept where the generator's uniform u >= drop_ratio."""
    cfg = compose("task=inpaint_random")
    assert cfg.task.drop_ratio == 0.7
    for seed in range(3):
        op = build_operator(cfg.task, 32, torch.Generator().manual_seed(seed))
        u = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(op.mask, (u >= 0.7).float())


def test_a_drop_range_from_the_command_line_is_checked_and_built():
    cfg = compose("task=inpaint_random", "task.drop_ratio=[0.3,0.7]")
    checked_sampler(cfg)
    op = build_operator(cfg.task, 32, torch.Generator().manual_seed(0))
    assert 0.3 - 1 / 32**2 <= 1 - float(op.mask.mean()) <= 0.7


@pytest.mark.parametrize("value", [[0.7, 0.3], [0.3], [0.3, 0.5, 0.6], [0.3, 1.0], [-0.1, 0.5], ["a", 0.5],
                                   [0.3, float("nan")], [True, 0.5]])
def test_a_bad_drop_range_is_one_line(value):
    plain = resolved(compose("task=inpaint_random"))
    plain["task"]["drop_ratio"] = value
    with pytest.raises(ConfigError) as err:
        checked_sampler(OmegaConf.create(plain))
    assert "task.drop_ratio" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError):  # the library checks it again (a caller from Python)
        random_inpainting(16, torch.Generator(), drop_ratio=value)
