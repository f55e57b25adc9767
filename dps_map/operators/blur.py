"""Deblurring: A(x) = k * x, per-channel correlation with a normalised kernel and reflect padding
(as the authors' code). Kernels: Gaussian, or a seeded random motion trajectory."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import LinearOperator


def reflect_index(n: int, pad: int, device=None) -> torch.Tensor:
    """Indices of a reflect-padded axis of length n (numpy's 'reflect': the edge pixel not repeated), so
    x[..., reflect_index(n, p)] equals F.pad(x, (p, p), mode="reflect") along that axis."""
    i = torch.arange(-pad, n + pad, device=device).abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


class Blur(LinearOperator):
    """Convolution with a fixed (k, k) kernel, reflect-padded so the output has the input size.
    The adjoint (correlation with the flipped kernel, folded back through the padding) is the VJP.

    The padding gathers reflected indices rather than calling F.pad(mode="reflect"): same values, but its
    backward (an index_put with accumulation) has a deterministic CUDA kernel under perf.deterministic,
    where reflection_pad2d's backward has none."""

    def __init__(self, kernel: torch.Tensor):
        if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
            raise ConfigError(f"blur kernel must be square with odd size, got {tuple(kernel.shape)}")
        self.kernel = kernel

    def forward(self, x):
        k = self.kernel.shape[-1]
        pad = k // 2
        if pad >= min(x.shape[-2:]):
            raise ConfigError(f"a {k}x{k} blur kernel needs images larger than {pad} px (got {tuple(x.shape[-2:])});"
                              f" set task.kernel_size smaller")
        c, (h, w) = x.shape[1], x.shape[-2:]
        weight = self.kernel.to(x.dtype)[None, None].expand(c, 1, k, k)
        padded = x[..., reflect_index(h, pad, x.device), :][..., reflect_index(w, pad, x.device)]
        return F.conv2d(padded, weight, groups=c)

    def transpose(self, y):
        """The identity: the "transpose" of the PSLD code's blur operators (LituRout/PSLD measurements.py:107-108,
        130-131; Xu et al.'s op.py:662-663). PSLD's gluing is then y + (I - K) x: stable, where K's pseudo-inverse
        would amplify the frequencies the blur removes."""
        return y


def gaussian_kernel(size: int = 61, sigma: float = 3.0) -> torch.Tensor:
    """k(u, v) ∝ exp(-(u^2 + v^2) / (2 sigma^2)) on a size x size grid, summing to 1."""
    if size % 2 == 0 or size < 1 or sigma <= 0:
        raise ConfigError(f"gaussian blur: size must be odd and sigma > 0, got {size}, {sigma}")
    u = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(u**2) / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return (k / k.sum()).float()


def motion_kernel(size: int = 61, intensity: float = 0.5, generator: torch.Generator | None = None,
                  num_points: int = 2000) -> torch.Tensor:
    """A random camera-shake kernel: a 2-D trajectory whose heading drifts randomly (more with
    higher `intensity` in [0, 1]), scaled to span up to ~3/4 of the kernel, rasterised with
    bilinear weights and normalised to sum 1. All randomness comes from `generator`."""
    if not 0 <= intensity <= 1:
        raise ConfigError(f"motion blur intensity must lie in [0, 1], got {intensity}")
    if size % 2 == 0 or size < 3:
        raise ConfigError(f"motion blur kernel size must be odd and >= 3, got {size}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    # heading angle: a random walk with occasional jerks, stronger with intensity
    turns = torch.randn(num_points, generator=gen, dtype=torch.float64) * (0.02 + 0.2 * intensity)
    jerks = (torch.rand(num_points, generator=gen, dtype=torch.float64) < 0.01 * intensity).double()
    turns = turns + jerks * torch.randn(num_points, generator=gen, dtype=torch.float64) * math.pi / 2
    heading = 2 * math.pi * torch.rand(1, generator=gen, dtype=torch.float64) + torch.cumsum(turns, 0)
    speed = 1 + intensity * torch.rand(num_points, generator=gen, dtype=torch.float64)
    path = torch.cumsum(torch.stack([heading.cos(), heading.sin()], 1) * speed[:, None], 0)
    path = path - (path.max(0).values + path.min(0).values) / 2
    extent = (path.max(0).values - path.min(0).values).max().clamp(min=1e-8)
    span = (size - 1) * (0.25 + 0.5 * float(torch.rand(1, generator=gen)))
    path = path * span / extent + size // 2
    kernel = torch.zeros(size, size, dtype=torch.float64)
    x0, y0 = path[:, 0].floor().long(), path[:, 1].floor().long()
    fx, fy = path[:, 0] - x0, path[:, 1] - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = (x0 + dx).clamp(0, size - 1), (y0 + dy).clamp(0, size - 1)
        kernel.index_put_((yi, xi), w, accumulate=True)
    return (kernel / kernel.sum()).float()
