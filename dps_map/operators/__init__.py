"""Forward models and noise models. The task builders below draw every random choice from a generator."""

from __future__ import annotations

import torch

from .base import Identity, LinearOperator, MatrixOperator, Operator, StackedOperator
from .blur import Blur, gaussian_kernel, motion_kernel
from .inpainting import Inpainting, box_mask, random_mask
from .noise import GaussianNoise, PoissonNoise
from .super_resolution import SuperResolution

__all__ = ["Operator", "LinearOperator", "Identity", "MatrixOperator", "StackedOperator", "Inpainting", "SuperResolution",
           "Blur", "GaussianNoise", "PoissonNoise", "box_inpainting", "random_inpainting",
           "gaussian_blur", "motion_blur", "gaussian_kernel",
           "motion_kernel", "box_mask", "random_mask"]


def box_inpainting(image_size: int, generator: torch.Generator, box_fraction: float = 0.5,
                   location: str = "random") -> Inpainting:
    """A square box of box_fraction x image side hidden at a random place (or the centre)."""
    return Inpainting(box_mask(image_size, box_fraction, location, generator), pattern="box")


def random_inpainting(image_size: int, generator: torch.Generator, drop_ratio: float = 0.7) -> Inpainting:
    """Each pixel hidden with probability drop_ratio (all channels together)."""
    return Inpainting(random_mask(image_size, drop_ratio, generator), pattern="random")


def gaussian_blur(kernel_size: int = 61, blur_sigma: float = 3.0) -> Blur:
    return Blur(gaussian_kernel(kernel_size, blur_sigma))


def motion_blur(generator: torch.Generator, kernel_size: int = 61, intensity: float = 0.5) -> Blur:
    return Blur(motion_kernel(kernel_size, intensity, generator))
