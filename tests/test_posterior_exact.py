"""The Gaussian-mixture posterior against a brute-force joint-Gaussian computation in numpy.

For one component x ~ N(m, C) and y = A x + sigma_y n, (x, y) is jointly Gaussian with
  cov = [[C, C A^T], [A C, S]],  S = A C A^T + sigma_y^2 I,
so p(x | y) = N(m + C A^T S^{-1} (y - A m), C - C A^T S^{-1} A C) (the Schur complement, Bishop eq. 2.81-2.82),
and the mode weights are w'_k ∝ w_k N(y; A m_k, S_k). The library uses the information form
(C^{-1} + A^T A / sigma_y^2)^{-1}; the two agree to rounding (float64: 1e-10 relative here), while a
covariance, mean or weight with a real mistake is off by orders of magnitude more (asserted below).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dps_map.priors.gmm import find_multimodal_problem, make_mixture

from support import shipped_prior


def joint_gaussian_posterior(weights, means, covs, A, y, sigma_y):
    """(weights, means, covs) of p(x | y), one component at a time, from the joint Gaussian of (x, y)."""
    out_w, out_m, out_c = [], [], []
    for w, m, C in zip(weights, means, covs):
        S = A @ C @ A.T + sigma_y**2 * np.eye(len(y))
        cross = C @ A.T  # Cov(x, y)
        out_m.append(m + cross @ np.linalg.solve(S, y - A @ m))
        out_c.append(C - cross @ np.linalg.solve(S, cross.T))
        r = y - A @ m
        log_evidence = -0.5 * (r @ np.linalg.solve(S, r) + np.linalg.slogdet(2 * np.pi * S)[1])
        out_w.append(np.log(w) + log_evidence)
    logw = np.array(out_w)
    post_w = np.exp(logw - logw.max())
    return post_w / post_w.sum(), np.array(out_m), np.array(out_c)


def instances():
    """The benchmark (isotropic, uniform weights, m = 2 of d = 8) and a full-covariance mixture with
    random weights (m = 3 of d = 4, a wider noise)."""
    prior = shipped_prior("gmm")
    A, _, y, _, _ = find_multimodal_problem(prior.mixture, 2, 0.05, torch.Generator().manual_seed(0))
    yield "benchmark", prior.mixture, A, y, 0.05
    g = torch.Generator().manual_seed(5)
    mix = make_mixture(4, 12, 0.5, 0.3, "full", "random", g)
    A = torch.randn(3, 4, generator=g, dtype=torch.float64) / 2
    x0 = mix.sample(1, g)[0]
    yield "full", mix, A, A @ x0 + 0.2 * torch.randn(3, generator=g, dtype=torch.float64), 0.2


@pytest.mark.parametrize("name", ["benchmark", "full"])
def test_posterior_equals_joint_gaussian_conditioning(name):
    _, mix, A, y, sigma_y = next(inst for inst in instances() if inst[0] == name)
    post = mix.condition(A, y, sigma_y)
    ref_w, ref_m, ref_c = joint_gaussian_posterior(mix.weights.numpy(), mix.means.numpy(), mix.covs.numpy(),
                                                   A.numpy(), y.numpy(), sigma_y)
    np.testing.assert_allclose(post.covs.numpy(), ref_c, rtol=1e-10, atol=1e-10 * np.abs(ref_c).max())
    np.testing.assert_allclose(post.means.numpy(), ref_m, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(post.weights.numpy(), ref_w, rtol=1e-8, atol=1e-14)
    # the checks are sharp: each alternative a mistake would give is far outside those tolerances
    assert np.abs(mix.covs.numpy() - ref_c).max() > 1e3 * 1e-10 * np.abs(ref_c).max()  # prior covariance
    assert np.abs(mix.means.numpy() - ref_m).max() > 1e-3  # prior means
    assert np.abs(mix.weights.numpy() - ref_w).max() > 1e-3  # prior weights
    # the posterior shrinks every component along the measured directions (Loewner order C' <= C)
    for C, Cp in zip(mix.covs.numpy(), ref_c):
        assert np.linalg.eigvalsh(C - Cp).min() > -1e-12


@pytest.mark.parametrize("name", ["benchmark", "full"])
def test_mode_weights_ignore_noise_only_at_the_wrong_scale(name):
    """The evidence covariance must include sigma_y^2 I: without it the weights change (asserted for the
    instance), so the weight check above sees it."""
    _, mix, A, y, sigma_y = next(inst for inst in instances() if inst[0] == name)
    ref_w, _, _ = joint_gaussian_posterior(mix.weights.numpy(), mix.means.numpy(), mix.covs.numpy(),
                                           A.numpy(), y.numpy(), sigma_y)
    no_noise, _, _ = joint_gaussian_posterior(mix.weights.numpy(), mix.means.numpy(), mix.covs.numpy(),
                                              A.numpy(), y.numpy(), 1e-9)
    assert np.abs(no_noise - ref_w).max() > 1e-3
    np.testing.assert_allclose(mix.condition(A, y, sigma_y).weights.numpy(), ref_w, rtol=1e-8, atol=1e-14)


def test_posterior_moments_and_samples_follow_the_components():
    """Total mean/covariance of the posterior from its components, and 200k exact samples: per-entry
    error within 5 standard errors of the sample covariance (sqrt(C_ii C_jj + C_ij^2) / sqrt(n))."""
    _, mix, A, y, sigma_y = next(instances())
    post = mix.condition(A, y, sigma_y)
    w, m, C = (t.numpy() for t in (post.weights, post.means, post.covs))
    mean = (w[:, None] * m).sum(0)
    cov = (w[:, None, None] * (C + m[:, :, None] * m[:, None, :])).sum(0) - np.outer(mean, mean)
    np.testing.assert_allclose(post.mean().numpy(), mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(post.covariance().numpy(), cov, rtol=1e-12, atol=1e-14)
    n = 200_000
    xs = post.sample(n, torch.Generator().manual_seed(1)).numpy()
    d = np.sqrt(np.diag(cov))
    se = np.sqrt(np.outer(d, d) ** 2 + cov**2) / np.sqrt(n)
    assert np.all(np.abs(xs.mean(0) - mean) < 5 * d / np.sqrt(n))
    assert np.all(np.abs(np.cov(xs.T) - cov) < 5 * se + 1e-12)
