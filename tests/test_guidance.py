"""The guidance term of DPS, DSG and DMAP against references written here, independently of the samplers.

Every reference below is spelled out from the papers' equations, with the schedule read from the training
alphas-bar at the kept training indices (not from dps_map.diffusion's respaced arrays):
  x0_hat(x, t) = (x - sqrt(1 - abar_t) eps(x, t)) / sqrt(abar_t)                  (Ho eq. 15)
  g(x, t)      = grad_x ||y - A(x0_hat(x, t))||_2  (the DPS loss, not squared)    (Chung et al. 2023, Alg. 1)
  mu, sigma    : q(x_{t-1} | x_t, x0) with x0 = clip(x0_hat) for images            (Ho eq. 6-7; ADM eq. 15)
The measurement gradient itself is checked against finite differences of the misfit. The networks are
non-zero (random_network: eps depends on x and t), and the DMAP checks record every network call.
"""

from __future__ import annotations

import math

import pytest
import torch

from dps_map.diffusion import Diffusion, alphas_cumprod, make_betas
from dps_map.operators import GaussianNoise, MatrixOperator, SuperResolution
from dps_map.priors.base import Prior
from dps_map.priors.gmm import find_multimodal_problem
from dps_map.samplers import DDPMSampler, DMAPSampler, DPSSampler, DSGSampler

from support import shipped_prior, small_adm

TRAIN_ABAR = alphas_cumprod(make_betas("linear", 1000))
#: space_timesteps(1000, "10") written out: round(j * 999 / 9), j = 0..9 (ADM's respacing)
KEPT_10 = [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
SHAPE = (2, 3, 16, 16)


# -- priors -----------------------------------------------------------------------------------------
class Recording(Prior):
    """Wraps a prior and records every network call (a copy of x and the training index t)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []
        self.betas, self.learn_sigma, self.kind = inner.betas, inner.learn_sigma, inner.kind

    def predict(self, x_t, t):
        self.calls.append((x_t.detach().clone(), t.detach().clone()))
        return self.inner.predict(x_t, t)


class UnevenVariance(Prior):
    """The network's eps with learned-variance values fixed to a strongly uneven pattern in [-1, 1]
    (a random network's values stay near 0, i.e. nearly even; the radius must be ||sigma_t||_2)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.betas, self.learn_sigma, self.kind = inner, inner.betas, True, "image"
        g = torch.Generator().manual_seed(11)
        self.values = torch.rand(1, *SHAPE[1:], generator=g) * 2 - 1

    def predict(self, x_t, t):
        eps, _ = self.inner.predict(x_t, t)
        return eps, self.values.expand_as(eps).to(eps.dtype)


@pytest.fixture(scope="module")
def unet():
    return small_adm()


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    op, noise = SuperResolution(4), GaussianNoise(0.05)
    return x0, op, noise, noise.sample(op(x0), g)


@pytest.fixture(scope="module")
def gmm():
    prior = shipped_prior("gmm")
    A, x0, y, post, _ = find_multimodal_problem(prior.mixture, 2, 0.05, torch.Generator().manual_seed(0))
    return prior, MatrixOperator(A), GaussianNoise(0.05), y[None]


# -- the references ---------------------------------------------------------------------------------
def x0_hat(prior, x, t):
    abar = TRAIN_ABAR[t]
    eps = prior.predict(x, torch.full((x.shape[0],), t))[0]
    return (x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)


def misfit(prior, x, t, op, y):
    return (y - op(x0_hat(prior, x, t))).reshape(x.shape[0], -1).norm(dim=1)


def misfit_grad(prior, x, t, op, y):
    """grad_x ||y - A x0_hat(x, t)||_2 per sample, autograd of the misfit written above."""
    with torch.enable_grad():
        xi = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(misfit(prior, xi, t, op, y).sum(), xi)
    return g


def reverse_mean_std(x0, x_t, i, kept, var_values=None):
    """mu and sigma of the reverse step i >= 1 of the chain `kept` (Ho eq. 7; learned range: ADM eq. 15,
    log sigma^2 = f log beta + (1 - f) log sigma_small^2, f = (v + 1) / 2)."""
    abar, abar_prev = TRAIN_ABAR[kept[i]], TRAIN_ABAR[kept[i - 1]]
    beta = 1 - abar / abar_prev
    mean = math.sqrt(abar_prev) * beta / (1 - abar) * x0 + math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar) * x_t
    small = beta * (1 - abar_prev) / (1 - abar)
    if var_values is None:
        std = torch.full_like(x_t, math.sqrt(small))
    else:
        f = (var_values + 1) / 2
        std = torch.exp(0.5 * (f * math.log(beta) + (1 - f) * math.log(small)))
    return mean, std


def norms(v):
    return v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))


def state(x0, i, seed=5):
    """x_t ~ q(x_t | x0) at step i of the 10-step chain."""
    abar = TRAIN_ABAR[KEPT_10[i]]
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
    return math.sqrt(abar) * x0.expand(SHAPE) + math.sqrt(1 - abar) * z


def draw(seed):
    """The sampler's first draw from Generator(seed): the z of the DDPM step."""
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


# -- 1. the measurement gradient against finite differences -----------------------------------------
@pytest.mark.parametrize("i", [900, 500, 100, 10])
def test_measurement_gradient_equals_finite_differences_on_the_gmm(gmm, i):
    """Exact eps (float64): central differences in all 8 coordinates, h = 1e-5 (truncation ~h^2,
    rounding ~1e-16/h: both below 1e-8 relative). A squared misfit (2 ||r|| away) or a gradient that
    skips the network (eps detached) is off by orders of magnitude more than the 1e-6 tolerance."""
    prior, op, noise, y = gmm
    diffusion = Diffusion(prior.betas, "1000")
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
    guidance = DPSSampler(zeta=1.0, respacing="1000").measurement_gradient(prior, diffusion, op, noise, y, x, i)
    g, m = guidance.grad, guidance.misfit
    h, fd = 1e-5, torch.zeros_like(x)
    for k in range(8):
        e = torch.zeros(8, dtype=torch.float64)
        e[k] = h
        fd[:, k] = (misfit(prior, x + e, i, op, y) - misfit(prior, x - e, i, op, y)) / (2 * h)
    torch.testing.assert_close(m, misfit(prior, x, i, op, y), rtol=1e-12, atol=0)
    torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-6 * float(fd.abs().max()))


@pytest.mark.parametrize("i", [8, 5, 2])
def test_measurement_gradient_equals_finite_differences_on_a_unet(unet, problem, i):
    """A random ADM UNet with non-zero output (float32): directional derivatives by central differences
    with h = 0.1 (error measured below 1e-4 ||g||) along 5 random unit directions and along the part of
    the gradient that comes from the network's own Jacobian (~3% of ||g||, asserted), so a gradient that
    skips the network fails the 1e-3 ||g|| tolerance by ~30x."""
    x0, op, noise, y = problem
    diffusion = Diffusion(unet.betas, "10")
    x = state(x0, i)[:1]
    t = KEPT_10[i]
    g = DPSSampler(zeta=1.0, respacing="10").measurement_gradient(unet, diffusion, op, noise, y, x, i).grad
    with torch.enable_grad():  # the gradient with eps held fixed (no VJP through the network)
        xi = x.clone().requires_grad_(True)
        eps = unet.predict(xi, torch.full((1,), t))[0].detach()
        x0_fixed = (xi - math.sqrt(1 - TRAIN_ABAR[t]) * eps) / math.sqrt(TRAIN_ABAR[t])
        (g_fixed,) = torch.autograd.grad((y - op(x0_fixed)).norm(), xi)
    network_part = misfit_grad(unet, x, t, op, y) - g_fixed
    assert float(network_part.norm()) > 0.01 * float(g.norm())
    v = torch.cat([torch.randn(5, *SHAPE[1:], generator=torch.Generator().manual_seed(i)), network_part])
    v = v / norms(v)
    h = 0.1
    with torch.no_grad():
        fd = (misfit(unet, x + h * v, t, op, y) - misfit(unet, x - h * v, t, op, y)) / (2 * h)
    analytic = (g * v).reshape(6, -1).sum(1)
    assert float((analytic - fd).abs().max()) < 1e-3 * float(g.norm())
    assert float(((g_fixed * v).reshape(6, -1).sum(1) - fd).abs().max()) > 1e-2 * float(g.norm())


# -- 2. DPS: x_{t-1} = DDPM draw - zeta g -----------------------------------------------------------
@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
@pytest.mark.parametrize("i", [7, 3])
def test_dps_step_is_the_ddpm_draw_minus_zeta_times_the_gradient(unet, problem, variance, i):
    x0, op, noise, y = problem
    zeta, seed = 0.5, 21
    x = state(x0, i)
    steps = []
    out = DPSSampler(zeta=zeta, respacing="10", variance=variance).transition(
        unet, op, noise, y, x, i, torch.Generator().manual_seed(seed), hooks=[steps.append])
    t = KEPT_10[i]
    var = unet.predict(x, torch.full((2,), t))[1] if variance == "learned_range" else None
    mean, std = reverse_mean_std(x0_hat(unet, x, t).clamp(-1, 1), x, i, KEPT_10, var)
    g = misfit_grad(unet, x, t, op, y)
    expected = mean + std * draw(seed) - zeta * g
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(steps[0].grad, g, rtol=1e-4, atol=1e-6)
    assert float((zeta * g).abs().max()) > 100 * 1e-5  # the guidance term is far above the tolerance
    # to first order the guided step lowers the misfit relative to the plain draw
    with torch.no_grad():
        assert bool((misfit(unet, out, t, op, y) < misfit(unet, out + zeta * g, t, op, y)).all())


def test_dps_step_on_the_gmm_in_float64(gmm):
    """Exact eps, no clipping (vectors): the same identity at 1e-10."""
    prior, op, noise, y = gmm
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kept = list(range(1000))
    for i in (700, 50):
        out = DPSSampler(zeta=0.1, respacing="1000", clip_x0=False).transition(
            prior, op, noise, y, x, i, torch.Generator().manual_seed(i))
        mean, std = reverse_mean_std(x0_hat(prior, x, i), x, i, kept)
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        torch.testing.assert_close(out, mean + std * z - 0.1 * misfit_grad(prior, x, i, op, y), rtol=1e-10, atol=1e-10)


# -- 3. DSG: steepest-descent direction on the sphere, mixed with weight w ---------------------------
@pytest.mark.parametrize("w", [0.3, 1.0])
@pytest.mark.parametrize("variance", ["fixed_small", "uneven"])
def test_dsg_step_matches_the_spherical_gaussian_formula(unet, problem, w, variance):
    """Yang et al. 2024: r = ||sigma_t||_2 (sqrt(d) sigma_t when isotropic), d* = -r g / ||g||,
    d_s = sigma_t z, m = d_s + w (d* - d_s), x_{t-1} = mu + r m / ||m||."""
    x0, op, noise, y = problem
    prior = UnevenVariance(unet) if variance == "uneven" else unet
    sampler_variance = "learned_range" if variance == "uneven" else "fixed_small"
    i, seed = 4, 8
    x = state(x0, i)
    out = DSGSampler(w=w, respacing="10", variance=sampler_variance).transition(
        prior, op, noise, y, x, i, torch.Generator().manual_seed(seed))
    t = KEPT_10[i]
    var = prior.predict(x, torch.full((2,), t))[1] if variance == "uneven" else None
    mean, std = reverse_mean_std(x0_hat(prior, x, t).clamp(-1, 1), x, i, KEPT_10, var)
    g = misfit_grad(prior, x, t, op, y)
    r = norms(std)
    d_star = -r * g / norms(g)
    d_s = std * draw(seed)
    m = d_s + w * (d_star - d_s)
    torch.testing.assert_close(out, mean + r * m / norms(m), rtol=1e-5, atol=1e-5)
    cos = torch.nn.functional.cosine_similarity((out - mean).reshape(2, -1), -g.reshape(2, -1), dim=1)
    if w == 1.0:  # all the way to the steepest-descent point: anti-parallel to g
        torch.testing.assert_close(cos, torch.ones(2), rtol=0, atol=1e-5)
    else:  # between the sampled direction (cos ~ 0 in 768 dimensions) and -g
        assert bool((cos > 0.2).all()) and bool((cos < 0.99).all())


# -- 4. DMAP ------------------------------------------------------------------------------------------
def project(x, center, radius):
    return center + radius * (x - center) / norms(x - center)


@pytest.mark.parametrize("variance", ["fixed_small", "uneven"])
@pytest.mark.parametrize("i", [6, 1])
def test_dmap_inner_steps_use_the_denoiser_at_t_minus_1_on_the_current_iterate(unet, problem, variance, i):
    """One forward at t_i on x_t, then exactly K VJPs, each at t_{i-1} on the current x_{t-1}
    (the paper's detail: x_{t-1} is a state of step t-1), each followed by the projection onto the
    sphere of radius ||sigma_t||_2 around mu_t. With an uneven learned variance that radius differs
    from sqrt(d) mean(sigma_t) by far more than the tolerance (asserted)."""
    x0, op, noise, y = problem
    inner = UnevenVariance(unet) if variance == "uneven" else unet
    prior = Recording(inner)
    zeta, k, seed = 0.3, 3, 13
    x = state(x0, i)
    sampler = DMAPSampler(zeta=zeta, num_inner=k, respacing="10",
                          variance="learned_range" if variance == "uneven" else "fixed_small")
    steps = []
    out = sampler.transition(prior, op, noise, y, x, i, torch.Generator().manual_seed(seed), hooks=[steps.append])
    assert (steps[0].forward, steps[0].vjp) == (1, k)
    assert len(prior.calls) == 1 + k
    t, t_prev = KEPT_10[i], KEPT_10[i - 1]
    assert torch.equal(prior.calls[0][0], x) and prior.calls[0][1].tolist() == [t, t]
    var = inner.predict(x, torch.full((2,), t))[1] if variance == "uneven" else None
    mean, std = reverse_mean_std(x0_hat(inner, x, t).clamp(-1, 1), x, i, KEPT_10, var)
    radius = norms(std)
    iterate = mean + std * draw(seed)
    for call in range(1, k + 1):
        seen, t_seen = prior.calls[call]
        assert t_seen.tolist() == [t_prev, t_prev], f"inner step {call}: denoiser at {t_seen.tolist()}"
        torch.testing.assert_close(seen, iterate, rtol=1e-5, atol=1e-5)
        iterate = project(iterate - zeta * misfit_grad(inner, iterate, t_prev, op, y), mean, radius)
    torch.testing.assert_close(out, iterate, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norms(out - mean), radius, rtol=1e-5, atol=0)
    if variance == "uneven" and i == 1:  # beta_t and sigma_small^2 differ most early in the chain
        d = out[0].numel()
        isotropic = math.sqrt(d) * std.reshape(2, -1).mean(1)
        assert bool(((radius.reshape(-1) - isotropic).abs() > 0.05 * radius.reshape(-1)).all())
    # the inner steps lower the misfit at t-1 against the plain DDPM draw
    with torch.no_grad():
        before = misfit(inner, mean + std * draw(seed), t_prev, op, y)
        assert bool((misfit(inner, out, t_prev, op, y) < before).all())


def test_dmap_last_step_returns_the_mean_without_vjps(unet, problem):
    x0, op, noise, y = problem
    x = state(x0, 0)
    sampler = DMAPSampler(zeta=0.3, num_inner=3, respacing="10")
    steps = []
    out = sampler.transition(unet, op, noise, y, x, 0, torch.Generator().manual_seed(1), hooks=[steps.append])
    assert steps[0].vjp == 0
    # abar_{-1} = 1, so mu = clip(x0_hat) at the final step (Ho eq. 7)
    torch.testing.assert_close(out, x0_hat(unet, x, 0).clamp(-1, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variance", ["fixed_small", "uneven"])
def test_dmap_adam_equals_adam_written_by_hand(unet, problem, variance):
    """Kingma & Ba 2015, Alg. 1 (PyTorch's eps = 1e-8, state reset at every diffusion step), on the
    same objective, each step followed by the projection."""
    x0, op, noise, y = problem
    prior = UnevenVariance(unet) if variance == "uneven" else unet
    lr, (b1, b2), k, i, seed = 0.05, (0.9, 0.999), 4, 5, 3
    x = state(x0, i)
    out = DMAPSampler(zeta=lr, num_inner=k, optimizer="adam", adam_betas=(b1, b2), respacing="10",
                      variance="learned_range" if variance == "uneven" else "fixed_small").transition(
        prior, op, noise, y, x, i, torch.Generator().manual_seed(seed))
    t, t_prev = KEPT_10[i], KEPT_10[i - 1]
    var = prior.predict(x, torch.full((2,), t))[1] if variance == "uneven" else None
    mean, std = reverse_mean_std(x0_hat(prior, x, t).clamp(-1, 1), x, i, KEPT_10, var)
    p = mean + std * draw(seed)
    m1, m2 = torch.zeros_like(p), torch.zeros_like(p)
    for step in range(1, k + 1):
        g = misfit_grad(prior, p, t_prev, op, y)
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b2 * m2 + (1 - b2) * g * g
        p = p - lr * (m1 / (1 - b1**step)) / ((m2 / (1 - b2**step)).sqrt() + 1e-8)
        p = project(p, mean, norms(std))
    torch.testing.assert_close(out, p, rtol=1e-5, atol=1e-5)
    sgd = DMAPSampler(zeta=lr, num_inner=k, respacing="10",
                      variance="learned_range" if variance == "uneven" else "fixed_small").transition(
        prior, op, noise, y, x, i, torch.Generator().manual_seed(seed))
    assert float((sgd - out).abs().max()) > 1e-3


# -- 5. what the network sees along the whole chain ----------------------------------------------------
def test_network_sees_the_respaced_timesteps_in_order(unet, problem):
    """DDPM over respacing '10': training indices 999, 888, ..., 111, 0 (ADM's respacing, written out);
    DMAP: per step one forward at t_i, then K VJPs at t_{i-1} (at t_0 on the last step when not projecting)."""
    x0, op, noise, y = problem
    prior = Recording(unet)
    DDPMSampler(respacing="10").sample(prior, op, noise, y, (1, 3, 16, 16), torch.Generator().manual_seed(0))
    assert [int(t[0]) for _, t in prior.calls] == KEPT_10[::-1]
    for project_, last in ((True, [0]), (False, [0, 0, 0, 0])):
        prior.calls.clear()
        DMAPSampler(zeta=0.1, num_inner=3, respacing="10", project=project_).sample(
            prior, op, noise, y, (1, 3, 16, 16), torch.Generator().manual_seed(0))
        expected = [t for i in range(9, 0, -1) for t in [KEPT_10[i]] + [KEPT_10[i - 1]] * 3] + last
        assert [int(t[0]) for _, t in prior.calls] == expected


@pytest.mark.parametrize("clip", [True, False])
def test_clip_x0_clamps_the_estimate_in_the_transition_mean_only(unet, problem, clip):
    """At t = 999 x0_hat is far outside [-1, 1]; with clip_x0 the mean uses clamp(x0_hat, -1, 1), and
    the guidance gradient of DPS stays the unclipped one (checked above by finite differences)."""
    x0, op, noise, y = problem
    i = 9
    x = state(x0, i)
    steps = []
    DDPMSampler(respacing="10", clip_x0=clip).transition(unet, op, noise, y, x, i, torch.Generator().manual_seed(0),
                                                        hooks=[steps.append])
    raw = x0_hat(unet, x, KEPT_10[i])
    assert float(raw.abs().max()) > 10
    mean, _ = reverse_mean_std(raw.clamp(-1, 1) if clip else raw, x, i, KEPT_10)
    torch.testing.assert_close(steps[0].mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(steps[0].x0_hat, raw, rtol=1e-5, atol=1e-4)
    other, _ = reverse_mean_std(raw if clip else raw.clamp(-1, 1), x, i, KEPT_10)
    assert float((other - mean).abs().max()) > 1e-2


# -- 7. the authors' units, FreeDoM's adaptive step, PSLD's transitions -------------------------------
@pytest.mark.parametrize("i", [9, 4])
def test_dps_step_in_euler_units_scales_the_gradient_by_sqrt_abar_t_abar_prev(unet, problem, i):
    """guidance_units=euler on a pixel prior (ADM's linear betas): DDPM draw - zeta sqrt(abar_t abar_{t-1}) g,
    abar at the kept training indices (docs/methods.md, Guidance units)."""
    x0, op, noise, y = problem
    zeta, seed = 0.5, 22
    x = state(x0, i)
    out = DPSSampler(zeta=zeta, respacing="10", guidance_units="euler").transition(
        unet, op, noise, y, x, i, torch.Generator().manual_seed(seed))
    t = KEPT_10[i]
    mean, std = reverse_mean_std(x0_hat(unet, x, t).clamp(-1, 1), x, i, KEPT_10)
    factor = math.sqrt(TRAIN_ABAR[t] * TRAIN_ABAR[KEPT_10[i - 1]])
    expected = mean + std * draw(seed) - zeta * factor * misfit_grad(unet, x, t, op, y)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("i", [8, 3])
def test_freedom_adaptive_step_is_yus_face_gd_rule(unet, problem, i):
    """rho = zeta rms(eps) sqrt(1 - abar_t)/sqrt(abar_t) c1 / rms(g), c1 = sqrt(abar_{t-1}) beta_t / (1 - abar_t),
    per sample (FreeDoM Face-GD functions/denoising.py:67-69), outside the time-travel window."""
    from dps_map.samplers import FreeDoMSampler

    x0, op, noise, y = problem
    zeta, seed = 0.02, 23
    x = state(x0, i)
    out = FreeDoMSampler(zeta=zeta, rho="adaptive", repeat=1, respacing="10", clip_x0=False).transition(
        unet, op, noise, y, x, i, torch.Generator().manual_seed(seed))
    t, t_prev = KEPT_10[i], KEPT_10[i - 1]
    abar, abar_prev = TRAIN_ABAR[t], TRAIN_ABAR[t_prev]
    mean, std = reverse_mean_std(x0_hat(unet, x, t), x, i, KEPT_10)
    eps = unet.predict(x, torch.full((2,), t))[0]
    g = misfit_grad(unet, x, t, op, y)
    c1 = math.sqrt(abar_prev) * (1 - abar / abar_prev) / (1 - abar)
    rms = lambda v: v.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()  # noqa: E731
    rho = zeta * rms(eps) * math.sqrt(1 - abar) / math.sqrt(abar) * c1 / rms(g)
    torch.testing.assert_close(out, mean + std * draw(seed) - rho * g, rtol=1e-5, atol=1e-5)
    assert float((rho * g).abs().max()) > 100 * 1e-5


def test_psld_ddim_transition_and_noise_on_the_prediction(unet, problem):
    """transition=ddim (Rout's DDIM eta=0 step): without guidance the PSLD step is DDIM (eq. 12) written here;
    noise_on_prediction adds sigma_y n (the run's next draw) to A(x0_hat) before the misfit (psld.py:319-320)."""
    from dps_map.samplers import PSLDSampler

    x0, op, noise, y = problem
    i, seed = 6, 24
    x = state(x0, i)
    t, abar_prev = KEPT_10[i], TRAIN_ABAR[KEPT_10[i - 1]]
    out = PSLDSampler(zeta=0.0, gamma=0.0, transition="ddim", eta=0.0, respacing="10", clip_x0=False).transition(
        unet, op, noise, y, x, i, torch.Generator().manual_seed(seed))
    eps = unet.predict(x, torch.full((2,), t))[0]
    torch.testing.assert_close(out, math.sqrt(abar_prev) * x0_hat(unet, x, t) + math.sqrt(1 - abar_prev) * eps,
                               rtol=1e-5, atol=1e-5)
    steps = []
    PSLDSampler(zeta=1.0, gamma=0.0, noise_on_prediction=True, respacing="10", clip_x0=False).transition(
        unet, op, noise, y, x, i, torch.Generator().manual_seed(seed), hooks=[steps.append])
    g = torch.Generator().manual_seed(seed)
    torch.randn(SHAPE, generator=g)  # the ancestral draw comes first
    n = torch.randn(y.expand(2, -1, -1, -1).shape, generator=g)
    with torch.enable_grad():
        xi = x.clone().requires_grad_(True)
        loss = (y - (op(x0_hat(unet, xi, t)) + noise.sigma * n)).reshape(2, -1).norm(dim=1).sum()
        (expected,) = torch.autograd.grad(loss, xi)
    torch.testing.assert_close(steps[0].grad, expected, rtol=1e-4, atol=1e-6)


# -- 6. PSLD and FreeDoM on a pixel prior (D = E = I), against their objective and closed forms --------------------
def block_up(v, f=4):
    """Block replication by f: the nearest upsampling (PSLD's SR "transpose"); / f^2 it is avgpool's exact adjoint."""
    return v.repeat_interleave(f, -2).repeat_interleave(f, -1)


@pytest.mark.parametrize("gluing", ["adjoint", "transpose"])
def test_psld_step_on_a_pixel_prior_descends_its_objective(unet, gluing):
    """Rout et al. eq. 9 with D = E = I and A = 4x4 average pooling: x_{t-1} = mu + sigma z - grad_{x_t} L,
    L = zeta ||y - A x0_hat|| + gamma ||x0_hat - (T y + x0_hat - T A x0_hat)||, T = A^T (block replication / 16) or
    PSLD's transpose (block replication). The sampler's gradient against central differences of L written here
    (h = 0.05) along random directions and along the gluing term's own gradient (so a dropped, sign-flipped or
    un-projected gluing term shows), and the step against mu + sigma z - g."""
    from dps_map.operators import SuperResolution
    from dps_map.samplers import PSLDSampler

    g0 = torch.Generator().manual_seed(30)
    x0 = torch.rand(1, 3, 16, 16, generator=g0) * 2 - 1
    A = lambda v: torch.nn.functional.avg_pool2d(v, 4)  # noqa: E731
    T = (lambda v: block_up(v) / 16) if gluing == "adjoint" else block_up
    y = A(x0) + 0.05 * torch.randn(1, 3, 4, 4, generator=g0)
    zeta, gamma, i, seed = 0.7, 0.5, 6, 31
    x = state(x0, i)
    t = KEPT_10[i]

    def terms(v):
        z0 = x0_hat(unet, v, t)
        glued = T(y) + z0 - T(A(z0))
        flat = lambda r: r.reshape(v.shape[0], -1).norm(dim=1)  # noqa: E731
        return zeta * flat(y - A(z0)), gamma * flat(z0 - glued)

    steps = []
    out = PSLDSampler(zeta=zeta, gamma=gamma, gluing=gluing, respacing="10").transition(
        unet, SuperResolution(4, "avgpool"), GaussianNoise(0.05), y, x, i, torch.Generator().manual_seed(seed),
        hooks=[steps.append])
    grad = steps[0].grad
    with torch.enable_grad():
        xi = x.clone().requires_grad_(True)
        (glue_dir,) = torch.autograd.grad(terms(xi)[1].sum(), xi)
    assert float(glue_dir.norm()) > 0.05 * float(grad.norm())  # the gluing term is a visible part of the gradient
    v = torch.cat([torch.randn(4, *SHAPE[1:], generator=torch.Generator().manual_seed(i)), glue_dir.reshape(2, *SHAPE[1:])])
    v = v / norms(v)
    h = 0.05
    for row in range(2):
        with torch.no_grad():
            plus, minus = x[row:row + 1] + h * v, x[row:row + 1] - h * v
            fd = (sum(terms(plus)) - sum(terms(minus))) / (2 * h)
        analytic = (grad[row:row + 1] * v).reshape(len(v), -1).sum(1)
        assert float((analytic - fd).abs().max()) < 2e-3 * float(grad[row].norm()), (row, analytic, fd)
    mean, std = reverse_mean_std(x0_hat(unet, x, t).clamp(-1, 1), x, i, KEPT_10)
    torch.testing.assert_close(out, mean + std * draw(seed) - grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("renoise", ["forward", "xu"])
def test_freedom_time_travel_on_a_pixel_prior_is_the_closed_form_renoise(unet, problem, renoise):
    """Inside the window (i / S = 0.5 in [0.3, 0.7)), repeat=2: the guided step (mu + sigma z1 - zeta g), re-noised
    back to step t from the run's next draw n, the guided step again (draws z1, n, z2 in this order). Re-noise, with
    alpha = abar_t / abar_{t-1} of the respaced chain (from the training alphas-bar at the kept indices):
      forward (Yu et al. eq. 11):  sqrt(alpha) x_{t-1} + sqrt(1 - alpha) n
      xu (run_fdm, docs/methods.md): sqrt(1 - b) sqrt(alpha) x_{t-1} + sqrt(b abar_t) n, b the training beta at the
                                     loop index S - 1 - i of ADM's linear schedule."""
    from dps_map.samplers import FreeDoMSampler

    x0, op, noise, y = problem
    zeta, i, seed = 0.5, 5, 32
    x = state(x0, i)
    out = FreeDoMSampler(zeta=zeta, repeat=2, renoise=renoise, respacing="10").transition(
        unet, op, noise, y, x, i, torch.Generator().manual_seed(seed))
    t = KEPT_10[i]
    abar, abar_prev = TRAIN_ABAR[t], TRAIN_ABAR[KEPT_10[i - 1]]
    alpha = abar / abar_prev
    g = torch.Generator().manual_seed(seed)
    z1, n, z2 = (torch.randn(SHAPE, generator=g) for _ in range(3))

    def guided(v, z):
        mean, std = reverse_mean_std(x0_hat(unet, v, t).clamp(-1, 1), v, i, KEPT_10)
        return mean + std * z - zeta * misfit_grad(unet, v, t, op, y)

    first = guided(x, z1)
    if renoise == "forward":
        back = math.sqrt(alpha) * first + math.sqrt(1 - alpha) * n
    else:
        b = float(make_betas("linear", 1000)[10 - 1 - i])
        back = math.sqrt(1 - b) * math.sqrt(alpha) * first + math.sqrt(b * abar) * n
    torch.testing.assert_close(out, guided(back, z2), rtol=1e-4, atol=1e-4)
    # the re-noise is visible: without it (the second pass from the first pass's x_{t-1}) is far off
    assert float((guided(first, z2) - out).abs().max()) > 1e-2
