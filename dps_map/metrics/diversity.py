"""Diversity of N >= 2 samples of one measurement, samples as a tensor (N, ...) (images: (N, C, H, W) in [-1, 1])."""

from __future__ import annotations

import torch


def _check(samples: torch.Tensor) -> torch.Tensor:
    if not isinstance(samples, torch.Tensor):
        samples = torch.as_tensor(samples)
    if samples.dim() < 2 or samples.shape[0] < 2:
        raise ValueError(f"diversity needs N >= 2 samples as an (N, ...) tensor, got shape {tuple(samples.shape)}")
    return samples


def pixel_std(samples: torch.Tensor) -> float:
    """Mean over pixels (and channels) of the per-pixel std across the N samples:
    mean_p sqrt(1/N sum_k (x_k[p] - mean_k x_k[p])^2), population std (unbiased=False), on the images
    as given ([-1, 1]), as in the paper's diversity figure (StableSR 0.1080 vs DPS 0.0453)."""
    s = _check(samples).double()
    return float(s.std(dim=0, unbiased=False).mean())


def _pairs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    i, j = torch.triu_indices(n, n, offset=1)
    return i, j


def pairwise_l2(samples: torch.Tensor) -> float:
    """Mean over the N(N-1)/2 pairs i < j of the RMS distance sqrt(mean_p (x_i[p] - x_j[p])^2),
    i.e. the L2 distance divided by sqrt(number of pixel values), so it does not grow with resolution."""
    s = _check(samples).double().flatten(1)
    i, j = _pairs(s.shape[0])
    return float((s[i] - s[j]).pow(2).mean(1).sqrt().mean())


def pairwise_lpips(samples: torch.Tensor, lpips_model, batch_size: int = 16) -> float:
    """Mean over the N(N-1)/2 pairs i < j of LPIPS(x_i, x_j) (lpips_model: callable (B,C,H,W)x2 -> (B,))."""
    s = _check(samples)
    i, j = _pairs(s.shape[0])
    total = 0.0
    with torch.no_grad():
        for b in range(0, len(i), batch_size):
            total += float(lpips_model(s[i[b : b + batch_size]], s[j[b : b + batch_size]]).double().sum())
    return total / len(i)
