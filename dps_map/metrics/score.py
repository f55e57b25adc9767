"""Score diagnostics of Xu et al. (ICLR 2025, section 3), on states x_t ~ p_t(x_t | y).

score error  E ||s(x_t, y) - s_ref(x_t, y)||^2 / d
score mean   ||E s(x_t, y)|| / sqrt(d): a valid conditional score has E_{p_t(x_t|y)} s = 0, so for
             N independent states this is only Monte-Carlo noise, of size sqrt(tr Cov(s) / (N d)).
Scores are (N, ...) tensors; every dimension after the first is flattened.
"""

from __future__ import annotations

import torch


def _flat(s: torch.Tensor) -> torch.Tensor:
    return s.reshape(s.shape[0], -1).double()


def score_error(s: torch.Tensor, s_ref: torch.Tensor) -> float:
    """Mean over states of ||s - s_ref||^2 / d."""
    diff = _flat(s) - _flat(s_ref)
    return float(diff.pow(2).mean())


def score_mean(s: torch.Tensor) -> tuple[float, float]:
    """(||mean_n s_n|| / sqrt(d), its Monte-Carlo floor sqrt(tr Cov(s) / (N d))) over N states.

    For a valid score the first is of the order of the second; a biased score exceeds it."""
    flat = _flat(s)
    n, d = flat.shape
    if n < 2:
        raise ValueError("score_mean needs at least two states")
    mean = flat.mean(0)
    floor = (flat.var(0, unbiased=True).sum() / (n * d)).sqrt()
    return float(mean.norm() / d ** 0.5), float(floor)
