"""FID and KID on pytorch-fid's Inception-v3 pool3 features (2048-d), built without any download.

FID (Heusel et al. 2017): ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) between Gaussians fitted
to the two feature sets. KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import nn

from dps_map.errors import MissingFileError, UserError
from dps_map.metrics.weight_files import fid_inception_path

FEATURE_DIM = 2048


def _np64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _clip_eigs(w: np.ndarray) -> np.ndarray:
    """Eigenvalues below the numerical rank tolerance d * eps * max(w) (round-off, incl. negatives) -> 0."""
    tol = max(float(w.max(initial=0.0)), 0.0) * w.size * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root V diag(sqrt(w)) V^T through eigh (round-off eigenvalues set to 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(_clip_eigs(w))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, S1) and N(mu2, S2):
    ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2}).

    Tr((S1 S2)^{1/2}) = Tr((S1^{1/2} S2 S1^{1/2})^{1/2}) (S1 S2 is similar to that symmetric PSD
    matrix), evaluated as the sum of square roots of its eigenvalues (eigh). Eigenvalues below the
    numerical rank tolerance (d * eps * largest) are set to 0 before each square root, so round-off in
    the null space of singular covariances (fewer samples than dimensions) is not amplified by the
    sqrt: FD(P, P) = 0 to machine precision, where scipy's sqrtm (pytorch-fid) leaves ~1e-7 relative
    error. Real-valued by construction, no eps regularisation. Computed in float64."""
    mu1, mu2 = _np64(mu1).ravel(), _np64(mu2).ravel()
    s1, s2 = _np64(sigma1), _np64(sigma2)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(_clip_eigs(np.linalg.eigvalsh((m + m.T) / 2))).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma): feature mean and covariance (np.cov, rowvar=False, ddof=1, as pytorch-fid), float64."""
    f = _np64(feats)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need an (N, D) feature array with N >= 2, got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def fid_from_features(feats1, feats2) -> float:
    """FID between two feature sets (N_i, D): frechet_distance of their means and covariances.

    With fewer samples than dimensions (N_i <= D: a shard, a small run) the same number comes exactly from the
    centred features A_i = (F_i - mu_i) / sqrt(N_i - 1), S_i = A_i^T A_i: Tr(S_i) = ||A_i||_F^2 and
    Tr((S1 S2)^{1/2}) = the sum of the singular values of A1 A2^T (the nonzero eigenvalues of S1 S2 = A1^T (A1 A2^T
    A2) are those of (A1 A2^T)(A1 A2^T)^T). An N1 x N2 SVD instead of two D x D eigendecompositions
    (D = 2048: seconds per run on a CPU)."""
    f1, f2 = _np64(feats1), _np64(feats2)
    if f1.ndim == f2.ndim == 2 and f1.shape[1] == f2.shape[1] and 2 <= min(len(f1), len(f2)) \
            and max(len(f1), len(f2)) <= f1.shape[1]:
        mu1, mu2 = f1.mean(0), f2.mean(0)
        a1, a2 = (f1 - mu1) / np.sqrt(len(f1) - 1), (f2 - mu2) / np.sqrt(len(f2) - 1)
        tr_covmean = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
        diff = mu1 - mu2
        return float(diff @ diff + (a1 * a1).sum() + (a2 * a2).sum() - 2 * tr_covmean)
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3:
    1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i, y_j) - 2/(mn) sum_{i,j} k(x_i, y_j)."""
    d = x.shape[1]
    m, n = x.shape[0], y.shape[0]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.sum() / (m * n))


def kid(feats1, feats2, subsets: int | None = None, subset_size: int = 1000, generator=None):
    """Kernel Inception Distance: unbiased MMD^2 with kernel k(x, y) = (x.y / d + 1)^3 (d = feature dim).

    subsets=None: one estimate on all features, returns a float.
    subsets=S: the torchmetrics convention (clean-fid and torch-fidelity do the same): S times draw
    `subset_size` rows without replacement from each set (independently), compute MMD^2; returns
    (mean, std) over the S estimates with the population std (ddof=0: torchmetrics' std(unbiased=False) and
    torch-fidelity's np.std; clean-fid reports the mean only).
    Unlike torchmetrics (which raises), subset_size is clamped to the smaller set size, as clean-fid does.
    `generator` (torch.Generator, numpy Generator or int seed) makes the subset draws reproducible.
    Computed in float64 with numpy (inputs: numpy arrays or tensors on any device)."""
    x, y = _np64(feats1), _np64(feats2)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need (N, D) feature arrays with equal D, got {x.shape} and {y.shape}")
    if min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    if subsets is None:
        return _mmd2_unbiased(x, y)
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    size = min(int(subset_size), x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size}")
    if isinstance(generator, torch.Generator):
        perm = lambda n: torch.randperm(n, generator=generator).numpy()  # noqa: E731
    else:
        rng = np.random.default_rng(generator)
        perm = rng.permutation
    vals = np.array([_mmd2_unbiased(x[perm(x.shape[0])[:size]], y[perm(y.shape[0])[:size]]) for _ in range(subsets)])
    return float(vals.mean()), float(vals.std(ddof=0))


def save_stats(path, mu, sigma, feats=None) -> None:
    """Write reference statistics to .npz (keys mu, sigma and, for KID, feats); atomic (temp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"mu": _np64(mu), "sigma": _np64(sigma)}
    if feats is not None:
        arrays["feats"] = _np64(feats).astype(np.float32)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_stats(path, override: str = "paths.fid_stats"):
    """Read (mu, sigma, feats or None) from an .npz written by save_stats / dps_map.fid_stats."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            path, "FID reference statistics", "python -m dps_map.fid_stats GT_FOLDER OUT.npz", f"{override}=..."
        )
    with np.load(path, allow_pickle=False) as z:
        if "mu" not in z or "sigma" not in z:
            raise UserError(f"FID statistics '{path}' lack the keys mu and sigma")
        return z["mu"], z["sigma"], (z["feats"] if "feats" in z else None)


def _build_fid_inception(state_dict: dict | None) -> nn.Module:
    """pytorch_fid.inception.InceptionV3 (FID variant, pool3 block only), with the weights given.

    pytorch-fid's `fid_inception_v3()` always fetches its weights by URL; we build the same
    architecture through it with the URL loader replaced by one returning `state_dict` (already read
    from a local file, loaded strictly), so no code path can download. state_dict=None keeps
    torchvision's default random init (tests): the final load is then skipped."""
    import torchvision
    from pytorch_fid import inception as pfi

    def local_loader(url, *args, **kwargs):
        return state_dict

    block = [pfi.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]]
    with mock.patch.object(pfi, "load_state_dict_from_url", local_loader):
        if state_dict is not None:
            return pfi.InceptionV3(block, resize_input=True, normalize_input=False)
        with mock.patch.object(torchvision.models.inception.Inception3, "load_state_dict", lambda self, sd, *a, **k: None):
            return pfi.InceptionV3(block, resize_input=True, normalize_input=False)


class InceptionFeatures(nn.Module):
    """pytorch-fid's InceptionV3 pool3 features (B, 2048) for images in [-1, 1], (B, 3, H, W).

    Images are bilinearly resized to 299x299 inside the network (pytorch-fid's resize_input) and fed in
    [-1, 1] (what the ported TF weights expect; equivalent to pytorch-fid's [0, 1] input + normalize_input).
    weights_path: pt_inception-2015-12-05-6726825d.pth (default: env DPS_MAP_FID_INCEPTION, then torch hub
    cache); missing -> MissingFileError. random_weights=True (tests only) skips the file.
    The module follows its inputs' device; returns float32 features on that device."""

    def __init__(self, weights_path=None, random_weights: bool = False, device=None):
        super().__init__()
        sd = None
        self.weights_path = None
        if not random_weights:
            self.weights_path = fid_inception_path(weights_path)
            try:
                sd = torch.load(self.weights_path, map_location="cpu", weights_only=True)
            except Exception as e:
                raise UserError(
                    f"cannot read FID Inception weights '{self.weights_path}' ({type(e).__name__}: {e}); replace the file"
                ) from None
        try:
            self.net = _build_fid_inception(sd)
        except RuntimeError as e:  # load_state_dict key/shape mismatch
            raise UserError(f"FID Inception weights '{self.weights_path}' do not match pytorch-fid's architecture: {str(e)[:200]}") from None
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        if device is not None:
            self.to(device)

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
        x = images.float().clamp(-1, 1)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if next(self.net.parameters()).device != x.device:
            self.to(x.device)
        return self.net(x)[0].flatten(1)
