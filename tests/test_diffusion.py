"""Schedule maths against openai's guided_diffusion (an independent implementation)."""

import numpy as np
import pytest
import torch
from guided_diffusion import gaussian_diffusion as gd
from guided_diffusion.respace import SpacedDiffusion
from guided_diffusion.respace import space_timesteps as gd_space_timesteps

from dps_map.diffusion import Diffusion, make_betas, space_timesteps
from dps_map.errors import ConfigError


def close(a, b):
    """ADM gathers its schedule in float32: compare at float32 precision."""
    torch.testing.assert_close(a.double(), b.double(), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_betas_match_adm(schedule):
    np.testing.assert_allclose(make_betas(schedule, 1000), gd.get_named_beta_schedule(schedule, 1000), rtol=1e-12)


def test_linear_betas_endpoints():
    b = make_betas("linear", 1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02) and len(b) == 1000


@pytest.mark.parametrize("spec", ["1000", "250", "100", "ddim50", "ddim25", "10,20,30"])
def test_respacing_matches_adm(spec):
    assert sorted(space_timesteps(1000, spec)) == sorted(gd_space_timesteps(1000, spec))


def test_respacing_rejects_impossible():
    with pytest.raises(ConfigError):
        space_timesteps(1000, "ddim999")
    with pytest.raises(ConfigError):
        space_timesteps(10, "20")


def _gd(spec, var_type=gd.ModelVarType.FIXED_SMALL):
    betas = make_betas("linear", 1000)
    return SpacedDiffusion(use_timesteps=gd_space_timesteps(1000, spec), betas=betas,
                           model_mean_type=gd.ModelMeanType.EPSILON, model_var_type=var_type,
                           loss_type=gd.LossType.MSE)


@pytest.mark.parametrize("spec", ["1000", "100", "ddim50"])
def test_respaced_schedule_and_posterior_match_adm(spec, gen):
    ours, ref = Diffusion(make_betas("linear", 1000), spec), _gd(spec)
    np.testing.assert_allclose(ours.betas, ref.betas, rtol=1e-10)
    np.testing.assert_allclose(ours.posterior_variance, ref.posterior_variance, rtol=1e-10, atol=1e-30)
    np.testing.assert_allclose(ours.posterior_log_variance_clipped, ref.posterior_log_variance_clipped, rtol=1e-10)
    x0, xt = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64), torch.randn(4, 3, 8, 8, generator=gen,
                                                                                      dtype=torch.float64)
    i = torch.tensor([0, 1, ours.num_steps // 2, ours.num_steps - 1])
    mean_ref, var_ref, _ = ref.q_posterior_mean_variance(x0, xt, i)
    close(ours.posterior_mean(x0, xt, i), mean_ref)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    close(ours.q_sample(x0, i, noise), ref.q_sample(x0, i, noise))


@pytest.mark.parametrize("variance,var_type", [("fixed_small", gd.ModelVarType.FIXED_SMALL),
                                               ("fixed_large", gd.ModelVarType.FIXED_LARGE),
                                               ("learned_range", gd.ModelVarType.LEARNED_RANGE)])
def test_reverse_step_matches_adm_p_mean_variance(variance, var_type, gen):
    """Our mean and log-variance of p(x_{t-1} | x_t) equal ADM's for every variance type."""
    ours, ref = Diffusion(make_betas("linear", 1000), "50", variance), _gd("50", var_type)
    xt = torch.randn(3, 3, 8, 8, generator=gen, dtype=torch.float64)
    eps = torch.randn(xt.shape, generator=gen, dtype=torch.float64)
    v = torch.rand(xt.shape, generator=gen, dtype=torch.float64) * 2 - 1
    learned = variance == "learned_range"

    def model(x, t, **kw):
        return torch.cat([eps, v], 1) if learned else eps

    for step in (0, 1, 25, 49):
        i = torch.full((3,), step)
        out = ref.p_mean_variance(model, xt, i, clip_denoised=False)
        x0 = ours.x0_from_eps(xt, i, eps)
        close(x0, out["pred_xstart"])
        close(ours.posterior_mean(x0, xt, i), out["mean"])
        close(ours.log_variance(i, xt, v if learned else None), out["log_variance"].expand_as(xt))


def test_conversions_round_trip(gen):
    d = Diffusion(make_betas("linear", 1000), "100")
    x0 = torch.randn(5, 3, 4, 4, generator=gen, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    for step in (0, 10, 99):
        xt = d.q_sample(x0, step, eps)
        torch.testing.assert_close(d.x0_from_eps(xt, step, eps), x0)
        torch.testing.assert_close(d.eps_from_x0(xt, step, x0), eps)
        score = d.score_from_eps(xt, step, eps)
        torch.testing.assert_close(d.eps_from_score(xt, step, score), eps)
        # the score of q(x_t | x_0) is -(x_t - sqrt(abar) x0) / (1 - abar) = -eps / sqrt(1 - abar)
        abar = d.alphas_cumprod[step]
        torch.testing.assert_close(score, -(xt - np.sqrt(abar) * x0) / (1 - abar))


def test_final_step_adds_no_noise(gen):
    d = Diffusion(make_betas("linear", 1000), "10")
    x = torch.randn(2, 3, 4, 4, generator=gen)
    out, mean, std = d.ddpm_step(x, x, 0, torch.randn(x.shape, generator=gen))
    assert float(std.abs().max()) == 0.0
    torch.testing.assert_close(out, mean)
    assert float(d.step_std(1, x).min()) > 0


def test_ddim_matches_adm(gen):
    ours, ref = Diffusion(make_betas("linear", 1000), "ddim50"), _gd("ddim50")
    xt = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    eps = torch.randn(xt.shape, generator=gen, dtype=torch.float64)
    for step in (49, 20, 1):
        for eta in (0.0, 0.5):
            i = torch.full((2,), step)
            torch.manual_seed(0)
            expect = ref.ddim_sample(lambda x, t, **kw: eps, xt, i, clip_denoised=False, eta=eta)["sample"]
            x0 = ours.x0_from_eps(xt, i, eps)
            if eta == 0:
                close(ours.ddim_step(x0, eps, i), expect)
            else:  # ADM draws its noise with torch.randn_like after the same seed
                torch.manual_seed(0)
                z = torch.randn_like(xt)
                close(ours.ddim_step(x0, eps, i, z, eta), expect)


def test_unknown_variance_rejected():
    with pytest.raises(ConfigError):
        Diffusion(make_betas(), "10", "learned")
