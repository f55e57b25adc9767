"""Forward models and noise models. `build_operator` draws every random choice from a generator."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Identity, LinearOperator, MatrixOperator, Operator, StackedOperator
from .blur import Blur, gaussian_kernel, motion_kernel
from .inpainting import Inpainting, box_mask, random_mask
from .noise import GaussianNoise, PoissonNoise, build_noise
from .super_resolution import SuperResolution

__all__ = ["Operator", "LinearOperator", "Identity", "MatrixOperator", "StackedOperator", "Inpainting", "SuperResolution",
           "Blur", "GaussianNoise", "PoissonNoise", "build_operator", "build_noise", "gaussian_kernel",
           "motion_kernel", "box_mask", "random_mask"]


def build_operator(cfg, image_size: int, generator: torch.Generator) -> Operator:
    """The image operator named by cfg.operator (task config), with its random parts from generator."""
    kind = cfg.operator
    if kind == "identity":
        return Identity()
    if kind == "inpaint_box":
        return Inpainting(box_mask(image_size, cfg.box_fraction, cfg.location, generator), pattern="box")
    if kind == "inpaint_random":
        return Inpainting(random_mask(image_size, cfg.drop_ratio, generator), pattern="random")
    if kind == "super_resolution":
        if image_size % cfg.factor:
            raise ConfigError(f"task {cfg.name}: SR factor {cfg.factor} does not divide image size {image_size}")
        return SuperResolution(cfg.factor, cfg.get("method", "bicubic"))
    if kind == "gaussian_blur":
        return Blur(gaussian_kernel(cfg.kernel_size, cfg.blur_sigma))
    if kind == "motion_blur":
        return Blur(motion_kernel(cfg.kernel_size, cfg.intensity, generator))
    raise ConfigError(f"unknown operator '{kind}'")
