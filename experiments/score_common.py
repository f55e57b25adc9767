"""What the score diagnostics of the Gaussian mixture (score_diagnostics) and of images
(score_diagnostics_images) share: the steps they look at and the DPS-implied score."""

from __future__ import annotations

import numpy as np


def step_indices(num_steps: int, count: int = 20) -> list[int]:
    """~count step indices, log-spaced in t so that both ends of the chain are seen."""
    idx = np.unique(np.geomspace(1, num_steps, count).round().astype(int) - 1)
    return [int(i) for i in idx]


def dps_scores(sampler, prior, operator, noise, y, x_t, i, generator):
    """(unconditional score, DPS conditional score) at states x_t, through the DPS sampler's own step: s from the
    network's eps_hat and s_DPS = s - zeta_t g (DPSSampler.implied_eps), both from the same eps_hat, so they
    differ by the guidance term alone (at zeta = 0 they are equal, whatever clip_x0 does to the transition)."""
    captured = []
    sampler.transition(prior, operator, noise, y, x_t, i, generator, hooks=[captured.append])
    step = captured[0]
    diffusion = sampler.diffusion(prior)
    return diffusion.score_from_eps(x_t, i, step.eps), diffusion.score_from_eps(x_t, i, sampler.implied_eps(diffusion, step))
