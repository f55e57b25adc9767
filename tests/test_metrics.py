"""Tests for dps_map.metrics (CPU only, no network, no real weight files needed)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from dps_map import fid_stats as fid_stats_cli
from dps_map.errors import MissingFileError
from dps_map.metrics import (
    LPIPS,
    InceptionFeatures,
    check_weights,
    feature_stats,
    fid_from_features,
    frechet_distance,
    kid,
    load_stats,
    pairwise_l2,
    pairwise_lpips,
    pixel_std,
    psnr,
    save_stats,
    ssim,
)

from support import run_with_guard

REPO = Path(__file__).resolve().parents[1]
WEIGHT_ENVS = ("DPS_MAP_LPIPS_BACKBONE", "DPS_MAP_FID_INCEPTION", "DPS_MAP_LPIPS_LINEAR")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """Point TORCH_HOME and torch.hub's dir to an empty tmp dir; unset our weight env vars."""
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(home / "hub"))
    for k in WEIGHT_ENVS:
        monkeypatch.delenv(k, raising=False)
    return home / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def lpips_random():
    torch.manual_seed(0)
    return LPIPS(net="alex", random_backbone=True)


def _images(b=2, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g) * 2 - 1


# ----------------------------------------------------------------------------- FID


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3, size=d), rng.uniform(0.1, 3, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-10)
    # torch inputs give the same value
    got_t = frechet_distance(torch.tensor(mu1), torch.tensor(np.diag(v1)), torch.tensor(mu2), torch.tensor(np.diag(v2)))
    assert got_t == pytest.approx(expected, rel=1e-10)
    # identical Gaussians: exactly 0 up to round-off
    assert abs(frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1))) < 1e-10


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pytorch-fid passes sqrtm(disp=False)
def test_frechet_distance_matches_sqrtm_and_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(1)
    d = 24
    a = rng.normal(size=(300, d)) @ rng.normal(size=(d, d))
    b = rng.normal(size=(250, d)) @ rng.normal(size=(d, d)) + 0.5
    mu1, s1 = feature_stats(a)
    mu2, s2 = feature_stats(b)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(ref, rel=1e-8)
    assert got == pytest.approx(calculate_frechet_distance(mu1, s1, mu2, s2), rel=1e-8)
    assert fid_from_features(a, b) == pytest.approx(got, rel=1e-12)
    # non-commuting covariances: the answer is not the diagonal formula
    diag_only = np.sum((mu1 - mu2) ** 2) + np.sum(np.diag(s1) + np.diag(s2) - 2 * np.sqrt(np.diag(s1) * np.diag(s2)))
    assert abs(got - diag_only) > 1e-3 * abs(got)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pytorch-fid passes sqrtm(disp=False)
def test_fid_with_fewer_samples_than_dimensions_equals_the_covariance_formula():
    """fid_from_features takes the N1 x N2 form when N <= D (a shard, a small run): the same number as the D x D
    formula and pytorch-fid's sqrtm, to round-off; FID(F, F) = 0."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(3)
    d = 64
    a = rng.normal(size=(40, d)) @ rng.normal(size=(d, d))
    b = rng.normal(size=(30, d)) @ rng.normal(size=(d, d)) + 0.3
    reference = frechet_distance(*feature_stats(a), *feature_stats(b))
    assert fid_from_features(a, b) == pytest.approx(reference, rel=1e-9)
    assert fid_from_features(a, b) == pytest.approx(calculate_frechet_distance(*feature_stats(a), *feature_stats(b)),
                                                    rel=1e-6)
    assert abs(fid_from_features(a, a)) < 1e-8 * fid_from_features(a, b)
    assert fid_from_features(a[:2], b[:2]) == pytest.approx(frechet_distance(*feature_stats(a[:2]),
                                                                             *feature_stats(b[:2])), rel=1e-9)


def test_frechet_distance_singular_covariance():
    # fewer samples than dimensions: rank-deficient covariances; FD(P, P) must still be ~0 and FD >= 0
    rng = np.random.default_rng(2)
    a = rng.normal(size=(10, 40))
    mu, s = feature_stats(a)
    assert np.linalg.matrix_rank(s) < 40
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8
    b = rng.normal(size=(10, 40)) + 1.0
    mu2, s2 = feature_stats(b)
    # reference: S_i = A_i^T A_i with A_i the centred features / sqrt(N_i - 1), so Tr((S1 S2)^{1/2}) is the nuclear
    # norm of A1 A2^T (numpy's SVD), written here without dps_map; scipy's sqrtm of the singular product agrees
    a1, a2 = (a - a.mean(0)) / 3.0, (b - b.mean(0)) / 3.0
    expected = np.sum((mu - mu2) ** 2) + np.sum(a1**2) + np.sum(a2**2) - 2 * np.linalg.norm(a1 @ a2.T, "nuc")
    assert frechet_distance(mu, s, mu2, s2) == pytest.approx(expected, rel=1e-10)
    via_sqrtm = np.sum((mu - mu2) ** 2) + np.trace(s + s2) - 2 * np.trace(scipy.linalg.sqrtm(s @ s2).real)
    assert frechet_distance(mu, s, mu2, s2) == pytest.approx(via_sqrtm, rel=1e-5)


# ----------------------------------------------------------------------------- KID


def _kid_double_loop(x, y):
    m, n, d = len(x), len(y), x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1) ** 3  # noqa: E731
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_matches_double_loop():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(9, 5)) + 0.3
    assert kid(x, y) == pytest.approx(_kid_double_loop(x, y), rel=1e-10)
    assert kid(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)) == pytest.approx(
        _kid_double_loop(x, y), rel=1e-5
    )


def _subset_draws(n1, n2, subsets, size, seed):
    """The index draws of kid(..., generator=torch.Generator().manual_seed(seed)): per subset, the first `size`
    entries of a random permutation of the first set, then of the second (torch.randperm, as torchmetrics)."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randperm(n1, generator=g)[:size].numpy(), torch.randperm(n2, generator=g)[:size].numpy())
            for _ in range(subsets)]


def test_kid_subsets_mean_and_population_std_of_the_subset_estimates():
    """kid(subsets=S) = (mean, std) of the S unbiased MMD^2 estimates on random subsets, the std with ddof 0 as
    torchmetrics (std(unbiased=False)) and torch-fidelity (np.std) report it; clean-fid reports the mean only.
    Against torchmetrics' KernelInceptionDistance on the same features and the same torch.randperm draws, and
    against the numpy formula on the subsets drawn here (measured: relative differences 0 for the mean, at most
    1.5e-15 for the std)."""
    import warnings

    from np_reference import poly_mmd2_unbiased
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(120, 8)), rng.normal(size=(100, 8)) + 0.5
    assert kid(x, y) == pytest.approx(poly_mmd2_unbiased(x, y), rel=1e-12)
    subsets, size = 6, 40  # few subsets: ddof 1 would be sqrt(6/5) = 1.095 times larger
    mean, std = kid(x, y, subsets=subsets, subset_size=size, generator=torch.Generator().manual_seed(3))
    vals = np.array([poly_mmd2_unbiased(x[i], y[j]) for i, j in _subset_draws(120, 100, subsets, size, 3)])
    assert mean == pytest.approx(vals.mean(), rel=1e-12)
    assert std == pytest.approx(vals.std(ddof=0), rel=1e-12)
    assert abs(vals.std(ddof=1) - std) > 0.05 * std  # the test sees the ddof

    class Features(torch.nn.Module):  # the features are given: the identity feature extractor
        def forward(self, f):
            return f

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "will save all extracted features in buffer"
        ref = KernelInceptionDistance(feature=Features(), subsets=subsets, subset_size=size)
    ref.update(torch.from_numpy(x), real=True)
    ref.update(torch.from_numpy(y), real=False)
    torch.manual_seed(3)  # torchmetrics draws with the global generator, first set first
    ref_mean, ref_std = (float(v) for v in ref.compute())
    assert mean == pytest.approx(ref_mean, rel=1e-12) and std == pytest.approx(ref_std, rel=1e-12)
    # seeded: reproducible; another seed draws other subsets
    assert kid(x, y, subsets=subsets, subset_size=size, generator=torch.Generator().manual_seed(3)) == (mean, std)
    assert kid(x, y, subsets=subsets, subset_size=size, generator=torch.Generator().manual_seed(4))[0] != mean
    # subset_size >= the sets' (equal) size: every subset is the full set (clamped), so mean = full value, std = 0
    mean2, std2 = kid(x[:100], y, subsets=3, subset_size=1000)
    assert mean2 == pytest.approx(poly_mmd2_unbiased(x[:100], y), rel=1e-10) and std2 == pytest.approx(0, abs=1e-12)


# ----------------------------------------------------------------------------- stats files


def test_save_load_stats_roundtrip(tmp_path):
    rng = np.random.default_rng(5)
    f = rng.normal(size=(6, 4))
    mu, sigma = feature_stats(f)
    assert np.allclose(sigma, np.cov(f, rowvar=False))
    p = tmp_path / "sub" / "ref.npz"
    save_stats(p, mu, sigma, f)
    mu2, sigma2, f2 = load_stats(p)
    assert np.array_equal(mu2, mu) and np.array_equal(sigma2, sigma)
    assert np.allclose(f2, f, atol=1e-6)
    save_stats(p, mu, sigma)
    assert load_stats(p)[2] is None
    with pytest.raises(MissingFileError, match="fid_stats"):
        load_stats(tmp_path / "nope.npz")


# ----------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_known_perturbation():
    ref = _images(3, seed=1).clamp(-0.5, 0.5)  # so ref + delta stays in [-1, 1]
    deltas = torch.tensor([0.02, 0.1, 0.4]).view(3, 1, 1, 1)  # in [-1, 1] units
    x = ref + deltas
    mse01 = (deltas.flatten() / 2) ** 2  # [0, 1] units
    expected = 10 * torch.log10(1 / mse01)
    got = psnr(x, ref)
    assert got.shape == (3,)
    assert torch.allclose(got, expected, atol=1e-4)
    # random perturbation vs an independent numpy computation
    y = (ref + 0.1 * _images(3, seed=2)).clamp(-1, 1)
    mse = np.mean((((y.numpy() + 1) / 2) - ((ref.numpy() + 1) / 2)) ** 2, axis=(1, 2, 3))
    assert np.allclose(psnr(y, ref).numpy(), 10 * np.log10(1 / mse), atol=1e-4)
    assert torch.isinf(psnr(ref, ref)).all()


def test_ssim_identity_and_noise():
    ref = _images(2, h=48, w=48, seed=3)
    s_same = ssim(ref, ref)
    assert s_same.shape == (2,)
    assert torch.allclose(s_same, torch.ones(2, dtype=s_same.dtype))
    small = ssim((ref + 0.05 * _images(2, h=48, w=48, seed=4)).clamp(-1, 1), ref)
    big = ssim((ref + 0.5 * _images(2, h=48, w=48, seed=4)).clamp(-1, 1), ref)
    assert (small < 1).all() and (big < small).all()


def ssim_formula(a: np.ndarray, b: np.ndarray, data_range: float, ddof: int, win: int = 7, pad: bool = False):
    """Mean SSIM per image of (B, C, H, W) arrays (Wang et al. 2004, eq. 13), written out: over every win x win window,
    (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2)), C1 = (0.01 L)^2, C2 = (0.03 L)^2,
    uniform weights, (co)variances with 1 / (win^2 - ddof); averaged over the windows inside the image (pad=False) or
    over one window per pixel of the image reflect-padded by win // 2 (pad=True), and over channels."""
    from numpy.lib.stride_tricks import sliding_window_view

    if pad:
        r = win // 2
        a, b = (np.pad(v, ((0, 0), (0, 0), (r, r), (r, r)), mode="reflect") for v in (a, b))
    wa, wb = (sliding_window_view(v, (win, win), axis=(-2, -1)) for v in (a, b))
    ma, mb = wa.mean((-2, -1)), wb.mean((-2, -1))
    da, db = wa - ma[..., None, None], wb - mb[..., None, None]
    n = win * win - ddof
    va, vb, cab = (da**2).sum((-2, -1)) / n, (db**2).sum((-2, -1)) / n, (da * db).sum((-2, -1)) / n
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = (2 * ma * mb + c1) * (2 * cab + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return ssim_map.reshape(ssim_map.shape[0], -1).mean(1)


def _ssim_pair(h=48, w=40, saturated=True):
    ref = _images(2, h=h, w=w, seed=13)
    x = ref + 0.3 * _images(2, h=h, w=w, seed=14)
    if saturated:
        x[:, :, :6] = 1.5  # a band beyond the range: the clamp to [0, 1] matters
    return x, ref


def test_ssim_is_wangs_formula_at_data_range_1():
    """ssim(x, ref) on images mapped to [0, 1] (x + 1) / 2 = the formula above with L = 1, a 7x7 uniform window and
    the sample covariance (skimage's defaults, README), over the windows inside the image."""
    x, ref = _ssim_pair()
    a, b = (((v + 1) / 2).clamp(0, 1).double().numpy() for v in (x, ref))
    expected = ssim_formula(a, b, data_range=1.0, ddof=1)
    np.testing.assert_allclose(ssim(x, ref).numpy(), expected, rtol=0, atol=1e-12)
    # the data range and the window are visible here: L = 2, or Gaussian weights, or [-1, 1] values, are far off
    assert np.abs(ssim_formula(a, b, data_range=2.0, ddof=1) - expected).max() > 1e-3
    assert np.abs(ssim_formula(2 * a - 1, 2 * b - 1, data_range=1.0, ddof=1) - expected).max() > 1e-3


def test_ssim_formula_is_torchmetrics_with_its_conventions():
    """A second implementation: torchmetrics' SSIM (uniform 7x7 window, data_range 1) is the same formula with the
    population covariance (ddof 0) averaged over every pixel of the reflect-padded image; ours (skimage's
    conventions) differs from it by those two choices only (measured 2e-4 here)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    x, ref = _ssim_pair(saturated=False)
    a, b = (((v + 1) / 2).clamp(0, 1).double() for v in (x, ref))
    theirs = structural_similarity_index_measure(a, b, gaussian_kernel=False, kernel_size=7, data_range=1.0,
                                                 reduction="none").numpy()
    np.testing.assert_allclose(ssim_formula(a.numpy(), b.numpy(), 1.0, ddof=0, pad=True), theirs, rtol=0, atol=1e-12)
    assert np.abs(ssim(x, ref).numpy() - theirs).max() < 2e-3


# ----------------------------------------------------------------------------- LPIPS


def test_lpips_random_backbone(lpips_random):
    x, y = _images(3, h=64, w=64, seed=5), _images(3, h=64, w=64, seed=6)
    d0 = lpips_random(x, x)
    assert d0.shape == (3,)
    assert torch.allclose(d0, torch.zeros(3), atol=1e-7)
    dxy, dyx = lpips_random(x, y), lpips_random(y, x)
    assert torch.allclose(dxy, dyx, rtol=1e-5, atol=1e-7)
    # the value: torchmetrics' own LPIPS implementation with the same backbone tensors and its own copy of the
    # v0.1 linear weights (test_lpips_matches_torchmetrics_from_a_torchvision_backbone_file checks more)
    reference = _torchmetrics_lpips(lpips_random.model.net.state_dict(), prefix="")
    with torch.no_grad():
        expected = reference(x, y).flatten()
    assert float(expected.min()) > 1e-3
    torch.testing.assert_close(dxy, expected, rtol=1e-5, atol=1e-7)
    # gray images are accepted (repeated to 3 channels)
    assert lpips_random(x[:, :1], y[:, :1]).shape == (3,)


def test_lpips_matches_lpips_package(lpips_random):
    """Same numbers as lpips.LPIPS with its shipped linear weights and the same backbone tensors."""
    import warnings

    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    ref.net.load_state_dict(lpips_random.model.net.state_dict())
    x, y = _images(2, h=64, w=64, seed=11), _images(2, h=64, w=64, seed=12)
    with torch.no_grad():
        expected = ref(x, y).flatten()
    assert torch.allclose(lpips_random(x, y), expected, rtol=1e-5, atol=1e-7)


def _torchmetrics_lpips(backbone_state: dict, prefix: str = "features."):
    """torchmetrics' LPIPS (its own port of Zhang et al.'s network: scaling layer, unit-normalised AlexNet features,
    the v0.1 linear weights shipped in torchmetrics), its backbone loaded from `backbone_state`: torchvision keys
    'features.<i>.<p>' (prefix "features.") or lpips' 'slice<k>.<i>.<p>' (prefix "")."""
    import warnings

    from torchmetrics.functional.image.lpips import _LPIPS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _LPIPS(pretrained=True, net="alex", pnet_rand=True).eval()  # pnet_rand: no torchvision download
    if prefix:  # torchmetrics' slices hold torchvision's feature modules under their own indices
        where = {idx: name for name, sl in ref.net.named_children() for idx, _ in sl.named_children()}
        backbone_state = {f"{where[k.split('.')[1]]}.{k.split('.', 1)[1]}": v for k, v in backbone_state.items()
                          if k.startswith(prefix) and k.split(".")[1] in where}
    ref.net.load_state_dict(backbone_state)
    return ref


def test_lpips_matches_torchmetrics_from_a_torchvision_backbone_file(empty_cache):
    """An independent implementation: torchmetrics' LPIPS (version pinned in pyproject's dev extra) with a random
    torchvision AlexNet loaded from the same file, on [-1, 1] images and, with its normalize=True, on the same
    images in [0, 1]: the same distances (measured: max difference 0 on [-1, 1], 3e-10 through [0, 1], distances
    4e-4 to 0.1)."""
    import torchvision

    torch.manual_seed(3)
    feats = {k: v for k, v in torchvision.models.alexnet(weights=None).state_dict().items() if k.startswith("features.")}
    torch.save(feats, empty_cache / "alexnet-owt-7be5be79.pth")
    ours = LPIPS(net="alex")
    reference = _torchmetrics_lpips(feats)
    x, y = _images(3, h=64, w=48, seed=21), _images(3, h=64, w=48, seed=22)
    y[0] = x[0] + 0.05 * (y[0] - x[0])  # one close pair: the distances span an order of magnitude
    with torch.no_grad():
        expected = reference(x, y).flatten()
        expected01 = reference((x + 1) / 2, (y + 1) / 2, normalize=True).flatten()
    got = ours(x, y)
    assert float(expected.max()) > 10 * float(expected.min()) > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got, expected01, rtol=1e-5, atol=1e-7)


def test_constructors_never_download(empty_cache, monkeypatch):
    import urllib.request

    def no_network(*a, **k):
        raise AssertionError("attempted a download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    LPIPS(net="vgg", random_backbone=True)
    InceptionFeatures(random_weights=True)
    with pytest.raises(MissingFileError):
        LPIPS(net="alex")
    with pytest.raises(MissingFileError):
        InceptionFeatures()


def test_lpips_loads_backbone_from_hub_cache(empty_cache):
    import torchvision

    torch.manual_seed(1)
    tv = torchvision.models.alexnet(weights=None)
    feats = {k: v for k, v in tv.state_dict().items() if k.startswith("features.")}  # small: no classifier
    torch.save(feats, empty_cache / "alexnet-owt-7be5be79.pth")
    m = LPIPS(net="alex")
    assert torch.equal(m.model.net.slice1[0].weight, feats["features.0.weight"])
    assert torch.equal(getattr(m.model.net.slice5, "10").bias, feats["features.10.bias"])
    # explicit path (a directory holding the file) works too, and a file of the wrong net is rejected
    m2 = LPIPS(net="alex", backbone_path=empty_cache)
    assert torch.equal(getattr(m2.model.net.slice3, "6").weight, feats["features.6.weight"])
    from dps_map.errors import UserError

    with pytest.raises(UserError, match="does not match"):
        LPIPS(net="vgg", backbone_path=empty_cache / "alexnet-owt-7be5be79.pth")


def test_lpips_missing_backbone(empty_cache):
    with pytest.raises(MissingFileError) as e:
        LPIPS(net="alex")
    msg = str(e.value)
    assert "alexnet-owt-7be5be79.pth" in msg and "paths.lpips_backbone" in msg
    assert "download.pytorch.org" in msg and "\n" not in msg
    with pytest.raises(MissingFileError, match="vgg16-397923af.pth"):
        LPIPS(net="vgg")
    with pytest.raises(MissingFileError, match="does_not_exist"):
        LPIPS(net="alex", backbone_path="/tmp/does_not_exist/alexnet.pth")


# ----------------------------------------------------------------------------- Inception / weights


def test_inception_missing_weights(empty_cache):
    with pytest.raises(MissingFileError) as e:
        InceptionFeatures()
    msg = str(e.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg and "paths.fid_inception" in msg
    assert "github.com/mseitzer/pytorch-fid" in msg


@pytest.fixture(scope="module")
def inception_state():
    """Random weights in pytorch-fid's format (torchvision Inception3 keys, 1008 classes, no aux): the real file is
    not available offline. Batch-norm statistics of one batch, so the features are O(1) (else they vanish, ~1e-8)."""
    import torchvision

    torch.manual_seed(2)
    tv = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        tv.train()(torch.rand(4, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    return tv.state_dict()


def test_inception_features_match_torch_fidelity_on_the_same_weights(empty_cache, inception_state):
    """An independent implementation of the FID Inception: torch-fidelity's FeatureExtractorInceptionV3 (its own
    port of the TF graph; version pinned in pyproject's dev extra), loading the same weight file. It takes uint8
    images v and computes (v - 128) / 128 after its TF1-style resize, a no-op at 299x299; ours gets those values as
    its [-1, 1] input. Measured: bit-identical pool3 features (max difference 0, features up to 8). Fed
    v / 127.5 - 1 instead, ours differs by up to 1.8: the comparison sees the input scaling."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = empty_cache / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(inception_state, path)
    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    images = torch.randint(0, 256, (2, 3, 299, 299), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)
    with torch.no_grad():
        (expected,) = reference(images)
    got = InceptionFeatures()((images.float() - 128) / 128)
    scale = float(expected.abs().max())
    assert got.shape == expected.shape == (2, 2048)
    assert float((got - expected).abs().max()) < 1e-5 * scale
    assert float((expected[0] - expected[1]).abs().max()) > 0.1 * scale  # the features see the image


def test_inception_loads_state_dict_file(empty_cache, inception_state):
    """A file in pytorch-fid's format (torchvision Inception3 keys, 1008 classes, no aux) loads strictly; the
    features are pytorch-fid's own pipeline on it (a regression pin of the resize and [0, 1] conventions: the
    network is the class ours builds; test_inception_features_match_torch_fidelity_on_the_same_weights is the
    independent reference)."""
    from dps_map.errors import UserError

    sd = dict(inception_state)
    torch.save(sd, empty_cache / "pt_inception-2015-12-05-6726825d.pth")
    loaded = InceptionFeatures()  # found in the (tmp) hub cache
    assert torch.equal(loaded.net.blocks[0][0].conv.weight, sd["Conv2d_1a_3x3.conv.weight"])
    assert torch.equal(loaded.net.blocks[3][2].branch_pool.conv.weight, sd["Mixed_7c.branch_pool.conv.weight"])
    assert torch.equal(loaded.net.blocks[2][0].branch_pool.bn.running_var, sd["Mixed_5b.branch_pool.bn.running_var"])
    x = _images(2, h=40, w=40, seed=7)
    f = loaded(x)
    assert f.shape == (2, 2048) and f.dtype == torch.float32
    # the features are pytorch-fid's: its own InceptionV3 (pool3, resize_input) with these weights, fed the images
    # in [0, 1] with its normalize_input, as pytorch-fid's fid_score does (its download replaced by the same dict)
    from unittest import mock

    from pytorch_fid import inception as pfi

    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: sd):
        reference = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True,
                                    normalize_input=True).eval()
    with torch.no_grad():
        expected = reference((x + 1) / 2)[0].flatten(1)
    scale = float(expected.abs().max())
    assert float((f - expected).abs().max()) < 1e-5 * scale
    assert float((f[0] - f[1]).abs().max()) > 0.01 * scale  # the features see the image
    # a file with a missing key is rejected with one clear line
    del sd["fc.bias"]
    bad = empty_cache.parent / "bad.pth"
    torch.save(sd, bad)
    with pytest.raises(UserError, match="do not match"):
        InceptionFeatures(weights_path=bad)


def test_check_weights(empty_cache, tmp_path, monkeypatch):
    check_weights(["psnr", "ssim", "pixel_std", "diversity"], {})  # no weights needed (diversity: std, L2)
    with pytest.raises(MissingFileError, match="pt_inception-2015-12-05-6726825d.pth"):
        check_weights(["psnr", "fid"], {})
    with pytest.raises(MissingFileError, match="alexnet-owt-7be5be79.pth"):
        check_weights(["lpips"], {"lpips_backbone": None})
    f = tmp_path / "any_name.pth"
    f.write_bytes(b"x")
    check_weights(["lpips", "kid", "diversity"], {"lpips_backbone": str(f), "fid_inception": str(f)})
    # env var is honoured (and beats the hub cache)
    monkeypatch.setenv("DPS_MAP_FID_INCEPTION", str(f))
    check_weights(["fid"], {})
    monkeypatch.setenv("DPS_MAP_FID_INCEPTION", str(tmp_path / "gone.pth"))
    with pytest.raises(MissingFileError, match="gone.pth"):
        check_weights(["fid"], {})


# ----------------------------------------------------------------------------- diversity


def test_diversity_identical_is_zero(lpips_random):
    x = _images(1, h=32, w=32, seed=8).repeat(4, 1, 1, 1)
    assert pixel_std(x) == pytest.approx(0, abs=1e-12)
    assert pairwise_l2(x) == pytest.approx(0, abs=1e-12)
    assert pairwise_lpips(x, lpips_random) == pytest.approx(0, abs=1e-6)


def test_diversity_hand_computation(lpips_random):
    # three constant images -1, 0, 1: per-pixel population std sqrt(2/3); pair RMS distances 1, 2, 1
    s = torch.stack([torch.full((1, 2, 2), v) for v in (-1.0, 0.0, 1.0)])
    assert pixel_std(s) == pytest.approx(math.sqrt(2 / 3), rel=1e-12)
    assert pairwise_l2(s) == pytest.approx(4 / 3, rel=1e-12)
    mad = lambda a, b: (a - b).abs().flatten(1).mean(1)  # noqa: E731
    assert pairwise_lpips(s, mad, batch_size=2) == pytest.approx(4 / 3, rel=1e-12)
    # two images [0, 0] and [0, 1]: per-pixel std [0, 0.5] -> 0.25; RMS sqrt(1/2)
    t = torch.tensor([[[[0.0, 0.0]]], [[[0.0, 1.0]]]])
    assert pixel_std(t) == pytest.approx(0.25, rel=1e-12)
    assert pairwise_l2(t) == pytest.approx(math.sqrt(0.5), rel=1e-12)
    # pairwise LPIPS is the mean of the model's pair distances
    x = _images(3, h=64, w=64, seed=9)
    expected = (lpips_random(x[:1], x[1:2]) + lpips_random(x[:1], x[2:]) + lpips_random(x[1:2], x[2:])) / 3
    assert pairwise_lpips(x, lpips_random) == pytest.approx(float(expected), rel=1e-5)
    for fn in (pixel_std, pairwise_l2):
        with pytest.raises(ValueError):
            fn(s[:1])
    with pytest.raises(ValueError):
        pairwise_lpips(s[:1], mad)


# ----------------------------------------------------------------------------- fid_stats CLI


def _write_pngs(folder: Path, n=3):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(10)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, size=(24 + 8 * i, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_fid_stats_cli_missing_weights_exits_2(tmp_path):
    _write_pngs(tmp_path / "imgs", 2)
    env = {k: v for k, v in os.environ.items() if k not in WEIGHT_ENVS}
    env["TORCH_HOME"] = str(tmp_path / "empty_torch_home")
    r = run_with_guard(
        [sys.executable, "-m", "dps_map.fid_stats", str(tmp_path / "imgs"), str(tmp_path / "out.npz")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        cpu_limit=120,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "pt_inception-2015-12-05-6726825d.pth" in lines[0] and "paths.fid_inception" in lines[0]
    assert not (tmp_path / "out.npz").exists()


def test_fid_stats_cli_writes_stats(tmp_path, capsys, monkeypatch):
    """CLI plumbing (listing, crop/resize, batching, stats, npz) with a cheap stand-in feature extractor."""
    import dps_map.metrics.fid as fid_mod

    class MeanColour(torch.nn.Module):  # features = per-channel means and maxima (6-d)
        def __init__(self, weights_path=None, random_weights=False, device=None):
            super().__init__()

        def forward(self, x):
            return torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)

    monkeypatch.setattr(fid_mod, "InceptionFeatures", MeanColour)
    _write_pngs(tmp_path / "imgs", 3)
    files = fid_stats_cli.list_images(tmp_path / "imgs")
    assert [f.name for f in files] == ["0.png", "1.png", "2.png"]
    img = fid_stats_cli.load_image(files[1], 16)
    assert img.shape == (3, 16, 16) and img.min() >= -1 and img.max() <= 1
    out = tmp_path / "ref.npz"
    rc = fid_stats_cli.main([str(tmp_path / "imgs"), str(out), "--image-size", "16", "--batch-size", "2", "--device", "cpu"])
    assert rc == 0
    mu, sigma, feats = load_stats(out)
    imgs = torch.stack([fid_stats_cli.load_image(f, 16) for f in files])
    expected = torch.cat([imgs.mean((2, 3)), imgs.amax((2, 3))], 1).double().numpy()
    assert feats.shape == (3, 6) and np.allclose(feats, expected, atol=1e-6)
    assert np.allclose(mu, expected.mean(0)) and np.allclose(sigma, np.cov(expected, rowvar=False))
    # an empty folder is a one-line user error with exit code 2
    (tmp_path / "empty").mkdir()
    assert fid_stats_cli.main([str(tmp_path / "empty"), str(out)]) == 2
    assert "no images" in capsys.readouterr().err


# ----------------------------------------------------------------------------- sliced Wasserstein


def _sw_directions(d, num_projections=256, seed=0):
    """The raw directions sliced_wasserstein draws (torch.randn(d, P) from its seed); the reference normalises them."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, num_projections, generator=g, dtype=torch.float64).numpy()


def test_sliced_wasserstein_is_the_mean_1d_w1_over_unit_directions():
    """Equal sizes: the mean over the same unit directions of scipy's exact 1-D W1 (4e-16 relative); unequal
    sizes: the matched-quantile form in numpy; and, free of the direction draw, a shifted set X + c at 4096
    directions against the closed form ||c|| Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2)) (0.6% measured, Monte-Carlo
    error of the directions)."""
    from np_reference import mean_abs_projection_on_sphere, sliced_w1, sliced_w1_quantiles

    from dps_map.metrics.posterior import sliced_wasserstein

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 6)), rng.standard_t(3, size=(300, 6)) * 0.7 + 0.2
    got = sliced_wasserstein(torch.from_numpy(a), torch.from_numpy(b))
    assert got == pytest.approx(sliced_w1(a, b, _sw_directions(6)), rel=1e-12)
    assert sliced_wasserstein(torch.from_numpy(a), torch.from_numpy(b), seed=5) == pytest.approx(
        sliced_w1(a, b, _sw_directions(6, seed=5)), rel=1e-12)
    got = sliced_wasserstein(torch.from_numpy(a), torch.from_numpy(b[:170]), num_projections=64)
    assert got == pytest.approx(sliced_w1_quantiles(a, b[:170], _sw_directions(6, 64)), rel=1e-12)
    assert got == pytest.approx(sliced_wasserstein(torch.from_numpy(b[:170]), torch.from_numpy(a), num_projections=64),
                                rel=1e-12)
    c = np.array([0.3, -0.2, 0.5, 0.1, 0.0, 0.4])
    shifted = sliced_wasserstein(torch.from_numpy(a), torch.from_numpy(a + c), num_projections=4096)
    assert shifted == pytest.approx(np.linalg.norm(c) * mean_abs_projection_on_sphere(6), rel=0.02)


# ----------------------------------------------------------------------------- posterior and score diagnostics


def test_posterior_report_against_numpy():
    """Every number of posterior_report against numpy on the same samples, the posterior mixture recomputed from the
    prior's parameters by Gaussian conditioning (tests/np_reference.py): a sample set with the wrong mode weights and
    half the within-mode covariance, so no ratio is 1; a non-finite row is dropped."""
    from np_reference import gmm_log_component_densities, gmm_posterior, gmm_sample, sliced_w1_quantiles
    from omegaconf import OmegaConf
    from scipy.special import logsumexp

    from dps_map.config.targets import build_prior
    from dps_map.metrics.posterior import posterior_report
    from dps_map.priors.gmm import find_multimodal_problem

    mix = build_prior(OmegaConf.load(REPO / "conf/prior/gmm.yaml")).mixture
    A, _, y, post, _ = find_multimodal_problem(mix, 2, 0.05, torch.Generator().manual_seed(0))
    w, m, c = gmm_posterior(mix.weights.numpy(), mix.means.numpy(), mix.covs.numpy(), A.numpy(), y.numpy(), 0.05)
    rng = np.random.default_rng(1)
    wrong = np.where(w >= 0.1, 1.0, 0.0) + 1e-3  # the big modes equally weighted
    x = gmm_sample(wrong / wrong.sum(), m, 0.5 * c, 600, rng)
    reference = gmm_sample(w, m, c, 500, rng)
    x_nan = np.concatenate([x, np.full((1, x.shape[1]), np.nan)])
    report = posterior_report(torch.from_numpy(x_nan), post, torch.from_numpy(reference), A, y)

    logp = gmm_log_component_densities(x, w, m, c)
    freq = np.bincount(logp.argmax(1), minlength=len(w)) / len(x)
    entropy = lambda p: -np.sum(p[p > 0] * np.log(p[p > 0]))  # noqa: E731
    mean = w @ m
    total_cov = np.einsum("k,kij->ij", w, c + m[:, :, None] * m[:, None, :]) - np.outer(mean, mean)
    # within-mode spread: the sample-weighted mean of each mode's covariance trace, over the modes that hold at
    # least two samples (a single sample has no covariance)
    sizes = np.bincount(logp.argmax(1), minlength=len(w))
    spread = [np.trace(np.cov(x[logp.argmax(1) == k], rowvar=False)) if sizes[k] >= 2 else 0.0 for k in range(len(w))]
    within = np.sum(sizes * np.array(spread)) / sizes[sizes >= 2].sum()
    expected = {
        "n_finite": len(x),
        "log_posterior": logsumexp(logp, axis=1).mean(),
        "misfit": np.linalg.norm(x @ A.numpy().T - y.numpy(), axis=1).mean(),
        "sliced_wasserstein": sliced_w1_quantiles(x, reference, _sw_directions(x.shape[1])),
        "trace_ratio": np.trace(np.cov(x, rowvar=False)) / np.trace(total_cov),
        "mode_weight_tv": 0.5 * np.abs(freq - w).sum(),
        "effective_modes_ratio": np.exp(entropy(freq) - entropy(w)),
        "within_mode_trace_ratio": within / np.sum(w * np.trace(c, axis1=1, axis2=2)),
        "mean_error": np.linalg.norm(x.mean(0) - mean),
    }
    assert set(report) == set(expected)
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, rel=1e-6), key
    # the sample set was built to be wrong in each respect
    assert report["mode_weight_tv"] > 0.05 and abs(report["effective_modes_ratio"] - 1) > 0.05
    assert 0.3 < report["within_mode_trace_ratio"] < 0.7


def test_score_error_and_score_mean_against_numpy():
    """score_error = mean over states and coordinates of the squared difference; score_mean = (||mean_n s_n|| /
    sqrt(d), sqrt(sum_i Var_i(s) / (N d))) with the sample variance (ddof 1), in numpy on (N, C, H, W) scores."""
    from dps_map.metrics import score_error, score_mean

    rng = np.random.default_rng(2)
    s, s_ref = rng.normal(size=(6, 2, 3, 3)) + 0.4, rng.normal(size=(6, 2, 3, 3))
    flat = s.reshape(6, -1)
    assert score_error(torch.from_numpy(s), torch.from_numpy(s_ref)) == pytest.approx(np.mean((s - s_ref) ** 2),
                                                                                      rel=1e-12)
    value, floor = score_mean(torch.from_numpy(s))
    assert value == pytest.approx(np.linalg.norm(flat.mean(0)) / np.sqrt(18), rel=1e-12)
    assert floor == pytest.approx(np.sqrt(flat.var(0, ddof=1).sum() / (6 * 18)), rel=1e-12)
