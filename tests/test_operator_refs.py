"""Forward operators against independent implementations, on a natural image (a 128x128 crop of
scikit-image's bundled `astronaut`), each with its tolerance and the reason for it.

| operator | reference | tolerance (max abs, image in [-1, 1]) |
|---|---|---|
| SR x4/x8, antialiased bicubic | PIL `Image.resize(BICUBIC)` on float ('F') images | 1e-6: both float32 (measured 3e-7) |
| Gaussian / motion blur | `scipy.ndimage.correlate(mode="mirror")`, same kernel | 1e-12: both float64 (measured 4e-16) |
| box / random inpainting | numpy masks | exact |
| SR `naive` (bicubic upsampling) | Keys' cubic convolution (a = -0.75) written here as a matrix | 1e-6 (float32, measured 2e-7) |
| inpainting / blur `naive` | their definition: the masked noisy image, the blurred noisy image (numpy, scipy) | exact / 1e-12 |
| deepinv 0.5 Downsampling('bicubic') | interior pixels, input shifted by (f - 2)/2 px; adjoint on y zero near the border | 1e-5 / 1e-6 (float32, measured 1.3e-6 / 6e-8) |
| deepinv 0.5 Blur (forward and adjoint), Inpainting | the flipped kernel, padding='reflect'; the same mask | 1e-12 / exact (float64) |

Conventions: our blur is a correlation (F.conv2d, as the authors' code); deepinv's `Blur` convolves, so
it gets the flipped kernel. torch's 'reflect' padding (d c b | a b c d) is scipy's 'mirror' (scipy's
'reflect' repeats the edge pixel). deepinv's `Downsampling` filters with a fixed 4f x 4f bicubic kernel
centred at f j + 0.5 and then decimates, while PIL/torch centre output pixel j at f j + (f - 1) / 2: they
agree after shifting the input by (f - 2) / 2 pixels (f even), and only away from the border, where
deepinv pads and PIL/torch renormalise the truncated kernel. That border cannot be matched.

`naive(y)` for SR upsamples with torch's 'bicubic' (no antialiasing: an upsampling needs none), Keys' cubic
convolution with a = -0.75 (the kernel of torch and OpenCV's INTER_CUBIC), input edge pixels repeated. PIL's
BICUBIC upsampling is another bicubic (a = -0.5, the kernel renormalised at the border): 0.09 apart at most
on this crop (mean 0.009), so the reference is the formula, not PIL.
"""

from __future__ import annotations

import deepinv as dinv
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.data
import torch
from PIL import Image

from dps_map.operators import Blur, Inpainting, SuperResolution, box_mask, gaussian_kernel, motion_kernel, random_mask

SIZE = 128


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """(128, 128, 3) float64 in [-1, 1]: a crop with face, hair and background texture."""
    return skimage.data.astronaut()[100:228, 150:278].astype(np.float64) / 127.5 - 1


def as_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]


def pil_resize(img: np.ndarray, size: int, method) -> np.ndarray:
    """Per channel, on float32 ('F' mode) images: PIL's own resampling code, no 8-bit rounding."""
    return np.stack([np.asarray(Image.fromarray(img[..., c].astype(np.float32), mode="F").resize((size, size), method))
                     for c in range(img.shape[-1])])


@pytest.mark.parametrize("factor", [4, 8])
def test_bicubic_downsampling_matches_pil(photo, factor):
    ours = SuperResolution(factor, "bicubic")(as_tensor(photo).float())[0].double().numpy()
    ref = pil_resize(photo, SIZE // factor, Image.BICUBIC)
    assert np.abs(ours - ref).max() < 1e-6
    # the photo tells the kernels apart: PIL's bilinear is far from the bicubic result
    assert np.abs(pil_resize(photo, SIZE // factor, Image.BILINEAR) - ref).max() > 0.05


@pytest.mark.parametrize("kind", ["gaussian", "motion"])
def test_blur_matches_scipy_correlate_with_mirror_boundary(photo, kind):
    kernel = gaussian_kernel(31, 3.0) if kind == "gaussian" else motion_kernel(31, 0.5, torch.Generator().manual_seed(1))
    k = kernel.double().numpy()
    ours = Blur(kernel)(as_tensor(photo))[0].numpy()
    ref = np.stack([ndi.correlate(photo[..., c], k, mode="mirror") for c in range(3)])
    assert np.abs(ours - ref).max() < 1e-12
    # the boundary is visible on this photo: zero padding is far off
    zero = np.stack([ndi.correlate(photo[..., c], k, mode="constant") for c in range(3)])
    assert np.abs(zero - ref).max() > 0.1
    if kind == "motion":  # the orientation is visible: the convolution (flipped kernel) is far off
        flipped = np.stack([ndi.convolve(photo[..., c], k, mode="mirror") for c in range(3)])
        assert np.abs(flipped - ref).max() > 0.1


def test_box_masks_match_numpy():
    size, fraction = 64, 0.5
    box = int(round(fraction * size))
    ref = np.ones((size, size))
    top = (size - box) // 2
    ref[top:top + box, top:top + box] = 0
    np.testing.assert_array_equal(box_mask(size, fraction, "center", torch.Generator())[0, 0].numpy(), ref)
    margin = size // 16
    corners = set()
    for seed in range(20):
        mask = box_mask(size, fraction, "random", torch.Generator().manual_seed(seed))[0, 0].numpy()
        rows, cols = np.nonzero(mask == 0)
        r0, c0 = rows.min(), cols.min()
        expected = np.ones((size, size))
        expected[r0:r0 + box, c0:c0 + box] = 0  # one box x box square, nothing else hidden
        np.testing.assert_array_equal(mask, expected)
        assert margin <= r0 <= size - box - margin and margin <= c0 <= size - box - margin
        corners.add((r0, c0))
    assert len(corners) > 10


@pytest.mark.parametrize("pattern", ["box", "random"])
def test_inpainting_is_the_numpy_mask_product(photo, pattern):
    g = torch.Generator().manual_seed(4)
    mask = box_mask(SIZE, 0.4, "random", g) if pattern == "box" else random_mask(SIZE, 0.7, g)
    m = mask[0, 0].numpy().astype(bool)
    ours = Inpainting(mask.double())(as_tensor(photo))[0].numpy()
    np.testing.assert_array_equal(ours, np.where(m[None], photo.transpose(2, 0, 1), 0.0))
    if pattern == "random":  # each pixel kept with probability 0.3 (binomial: 4 std = 0.016 at 16384 px)
        assert abs(m.mean() - 0.3) < 0.016


def test_random_mask_is_the_thresholded_uniform_draw():
    """random_mask draws u ~ U(0, 1) per pixel from the generator and keeps u >= drop_ratio."""
    u = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(9)).numpy()
    np.testing.assert_array_equal(random_mask(32, 0.6, torch.Generator().manual_seed(9)).numpy(),
                                  (u >= 0.6).astype(np.float32))


# -- deepinv 0.5 (a dev dependency: these never skip) -------------------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [4, 8])
def test_bicubic_downsampling_matches_deepinv_in_the_interior(photo, factor):
    x = as_tensor(photo).float()
    ours = SuperResolution(factor, "bicubic")(x)
    physics = dinv.physics.Downsampling(img_size=(3, SIZE, SIZE), factor=factor, filter="bicubic", padding="reflect")
    shift = (factor - 2) // 2
    ref = physics.A(torch.roll(x, (-shift, -shift), (-2, -1)))
    n = SIZE // factor
    inner = (..., slice(2, n - 2), slice(2, n - 2))  # the kernel reaches 2 output pixels from the border
    assert float((ours - ref)[inner].abs().max()) < 1e-5
    assert float((ours - physics.A(x))[inner].abs().max()) > 0.05  # without the shift: misaligned
    # the adjoint (ours: autograd's VJP; deepinv: its transposed filter) on a y that is zero near the
    # border, shifted back by the same offset; compared on the whole image
    y = torch.zeros(1, 3, n, n)
    y[inner] = torch.randn(1, 3, n - 4, n - 4, generator=torch.Generator().manual_seed(factor))
    adjoint = torch.roll(physics.A_adjoint(y), (shift, shift), (-2, -1))
    assert float((SuperResolution(factor, "bicubic").adjoint(y) - adjoint).abs().max()) < 1e-6


@pytest.mark.parametrize("kind", ["gaussian", "motion"])
def test_blur_matches_deepinv_with_the_flipped_kernel(photo, kind):
    kernel = gaussian_kernel(31, 3.0) if kind == "gaussian" else motion_kernel(31, 0.5, torch.Generator().manual_seed(1))
    x = as_tensor(photo)
    ref = dinv.physics.Blur(filter=kernel.double().flip(0, 1)[None, None], padding="reflect").A(x)
    torch.testing.assert_close(Blur(kernel)(x), ref, rtol=0, atol=1e-12)
    # the adjoint: ours is autograd's VJP of the forward map, deepinv's its own transposed convolution
    # with the reflect padding folded back (an independent implementation)
    y = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    physics = dinv.physics.Blur(filter=kernel.double().flip(0, 1)[None, None], padding="reflect")
    torch.testing.assert_close(Blur(kernel.double()).adjoint(y), physics.A_adjoint(y), rtol=0, atol=1e-12)


def test_inpainting_matches_deepinv(photo):
    mask = box_mask(SIZE, 0.5, "random", torch.Generator().manual_seed(0)).double()
    x = as_tensor(photo)
    ref = dinv.physics.Inpainting(img_size=(3, SIZE, SIZE), mask=mask[0].expand(3, -1, -1)).A(x)
    assert torch.equal(Inpainting(mask)(x), ref)


# -- naive(y): the no-prior baseline of every table and the adapter's hint -----------------------------------------
def keys_kernel(s: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys (1981) cubic convolution kernel: (a+2)|s|^3 - (a+3)|s|^2 + 1 on |s| <= 1, a|s|^3 - 5a|s|^2 + 8a|s| - 4a on
    1 < |s| < 2, 0 beyond."""
    s = np.abs(s)
    return np.where(s <= 1, (a + 2) * s**3 - (a + 3) * s**2 + 1,
                    np.where(s < 2, a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a, 0.0))


def cubic_upsampling_matrix(n: int, factor: int, a: float = -0.75, corners: bool = False) -> np.ndarray:
    """(n factor x n): output pixel j reads input position s = (j + 0.5) / factor - 0.5 (pixel centres aligned;
    corners=True: s = j (n - 1) / (n factor - 1)), taps floor(s) - 1 .. floor(s) + 2 weighted by the kernel,
    indices outside [0, n) clamped to the edge pixel."""
    M = np.zeros((n * factor, n))
    for j in range(n * factor):
        s = j * (n - 1) / (n * factor - 1) if corners else (j + 0.5) / factor - 0.5
        for k in range(int(np.floor(s)) - 1, int(np.floor(s)) + 3):
            M[j, min(max(k, 0), n - 1)] += keys_kernel(np.array(s - k), a)
    return M


@pytest.mark.parametrize("factor", [4, 8])
def test_sr_naive_is_cubic_convolution_upsampling(photo, factor):
    """SR naive(y) = clip(M y M^T, -1, 1) with M the cubic-convolution upsampling matrix written above."""
    op = SuperResolution(factor)
    y = op(as_tensor(photo).float())
    ours = op.naive(y)[0].double().numpy()
    M = cubic_upsampling_matrix(SIZE // factor, factor)
    ref = np.clip(np.einsum("ij,cjk,lk->cil", M, y[0].double().numpy(), M), -1, 1)
    assert np.abs(ours - ref).max() < 1e-6
    # the crop tells the conventions apart: corner-aligned sampling (s = j (n - 1) / (n f - 1)) is far off
    C = cubic_upsampling_matrix(SIZE // factor, factor, corners=True)
    assert np.abs(np.clip(np.einsum("ij,cjk,lk->cil", C, y[0].double().numpy(), C), -1, 1) - ref).max() > 0.05


@pytest.mark.parametrize("pattern", ["box", "random"])
def test_inpainting_naive_is_the_masked_noisy_image(photo, pattern):
    """naive(restrict(A x + n)) = m (x + n): the observed pixels as measured, the hidden ones 0 (grey)."""
    g = torch.Generator().manual_seed(6)
    mask = box_mask(SIZE, 0.4, "random", g) if pattern == "box" else random_mask(SIZE, 0.7, g)
    op = Inpainting(mask.double())
    n = 0.05 * np.random.default_rng(1).standard_normal((3, SIZE, SIZE))
    y = op.restrict(op(as_tensor(photo)) + torch.from_numpy(n)[None])
    m = mask[0, 0].numpy().astype(bool)
    np.testing.assert_array_equal(op.naive(y)[0].numpy(), np.where(m[None], photo.transpose(2, 0, 1) + n, 0.0))


@pytest.mark.parametrize("kind", ["gaussian", "motion"])
def test_blur_naive_is_the_blurred_noisy_image(photo, kind):
    """naive(y) for deblurring is the measurement itself: the photo correlated with the kernel (mirror boundary),
    plus the noise; no deconvolution, no second pass of the kernel."""
    kernel = gaussian_kernel(31, 3.0) if kind == "gaussian" else motion_kernel(31, 0.5, torch.Generator().manual_seed(1))
    k = kernel.double().numpy()
    n = 0.05 * np.random.default_rng(2).standard_normal((3, SIZE, SIZE))
    op = Blur(kernel.double())
    y = op.restrict(op(as_tensor(photo)) + torch.from_numpy(n)[None])
    ref = np.stack([ndi.correlate(photo[..., c], k, mode="mirror") for c in range(3)]) + n
    assert np.abs(op.naive(y)[0].numpy() - ref).max() < 1e-12
