"""DPSSampler.implied_eps is the paper's DPS conditional score (Xu et al. 2025; DPS: Chung et al. 2023):

    s_DPS = s - zeta_t g,   eps_DPS = eps_hat + sqrt(1 - abar_t) zeta_t g,   zeta_t = zeta factor_t sqrt(alpha_t) / beta_t

with g = grad_{x_t} ||y - A(x0_hat)||_2, whatever clip_x0 is. The references below are written from the schedule
alone (numpy cumprod of ADM's linear betas, the respaced indices written out), the network's eps called directly
and the misfit's gradient by autograd, not through Diffusion or the sampler's helpers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dps_map.operators import GaussianNoise, SuperResolution
from dps_map.samplers import DPSSampler

from support import small_adm

TRAIN_ABAR = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))  # ADM's linear schedule, written out
#: space_timesteps(1000, "10"): round(j * 999 / 9), j = 0..9
KEPT_10 = [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]


@pytest.fixture(scope="module")
def unet():
    return small_adm()


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    op, noise = SuperResolution(4), GaussianNoise(0.05)
    return x0, op, noise, noise.sample(op(x0), g)


def state(x0, i):
    abar = TRAIN_ABAR[KEPT_10[i]]
    z = torch.randn((2, 3, 16, 16), generator=torch.Generator().manual_seed(5))
    return math.sqrt(abar) * x0.expand(2, -1, -1, -1) + math.sqrt(1 - abar) * z


def hooked_step(sampler, prior, problem, i):
    x0, op, noise, y = problem
    x = state(x0, i)
    steps = []
    sampler.transition(prior, op, noise, y, x, i, torch.Generator().manual_seed(1), hooks=[steps.append])
    return x, steps[0]


def reference(prior, x, i, op, y, zeta, units):
    """(eps_hat, eps_DPS) from the formula in the module docstring."""
    t = KEPT_10[i]
    abar, abar_prev = TRAIN_ABAR[t], TRAIN_ABAR[KEPT_10[i - 1]]
    beta = 1 - abar / abar_prev
    with torch.enable_grad():
        xi = x.detach().clone().requires_grad_(True)
        eps = prior.predict(xi, torch.full((x.shape[0],), t))[0]
        x0 = (xi - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
        misfit = (y - op(x0)).reshape(x.shape[0], -1).norm(dim=1)
        (g,) = torch.autograd.grad(misfit.sum(), xi)
    factor = 1.0 if units == "vp" else math.sqrt(abar * abar_prev)
    zeta_t = zeta * factor * math.sqrt(1 - beta) / beta
    return eps.detach(), eps.detach() + math.sqrt(1 - abar) * zeta_t * g


@pytest.mark.parametrize("clip", [True, False])
def test_at_zeta_zero_the_dps_score_is_the_unconditional_one_exactly(unet, problem, clip):
    """At t = 999 x0_hat is far outside [-1, 1], so clip_x0 changes the transition mean; the score must not
    change: eps_DPS = eps_hat bit for bit (a score read off the clamped mean differs by O(1))."""
    sampler = DPSSampler(zeta=0.0, respacing="10", clip_x0=clip)
    x, step = hooked_step(sampler, unet, problem, 9)
    assert float(step.x0_hat.abs().max()) > 10  # the clamp is active
    eps_dps = sampler.implied_eps(sampler.diffusion(unet), step)
    assert torch.equal(eps_dps, step.eps)


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("units", ["vp", "euler"])
@pytest.mark.parametrize("i", [9, 4, 1])
def test_dps_score_against_the_closed_form(unet, problem, clip, units, i):
    zeta = 0.3 if units == "vp" else 30.0  # Euler's factor sqrt(abar_t abar_{t-1}) is ~1e-4 at t = 999
    sampler = DPSSampler(zeta=zeta, respacing="10", clip_x0=clip, guidance_units=units)
    x, step = hooked_step(sampler, unet, problem, i)
    eps_ref, eps_dps_ref = reference(unet, x, i, problem[1], problem[3], zeta, units)
    eps_dps = sampler.implied_eps(sampler.diffusion(unet), step)
    torch.testing.assert_close(step.eps, eps_ref, rtol=1e-5, atol=1e-5)
    scale = float((eps_dps_ref - eps_ref).abs().max())
    assert scale > 1e-3  # the guidance term really moves the score
    torch.testing.assert_close(eps_dps, eps_dps_ref, rtol=1e-4, atol=1e-4 * max(1.0, scale))


def test_without_clipping_the_ddpm_step_with_the_dps_score_is_the_dps_update(unet, problem):
    """The score and the sampler agree: mu_t(x_t, eps_DPS) = mu_t(x_t, eps_hat) - zeta g (VP units), Ho eq. 11
    written out: mu = (x_t - beta eps / sqrt(1 - abar)) / sqrt(alpha)."""
    i, zeta = 4, 0.3
    sampler = DPSSampler(zeta=zeta, respacing="10", clip_x0=False)
    x, step = hooked_step(sampler, unet, problem, i)
    abar, abar_prev = TRAIN_ABAR[KEPT_10[i]], TRAIN_ABAR[KEPT_10[i - 1]]
    beta = 1 - abar / abar_prev
    eps_dps = sampler.implied_eps(sampler.diffusion(unet), step)
    mean = (x - beta * eps_dps / math.sqrt(1 - abar)) / math.sqrt(1 - beta)
    torch.testing.assert_close(mean, step.mean - zeta * step.grad, rtol=1e-4, atol=1e-4)


def test_each_scale_compares_on_the_task_its_reference_was_trained_on():
    """openai's 128->512 upsampler saw area-downsampled (= 4x4 block means), clean inputs; the tiny reference
    was trained on task=sr4 (bicubic, sigma_y = 0.05)."""
    from argparse import Namespace

    from experiments.score_diagnostics import image_config

    adm = image_config(Namespace(scale="adm512", crops=2, overrides=[]))
    assert (adm.task.method, float(adm.task.sigma_y), adm.task.factor) == ("avgpool", 0.0, 4)
    assert adm.reference.unet.large_size // adm.reference.unet.small_size == 4
    tiny = image_config(Namespace(scale="tiny", crops=2, overrides=[]))
    assert (tiny.task.method, float(tiny.task.sigma_y)) == ("bicubic", 0.05)
