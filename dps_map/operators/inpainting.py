"""Inpainting: A(x) = m * x with a binary mask m (1 = observed). Self-adjoint."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import LinearOperator


class Inpainting(LinearOperator):
    """Masking with a fixed (1, 1, H, W) mask shared by the channels. ``pattern`` names how the mask
    was drawn ('box', 'random', or 'custom' for a mask given by hand); it is part of ``describe()``, so
    an adapter trained on box masks is refused on random ones."""

    def __init__(self, mask: torch.Tensor, pattern: str = "custom"):
        self.mask = mask
        self.pattern = pattern

    def forward(self, x):
        return x * self.mask

    def adjoint(self, y):
        return y * self.mask

    def transpose(self, y):
        """The mask, = A^T (the PSLD code's identity "transpose" applied to its masked y gives the same)."""
        return y * self.mask

    def restrict(self, y):
        return y * self.mask

    @property
    def observed_fraction(self) -> float:
        return float(self.mask.mean())


def box_mask(size: int, box_fraction: float, location: str, generator: torch.Generator) -> torch.Tensor:
    """A mask that hides a square of side box_fraction * size, centred or at a random place
    (kept a margin of size/16 from the border, as in DPS)."""
    if not 0 < box_fraction < 1:
        raise ConfigError(f"inpaint_box: box_fraction must lie in (0, 1), got {box_fraction}")
    box = int(round(box_fraction * size))
    if box < 1 or box >= size:
        raise ConfigError(f"inpaint_box: a box of {box} px does not fit in a {size} px image")
    if location == "center":
        top = left = (size - box) // 2
    elif location == "random":
        margin = min(size // 16, (size - box) // 2)
        hi = size - box - margin
        top, left = (torch.randint(margin, hi + 1, (2,), generator=generator)).tolist()
    else:
        raise ConfigError(f"inpaint_box: location must be 'center' or 'random', got '{location}'")
    mask = torch.ones(1, 1, size, size)
    mask[..., top:top + box, left:left + box] = 0
    return mask


def random_mask(size: int, drop_ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Each pixel (all channels together) is dropped independently with probability drop_ratio."""
    if not 0 <= drop_ratio < 1:
        raise ConfigError(f"inpaint_random: drop_ratio must lie in [0, 1), got {drop_ratio}")
    return (torch.rand(1, 1, size, size, generator=generator) >= drop_ratio).float()


def random_range_mask(size: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    """DPS2022's random mask (util/img_utils.py:204-216, mask_prob_range (0.3, 0.7) in configs/inpainting_config.yaml):
    a drop fraction p ~ U(lo, hi) drawn for this image (:208), then exactly int(size^2 p) pixels, chosen without
    replacement, hidden in every channel (:210-213). Both draws come from generator (theirs: numpy's global stream)."""
    if not (0 <= lo <= hi < 1):
        raise ConfigError(f"inpaint_random: drop_ratio [lo, hi] must have 0 <= lo <= hi < 1, got [{lo}, {hi}]")
    p = lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))
    total = size * size
    hidden = torch.randperm(total, generator=generator)[:int(total * p)]
    mask = torch.ones(total)
    mask[hidden] = 0
    return mask.reshape(1, 1, size, size)
