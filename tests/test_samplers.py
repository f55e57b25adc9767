"""Samplers: the sphere projection, reductions to DDPM, VJP counts, and MAP behaviour on the GMM."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dps_map.operators import GaussianNoise, MatrixOperator, SuperResolution
from dps_map.priors.gmm import find_multimodal_problem
from dps_map.samplers import DDPMSampler, DMAPSampler, DPSSampler, DSGSampler

from support import shipped_prior, small_adm


@pytest.fixture(scope="module")
def adm():
    """A seeded random network with non-zero output: eps and the learned variance depend on x_t and t
    (guided_diffusion's zero-initialised layers would give eps = 0 and hide what the samplers pass)."""
    return small_adm()


@pytest.fixture(scope="module")
def image_problem():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    op, noise = SuperResolution(4), GaussianNoise(0.05)
    return op, noise, noise.sample(op(x0), g)


def record(hooks_out):
    def hook(step):
        hooks_out.append(step)
    return hook


@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
def test_dmap_iterates_lie_on_the_sphere(adm, image_problem, variance):
    op, noise, y = image_problem
    steps = []
    s = DMAPSampler(zeta=0.5, num_inner=2, respacing="10", variance=variance)
    s.sample(adm, op, noise, y.expand(2, -1, -1, -1), (2, 3, 16, 16), torch.Generator().manual_seed(1),
             hooks=[record(steps)])
    d = 3 * 16 * 16
    for st in steps:
        dist = (st.x_prev - st.mean).reshape(2, -1).norm(dim=1)
        radius = st.std.expand_as(st.x_prev).reshape(2, -1).norm(dim=1)
        if st.i > 0:
            torch.testing.assert_close(dist, radius, rtol=1e-5, atol=1e-6)
            if variance == "fixed_small":
                torch.testing.assert_close(radius, np.sqrt(d) * st.std.reshape(-1)[:1].expand(2), rtol=1e-5, atol=0)
        else:
            assert float(dist.max()) == 0.0  # radius 0 at the final step: x_0 = mu


def test_dsg_iterates_lie_on_the_sphere(adm, image_problem):
    op, noise, y = image_problem
    steps = []
    DSGSampler(w=0.3, respacing="10").sample(adm, op, noise, y, (1, 3, 16, 16), torch.Generator().manual_seed(1),
                                             hooks=[record(steps)])
    for st in steps[:-1]:
        dist = float((st.x_prev - st.mean).norm())
        assert dist == pytest.approx(float(st.std.expand_as(st.x_prev).norm()), rel=1e-5)


def _run(sampler, adm, image_problem, hooks=None):
    op, noise, y = image_problem
    return sampler.sample(adm, op, noise, y, (1, 3, 16, 16), torch.Generator().manual_seed(2), hooks=hooks)


def test_zero_step_reduces_to_ddpm(adm, image_problem):
    """zeta = 0 (DMAP) or w = 0 (DSG): the DDPM step; without projection exactly, with projection the
    same direction rescaled onto the sphere."""
    ddpm_steps, dmap_steps, dsg_steps = [], [], []
    ref = _run(DDPMSampler(respacing="10"), adm, image_problem, [record(ddpm_steps)])
    out = _run(DMAPSampler(zeta=0.0, project=False, respacing="10"), adm, image_problem)
    torch.testing.assert_close(out, ref)
    _run(DMAPSampler(zeta=0.0, project=True, respacing="10"), adm, image_problem, [record(dmap_steps)])
    _run(DSGSampler(w=0.0, respacing="10"), adm, image_problem, [record(dsg_steps)])
    # compare one step from the same x_t: same direction as the DDPM draw
    for steps in (dmap_steps, dsg_steps):
        first, ref_first = steps[0], ddpm_steps[0]
        torch.testing.assert_close(first.x_t, ref_first.x_t)
        a = (first.x_prev - first.mean).flatten()
        b = (ref_first.x_prev - ref_first.mean).flatten()
        assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) == pytest.approx(1.0, abs=1e-5)


def test_dps_with_zero_step_is_ddpm(adm, image_problem):
    torch.testing.assert_close(_run(DPSSampler(zeta=0.0, respacing="10"), adm, image_problem),
                               _run(DDPMSampler(respacing="10"), adm, image_problem))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_dmap_costs_k_vjps_per_step(adm, image_problem, k):
    def stats(sampler):
        op, noise, y = image_problem
        return sampler.run(adm, op, noise, y, (1, 3, 16, 16), torch.Generator().manual_seed(2)).stats

    s = stats(DMAPSampler(zeta=0.1, num_inner=k, respacing="10"))
    assert s["forward"] == 10
    assert s["vjp"] == k * 9  # the final step has radius 0: no inner steps
    s = stats(DMAPSampler(zeta=0.1, num_inner=k, respacing="10", project=False))
    assert s["vjp"] == k * 10
    d = stats(DPSSampler(zeta=0.1, respacing="10"))
    assert (d["forward"], d["vjp"]) == (0, 10)


def test_adam_and_sgd_differ(adm, image_problem):
    sgd = _run(DMAPSampler(zeta=0.05, optimizer="sgd", respacing="5"), adm, image_problem)
    adam = _run(DMAPSampler(zeta=0.05, optimizer="adam", respacing="5"), adm, image_problem)
    assert float((sgd - adam).abs().max()) > 1e-3


def test_samplers_are_reproducible(adm, image_problem):
    a = _run(DMAPSampler(zeta=0.3, respacing="5"), adm, image_problem)
    b = _run(DMAPSampler(zeta=0.3, respacing="5"), adm, image_problem)
    assert torch.equal(a, b)


def test_divergence_is_recorded_per_sample(adm, image_problem):
    op, noise, y = image_problem
    result = DPSSampler(zeta=1e30, respacing="5").run(adm, op, noise, y.expand(2, -1, -1, -1), (2, 3, 16, 16),
                                                      torch.Generator().manual_seed(0))
    x, fails = result.x0, result.failures()
    assert not torch.isfinite(x).all()
    assert [f["index"] for f in fails] == [0, 1]
    assert all(0 <= f["step"] < 5 for f in fails)
    assert all(f["last_misfit"] is not None and np.isfinite(f["last_misfit"]) for f in fails)


# -- the Gaussian-mixture problem: DMAP is an explicit MAP ----------------------------------------
@pytest.fixture(scope="module")
def gmm():
    prior = shipped_prior("gmm")
    A, x0, y, post, _ = find_multimodal_problem(prior.mixture, 2, 0.05, torch.Generator().manual_seed(0))
    return prior, MatrixOperator(A), GaussianNoise(0.05), y, post


def test_dmap_fits_measurement_and_posterior_better_than_dps(gmm):
    tuned = OmegaConf.load("conf/tuned/default.yaml").priors.gmm.gmm_linear
    prior, op, noise, y, post = gmm
    n = 300
    yb = y[None].expand(n, -1)

    def draw(sampler):
        return sampler.sample(prior, op, noise, yb, (n, 8), torch.Generator().manual_seed(3))

    dps = draw(DPSSampler(zeta=tuned.dps.zeta, respacing="1000", clip_x0=False))
    dmap = draw(DMAPSampler(zeta=tuned.dmap.zeta, respacing="1000", clip_x0=False))
    misfit = {k: float((v @ op.matrix.T - y).norm(dim=1).mean()) for k, v in (("dps", dps), ("dmap", dmap))}
    logp = {k: float(post.log_prob(v).mean()) for k, v in (("dps", dps), ("dmap", dmap))}
    assert misfit["dmap"] < misfit["dps"]
    assert logp["dmap"] > logp["dps"]


@pytest.mark.parametrize("cls", [DDPMSampler, DPSSampler, DMAPSampler])
def test_ccdf_start_runs_the_last_part_of_the_chain_from_the_diffused_naive_estimate(adm, image_problem, cls):
    """sampler.start < 1 (CCDF): the chain starts at step k = round(start N) - 1 from
    x_k = q_sample(naive(y), k, z) with z the generator's first draw, and runs k + 1 steps."""
    from dps_map.diffusion import Diffusion
    from dps_map.errors import ConfigError

    op, noise, y = image_problem
    sampler = cls(respacing="10", start=0.4)
    steps = []
    result = sampler.run(adm, op, noise, y.expand(2, -1, -1, -1), (2, 3, 16, 16), torch.Generator().manual_seed(3),
                         hooks=[record(steps)])
    assert steps[0].i == 3 and min(s.i for s in steps) == 0 and result.stats["steps"] == 4
    diffusion = Diffusion(adm.betas, "10")
    z = torch.randn((2, 3, 16, 16), generator=torch.Generator().manual_seed(3))
    expected = diffusion.q_sample(op.naive(y).expand(2, -1, -1, -1), 3, z)
    assert torch.allclose(steps[0].x_t, expected)
    full = []
    cls(respacing="10").sample(adm, op, noise, y, (1, 3, 16, 16), torch.Generator().manual_seed(3), hooks=[record(full)])
    assert max(s.i for s in full) == 9
    with pytest.raises(ConfigError, match="start"):
        cls(start=0)


@pytest.mark.parametrize("diverged, steps", [([0, 1], DDPMSampler.CHECK_EVERY), ([0], 25)])
def test_chain_stops_early_only_when_the_whole_batch_has_diverged(adm, image_problem, diverged, steps):
    """A batch whose every sample is NaN stops at the next check (failures still reported with their
    step); one finite sample keeps the whole chain running."""

    class Diverging(DDPMSampler):
        def step(self, *args):
            transition = super().step(*args)
            if args[6] == 20:  # step index i: diverge there
                transition.x_prev[diverged] = float("nan")
            return transition

    op, noise, y = image_problem
    result = Diverging(respacing="25").run(adm, op, noise, y, (2, 3, 16, 16), torch.Generator().manual_seed(0))
    x, failures = result.x0, result.failures()
    assert result.stats["steps"] == steps and result.stats["forward"] == steps
    assert [f["index"] for f in failures] == diverged and {f["step"] for f in failures} == {20}
    assert torch.isnan(x[diverged]).all() and (len(diverged) == 2 or torch.isfinite(x[1]).all())


# -- the chain cache ----------------------------------------------------------------------------------
class _Schedule:
    """A prior as far as Sampler.diffusion reads it: its training betas."""

    def __init__(self, betas):
        self.betas = betas


def _abar_kept(betas, respacing):
    """abar at the respaced steps, from the betas directly (Ho eq. 4's product; ADM keeps abar on the subset)."""
    from dps_map.diffusion import space_timesteps

    return np.cumprod(1 - np.asarray(betas, dtype=np.float64))[space_timesteps(len(betas), respacing)]


def test_the_chain_is_cached_per_schedule_not_per_array_id():
    """Sampler.diffusion(prior) is the chain of the prior's betas whatever array holds them: an array
    changed in place keeps its id, and a freed array's id is given to the next one, so a cache keyed by
    id(prior.betas) would hand the first schedule's chain to the second."""
    from dps_map.diffusion import make_betas

    sampler = DDPMSampler(respacing="10")
    linear, cosine = make_betas("linear", 1000), make_betas("cosine", 1000)
    held = linear.copy()
    first = sampler.diffusion(_Schedule(held))
    np.testing.assert_allclose(first.alphas_cumprod, _abar_kept(linear, "10"), rtol=1e-12)
    held[:] = cosine  # same array, same id, another schedule
    np.testing.assert_allclose(sampler.diffusion(_Schedule(held)).alphas_cumprod, _abar_kept(cosine, "10"),
                               rtol=1e-12)
    for betas in (linear, cosine, linear, cosine):  # priors made and freed in turn: ids are reused
        prior = _Schedule(betas.copy())
        np.testing.assert_allclose(sampler.diffusion(prior).alphas_cumprod, _abar_kept(betas, "10"), rtol=1e-12)
        del prior
    assert sampler.diffusion(_Schedule(linear.copy())) is first  # equal schedules share one chain
