"""Tests for dps_map.metrics (CPU only, no network, no real weight files needed)."""

from __future__ import annotations

import math
import os
import subprocess
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
    assert frechet_distance(mu, s, mu2, s2) > 0


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


def test_kid_subsets():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 0.5
    full = kid(x, y)
    assert full > 0
    g = torch.Generator().manual_seed(0)
    mean, std = kid(x, y, subsets=50, subset_size=100, generator=g)
    assert std > 0
    assert mean == pytest.approx(full, rel=0.1)
    # seeded: reproducible
    again = kid(x, y, subsets=50, subset_size=100, generator=torch.Generator().manual_seed(0))
    assert again == (mean, std)
    # subset_size >= set size: every subset is the full set (clamped), so mean = full value, std = 0
    mean2, std2 = kid(x, y, subsets=3, subset_size=1000)
    assert mean2 == pytest.approx(full, rel=1e-10) and std2 == pytest.approx(0, abs=1e-12)


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
    assert (dxy > 0).all()
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


def test_inception_loads_state_dict_file(empty_cache):
    """A file in pytorch-fid's format (torchvision Inception3 keys, 1008 classes, no aux) loads strictly."""
    import torchvision

    from dps_map.errors import UserError

    torch.manual_seed(2)
    tv = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    for m in tv.modules():  # batch-norm statistics of one batch, so the features are O(1) (else they vanish, ~1e-8)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        tv.train()(torch.rand(4, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    sd = tv.state_dict()
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
    r = subprocess.run(
        [sys.executable, "-m", "dps_map.fid_stats", str(tmp_path / "imgs"), str(tmp_path / "out.npz")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
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
