"""Super-resolution: A(x) = downsample_f(x), by antialiased bicubic resizing (torch's, or MATLAB imresize's as the
papers' code), or average pooling."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from resize_right import interp_methods, resize

from ..errors import ConfigError
from .base import LinearOperator


def bicubic_matrix(n: int, factor: int) -> torch.Tensor:
    """The (n / factor, n) matrix W of torch's antialiased bicubic downsampling along one axis, in float64: the
    resize is separable, so resizing an image X is W X W^T. Read off torch's own resize of the identity."""
    eye = torch.eye(n, dtype=torch.float64)[None, None]
    return F.interpolate(eye, size=(n // factor, n), mode="bicubic", antialias=True, align_corners=False)[0, 0]


def imresize_matrix(n: int, factor: int) -> torch.Tensor:
    """The (n / factor, n) matrix of MATLAB imresize's antialiased bicubic downsampling along one axis, in float64,
    read off resize-right's resize of the identity (cubic kernel a = -0.5 stretched by the factor, weights
    normalised, symmetric padding: the edge pixel repeated). It is the Resizer of DPS2022 (util/resizer.py:104-167,
    the mirror at :158-159) and of Xu et al. (ControlNet-Low-Level resizer.py, the same file; op.py:571): equal to
    torch's antialiased bicubic (bicubic_matrix) except in the 2-pixel border of y, where torch drops the taps
    outside the image instead of mirroring them."""
    return torch.from_numpy(resize(np.eye(n), scale_factors=[1 / factor, 1], out_shape=[n // factor, n],
                                   interp_method=interp_methods.cubic, antialiasing=True, pad_mode="symmetric"))


class SuperResolution(LinearOperator):
    """Downsampling by an integer factor ('bicubic': antialiased bicubic, as PIL/torch resize; 'imresize':
    MATLAB imresize's antialiased bicubic, the Resizer of DPS2022's and Xu et al.'s code (DPS2022
    guided_diffusion/measurements.py:78; ControlNet-Low-Level op.py:571), which differs from 'bicubic' only in the
    2-pixel border of y; 'avgpool': mean over factor x factor blocks, whose adjoint is block replication /
    factor^2).

    Bicubic and imresize are applied as two matrix products with :func:`bicubic_matrix` (equal to F.interpolate
    within float rounding) or :func:`imresize_matrix`: their backward is a matmul, deterministic on CUDA under
    perf.deterministic, where the antialiased resize's backward has no deterministic kernel."""

    def __init__(self, factor: int, method: str = "bicubic"):
        if factor < 1:
            raise ConfigError(f"super-resolution factor must be >= 1, got {factor}")
        if method not in ("bicubic", "imresize", "avgpool"):
            raise ConfigError(f"super-resolution method must be 'bicubic', 'imresize' or 'avgpool', got '{method}'")
        self.factor, self.method = int(factor), method
        self._matrices: dict = {}  # (n, device, dtype) -> bicubic_matrix or imresize_matrix, made once per run

    def forward(self, x):
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ConfigError(f"SR factor {self.factor} does not divide the image size {tuple(x.shape[-2:])}")
        if self.method == "avgpool":
            return F.avg_pool2d(x, self.factor)
        return self._matrix(x.shape[-2], x) @ x @ self._matrix(x.shape[-1], x).T

    def _matrix(self, n: int, like: torch.Tensor) -> torch.Tensor:
        key = (n, like.device, like.dtype)
        if key not in self._matrices:
            make = imresize_matrix if self.method == "imresize" else bicubic_matrix
            self._matrices[key] = make(n, self.factor).to(like.device, like.dtype)
        return self._matrices[key]

    def input_shape(self, y):
        return (*y.shape[:-2], y.shape[-2] * self.factor, y.shape[-1] * self.factor)

    def adjoint(self, y):
        if self.method == "avgpool":
            up = y.repeat_interleave(self.factor, dim=-2).repeat_interleave(self.factor, dim=-1)
            return up / self.factor**2
        return super().adjoint(y)

    def transpose(self, y):
        """Nearest-neighbour upsampling by the factor: the "transpose" of the PSLD code's SR operator
        (LituRout/PSLD measurements.py:77,83-84; Xu et al.'s op.py:571,582-583). Not A^T: A T y ~ y (exactly
        y for avgpool, where it is f^2 A^T, the pseudo-inverse), so PSLD's gluing fits the measurement."""
        return F.interpolate(y, scale_factor=self.factor, mode="nearest")

    def naive(self, y):
        """Bicubic upsampling of y to the image size."""
        return F.interpolate(y, scale_factor=self.factor, mode="bicubic", align_corners=False).clamp(-1, 1)
