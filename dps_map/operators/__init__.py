"""Forward models and noise models. The task builders below draw every random choice from a generator."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Identity, LinearOperator, MatrixOperator, Operator, StackedOperator
from .blur import Blur, gaussian_kernel, motion_kernel
from .inpainting import Inpainting, box_mask, random_mask, random_range_mask
from .noise import GaussianNoise, PoissonNoise
from .super_resolution import SuperResolution

__all__ = ["Operator", "LinearOperator", "Identity", "MatrixOperator", "StackedOperator", "Inpainting", "SuperResolution",
           "Blur", "GaussianNoise", "PoissonNoise", "box_inpainting", "random_inpainting",
           "gaussian_blur", "motion_blur", "gaussian_kernel",
           "motion_kernel", "box_mask", "random_mask", "random_range_mask"]


def box_inpainting(image_size: int, generator: torch.Generator, box_fraction: float = 0.5,
                   location: str = "random") -> Inpainting:
    """A square box of box_fraction x image side hidden at a random place (or the centre)."""
    return Inpainting(box_mask(image_size, box_fraction, location, generator), pattern="box")


def random_inpainting(image_size: int, generator: torch.Generator, drop_ratio=0.7) -> Inpainting:
    """drop_ratio a number: each pixel hidden with that probability (all channels together). drop_ratio a pair
    [lo, hi]: DPS2022's masks, each image's drop fraction drawn uniformly in [lo, hi] (random_range_mask)."""
    if isinstance(drop_ratio, (int, float)) and not isinstance(drop_ratio, bool):
        return Inpainting(random_mask(image_size, drop_ratio, generator), pattern="random")
    pair = list(drop_ratio) if not isinstance(drop_ratio, (str, bool)) else []
    if len(pair) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair):
        raise ConfigError(f"inpaint_random: drop_ratio must be a number or a pair [lo, hi], got {drop_ratio}")
    return Inpainting(random_range_mask(image_size, float(pair[0]), float(pair[1]), generator), pattern="random")


def gaussian_blur(kernel_size: int = 61, blur_sigma: float = 3.0) -> Blur:
    return Blur(gaussian_kernel(kernel_size, blur_sigma))


def motion_blur(generator: torch.Generator, kernel_size: int = 61, intensity: float = 0.5) -> Blur:
    return Blur(motion_kernel(kernel_size, intensity, generator))
