"""Independent numpy/scipy references for the tests of dps_map.metrics and the Gaussian-mixture benchmark.

Written here from the formulas, without importing dps_map: the tests compare the code against these.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance


def unit_directions(raw: np.ndarray) -> np.ndarray:
    """Columns of raw (d, P) scaled to unit length: directions on the sphere S^{d-1}."""
    raw = np.asarray(raw, dtype=np.float64)
    return raw / np.sqrt((raw**2).sum(0, keepdims=True))


def sliced_w1(a: np.ndarray, b: np.ndarray, directions: np.ndarray) -> float:
    """Sliced 1-Wasserstein distance of two equal-size point sets (N, d): the mean over the unit directions u
    (columns of `directions`, normalised here) of the exact W1 between the 1-D empirical distributions u.a, u.b
    (scipy.stats.wasserstein_distance)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    u = unit_directions(directions)
    pa, pb = a @ u, b @ u
    return float(np.mean([wasserstein_distance(pa[:, k], pb[:, k]) for k in range(u.shape[1])]))


def sliced_w1_quantiles(a: np.ndarray, b: np.ndarray, directions: np.ndarray) -> float:
    """Sliced W1 for sets of any sizes from matched quantiles: both projected sets evaluated at the levels
    (i + 1/2) / n, i < n = max(N_a, N_b), with numpy's linear quantile; the mean of |qa - qb| over levels and
    unit directions. For equal sizes this is the exact W1 (the sorted values)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    u = unit_directions(directions)
    n = max(len(a), len(b))
    levels = (np.arange(n) + 0.5) / n
    qa = np.sort(a @ u, 0) if len(a) == n else np.quantile(a @ u, levels, axis=0, method="linear")
    qb = np.sort(b @ u, 0) if len(b) == n else np.quantile(b @ u, levels, axis=0, method="linear")
    return float(np.abs(qa - qb).mean())


def mean_abs_projection_on_sphere(d: int) -> float:
    """E |u_1| for u uniform on S^{d-1}: Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2)). So SW1(X, X + c) = ||c|| times
    this for directions uniform on the sphere (each 1-D W1 of a shifted set is |u.c|)."""
    from math import gamma, pi, sqrt

    return gamma(d / 2) / (sqrt(pi) * gamma((d + 1) / 2))


def poly_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 (Binkowski et al. 2018, KID) with the kernel k(a, b) = (a.b / d + 1)^3, the diagonal terms
    k(x_i, x_i), k(y_j, y_j) left out of the within-set means."""
    d = x.shape[1]
    k = lambda p, q: (p @ q.T / d + 1.0) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    off = lambda km, s: (km.sum() - np.einsum("ii->", km)) / (s * (s - 1))  # noqa: E731
    return float(off(kxx, m) + off(kyy, n) - 2 * kxy.mean())


def gmm_posterior(weights, means, covs, A, y, sigma_y):
    """The exact posterior of x ~ sum_k w_k N(m_k, C_k) given y = A x + sigma_y n, by Gaussian conditioning of
    each component's joint (x, y): S_k = A C_k A^T + sigma_y^2 I, gain G_k = C_k A^T S_k^{-1},
    mean m_k + G_k (y - A m_k), covariance C_k - G_k A C_k, weight proportional to w_k N(y; A m_k, S_k).
    Returns numpy (weights (K,), means (K, d), covs (K, d, d))."""
    w, m, c = (np.asarray(v, dtype=np.float64) for v in (weights, means, covs))
    A, y = np.asarray(A, dtype=np.float64), np.asarray(y, dtype=np.float64).ravel()
    post_m, post_c, logw = [], [], []
    for k in range(len(w)):
        s = A @ c[k] @ A.T + sigma_y**2 * np.eye(len(y))
        gain = np.linalg.solve(s, A @ c[k]).T  # C A^T S^{-1} (S, C symmetric)
        r = y - A @ m[k]
        post_m.append(m[k] + gain @ r)
        post_c.append(c[k] - gain @ A @ c[k])
        _, logdet = np.linalg.slogdet(2 * np.pi * s)
        logw.append(np.log(w[k]) - 0.5 * (logdet + r @ np.linalg.solve(s, r)))
    logw = np.array(logw)
    pw = np.exp(logw - logw.max())
    return pw / pw.sum(), np.array(post_m), np.array(post_c)


def gmm_sample(weights, means, covs, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws of the mixture: a component k ~ Categorical(w), then m_k + L_k z with L_k L_k^T = C_k, z ~ N(0, I)."""
    comp = rng.choice(len(weights), size=n, p=np.asarray(weights) / np.sum(weights))
    chol = np.linalg.cholesky(np.asarray(covs))
    z = rng.standard_normal((n, np.asarray(means).shape[1]))
    return np.asarray(means)[comp] + np.einsum("nij,nj->ni", chol[comp], z)


def gmm_log_component_densities(x, weights, means, covs) -> np.ndarray:
    """log w_k + log N(x_n; m_k, C_k), shape (N, K) (scipy.stats.multivariate_normal)."""
    from scipy.stats import multivariate_normal

    return np.stack([np.log(w) + multivariate_normal(m, c).logpdf(np.asarray(x, dtype=np.float64))
                     for w, m, c in zip(weights, means, covs)], axis=1)
