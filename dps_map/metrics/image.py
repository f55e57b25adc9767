"""Per-sample PSNR and SSIM. Inputs: float tensors in [-1, 1], shape (B, C, H, W).

Both metrics are computed on images mapped to [0, 1] by (x + 1) / 2 and clamped to [0, 1]
(as a saved PNG would be), with data range 1.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity


def _check(x: torch.Tensor, ref: torch.Tensor) -> None:
    if x.shape != ref.shape or x.dim() != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of equal shape, got {tuple(x.shape)} and {tuple(ref.shape)}")


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]: (x + 1) / 2, clamped."""
    return ((x + 1) / 2).clamp(0, 1)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """PSNR per sample: 10 log10(1 / MSE), MSE = mean over (C, H, W) of (x01 - ref01)^2, data range 1.

    Returns a (B,) tensor on the inputs' device (inf where the images are identical)."""
    _check(x, ref)
    mse = (to_unit(x) - to_unit(ref).to(x.dtype)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def ssim(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """SSIM per sample (Wang et al. 2004), as skimage.metrics.structural_similarity with its defaults:
    7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance, data_range = 1, computed per channel
    (channel_axis) and averaged over channels and pixels.

    SSIM(a, b) = mean over windows of (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2)).
    Computed on CPU in float64; returns a (B,) tensor on the inputs' device. H and W must be >= 7."""
    _check(x, ref)
    a = to_unit(x.detach()).double().cpu().numpy()
    b = to_unit(ref.detach()).double().cpu().numpy()
    vals = [structural_similarity(a[i], b[i], data_range=1.0, channel_axis=0) for i in range(a.shape[0])]
    return torch.as_tensor(np.asarray(vals, dtype=np.float64), device=x.device)
