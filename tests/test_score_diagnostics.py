"""Paper diagnostics: the DPS-implied score, score error and score mean (exact GMM references)."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import OmegaConf

from dps_map.config.targets import build_prior
from dps_map.diffusion import make_betas
from dps_map.metrics.score import score_error, score_mean
from dps_map.operators import GaussianNoise, MatrixOperator
from dps_map.priors.gmm import find_multimodal_problem
from dps_map.samplers import DPSSampler

GMM = OmegaConf.create({"name": "gmm", "_target_": "dps_map.priors.gmm.gmm_prior", "instance_seed": 0, "dim": 4, "num_components": 9, "grid_scale": 0.5, "cov_std": 0.1,
                        "cov_type": "isotropic", "weights": "uniform", "noise_schedule": "linear",
                        "diffusion_steps": 1000})


def _problem(seed=0):
    prior = build_prior(GMM)
    A, x0, y, posterior, _ = find_multimodal_problem(prior.mixture, 2, 0.05, torch.Generator().manual_seed(seed))
    return prior, A, y, posterior


def test_dps_implied_score_reproduces_the_dps_update():
    prior, A, y, posterior = _problem()
    sampler = DPSSampler(zeta=0.3, respacing="100")
    diffusion = sampler.diffusion(prior)
    i = 37
    x_t = posterior.diffuse(float(diffusion.alphas_cumprod[i])).sample(64, torch.Generator().manual_seed(1)).double()
    steps = []
    x_prev = sampler.transition(prior, MatrixOperator(A.double()), GaussianNoise(0.05), y[None].double().expand(64, -1),
                                x_t, i, torch.Generator().manual_seed(2), hooks=[steps.append])
    step = steps[0]
    eps_dps = sampler.implied_eps(diffusion, step)
    # the DDPM transition with the implied eps is the DPS update (same z)
    mean = diffusion.posterior_mean(diffusion.x0_from_eps(x_t, i, eps_dps), x_t, i)
    z = (x_prev - (step.mean - 0.3 * step.grad)) / step.std
    assert torch.allclose(mean + step.std * z, x_prev, atol=1e-9)
    assert torch.allclose(mean, step.mean - 0.3 * step.grad, atol=1e-9)
    # closed form, from the schedule alone: s_DPS = s - zeta sqrt(alpha_t) g / beta_t
    abar = np.cumprod(1 - make_betas())[diffusion.timesteps.numpy()]
    beta = 1 - abar[i] / abar[i - 1]
    s = -step.eps / np.sqrt(1 - abar[i])
    s_dps = -eps_dps / np.sqrt(1 - abar[i])
    assert torch.allclose(s_dps, s - 0.3 * np.sqrt(1 - beta) / beta * step.grad, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(s_dps, s)  # the guidance really shifts it


def test_score_mean_is_zero_for_the_exact_score_and_not_for_a_biased_one():
    prior, A, y, posterior = _problem(1)
    reference = prior.condition(A, y, 0.05)
    gen = torch.Generator().manual_seed(3)
    for t in (20, 300, 800):
        x_t = posterior.diffuse(float(reference._train.alphas_cumprod[t])).sample(4000, gen)
        s = reference.marginal(t).score(x_t)
        value, floor = score_mean(s)
        assert value < 2.5 * floor, (t, value, floor)
        biased, floor_b = score_mean(s + 10 * floor)  # a constant bias of 10 floors per dimension
        assert biased > 8 * floor_b, (t, biased, floor_b)


def test_score_error_known_values():
    s = torch.randn(100, 3, 4, 4)
    assert score_error(s, s) == 0
    assert abs(score_error(s + 0.5, s) - 0.25) < 1e-6  # float32 inputs
    value, floor = score_mean(torch.ones(10, 5) * 2)
    assert abs(value - 2) < 1e-12 and floor == 0


def test_diversity_against_the_exact_posterior():
    """Exact posterior samples: within-mode spread and effective modes match (ratio ~1); samples collapsed
    onto their modes' means (a MAP-like sampler) have no within-mode spread."""
    from dps_map.metrics.posterior import posterior_report

    prior, A, y, posterior = _problem(2)
    gen = torch.Generator().manual_seed(5)
    x = posterior.sample(4000, gen)
    report = posterior_report(x, posterior, posterior.sample(4000, gen), A, y)
    assert abs(report["within_mode_trace_ratio"] - 1) < 0.1 and abs(report["effective_modes_ratio"] - 1) < 0.1
    collapsed = posterior.means[posterior.responsibilities(x).argmax(1)]
    report = posterior_report(collapsed, posterior, posterior.sample(4000, gen), A, y)
    assert report["within_mode_trace_ratio"] < 1e-6
