"""An analytic Gaussian-mixture prior in R^d with exact scores and exact posteriors.

If x_0 ~ sum_k w_k N(m_k, C_k), then under the VP forward process
  p_t(x_t) = sum_k w_k N(sqrt(abar_t) m_k, abar_t C_k + (1 - abar_t) I),
and for y = A x_0 + sigma_y n (Bishop 2006, eq. 2.116 and 9.7) the posterior is again a mixture,
  p(x_0 | y) = sum_k w'_k N(m'_k, C'_k),  C'_k = (C_k^{-1} + A^T A / sigma_y^2)^{-1},
  m'_k = C'_k (C_k^{-1} m_k + A^T y / sigma_y^2),  w'_k ∝ w_k N(y; A m_k, A C_k A^T + sigma_y^2 I),
and p_t(x_t | y) is that posterior pushed through the forward process (x_t is independent of y given
x_0). So the prior score, the conditional score and posterior samples are all exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..diffusion import Diffusion, make_betas
from ..errors import ConfigError
from .base import Prior

DTYPE = torch.float64


@dataclass
class GaussianMixture:
    """sum_k weights[k] N(means[k], covs[k]) in R^d (float64 tensors)."""

    weights: torch.Tensor  # (K,)
    means: torch.Tensor  # (K, d)
    covs: torch.Tensor  # (K, d, d)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def to(self, device) -> "GaussianMixture":
        return GaussianMixture(self.weights.to(device), self.means.to(device), self.covs.to(device))

    def __post_init__(self):
        # per-component precision matrices and log-determinants, computed once per mixture
        chol = torch.linalg.cholesky(self.covs)
        self.precisions = torch.cholesky_inverse(chol)
        self.log_dets = 2 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; m_k, C_k), shape (N, K)."""
        diff = x.to(DTYPE)[:, None, :] - self.means[None]  # (N, K, d)
        maha = torch.einsum("nkd,kde,nke->nk", diff, self.precisions, diff)
        return self.weights.log()[None] - 0.5 * (maha + self.log_dets[None] + self.dim * np.log(2 * np.pi))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), shape (N,)."""
        return torch.logsumexp(self.component_log_probs(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities r_k(x), shape (N, K)."""
        return torch.softmax(self.component_log_probs(x), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x) = -sum_k r_k(x) C_k^{-1} (x - m_k), in closed form."""
        diff = x.to(DTYPE)[:, None, :] - self.means[None]  # (N, K, d)
        prec_diff = torch.einsum("kde,nke->nkd", self.precisions, diff)
        maha = (diff * prec_diff).sum(-1)
        logits = self.weights.log()[None] - 0.5 * (maha + self.log_dets[None])
        resp = torch.softmax(logits, dim=1)
        return -(resp[..., None] * prec_diff).sum(1).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n exact samples, shape (n, d)."""
        dev = self.means.device
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=DTYPE, device=dev)
        chol = torch.linalg.cholesky(self.covs)
        return self.means[comp] + (chol[comp] @ z[..., None])[..., 0]

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> torch.Tensor:
        """Total covariance sum_k w_k (C_k + m_k m_k^T) - m m^T."""
        m = self.mean()
        second = (self.weights[:, None, None] * (self.covs + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - m[:, None] * m[None, :]

    def diffuse(self, abar: float) -> "GaussianMixture":
        """The marginal p_t of the VP forward process at cumulative alpha abar."""
        eye = torch.eye(self.dim, dtype=DTYPE, device=self.means.device)
        return GaussianMixture(self.weights, np.sqrt(abar) * self.means, abar * self.covs + (1 - abar) * eye)

    def condition(self, A: torch.Tensor, y: torch.Tensor, sigma_y: float) -> "GaussianMixture":
        """Exact posterior p(x | y) for y = A x + sigma_y n (module docstring)."""
        A = A.to(DTYPE)
        y = y.to(DTYPE).reshape(-1)
        prec = torch.linalg.inv(self.covs)  # (K, d, d)
        post_cov = torch.linalg.inv(prec + (A.T @ A)[None] / sigma_y**2)
        rhs = (prec @ self.means[..., None])[..., 0] + (A.T @ y)[None] / sigma_y**2
        post_mean = (post_cov @ rhs[..., None])[..., 0]
        y_cov = A[None] @ self.covs @ A.T[None] + sigma_y**2 * torch.eye(A.shape[0], dtype=DTYPE)
        evidence = GaussianMixture(self.weights, self.means @ A.T, y_cov).component_log_probs(y[None])[0]
        post_w = torch.softmax(evidence, dim=0)
        post_cov = 0.5 * (post_cov + post_cov.transpose(-1, -2))
        return GaussianMixture(post_w, post_mean, post_cov)


def make_mixture(dim: int, num_components: int, grid_scale: float, cov_std: float, cov_type: str,
                 weights: str, generator: torch.Generator) -> GaussianMixture:
    """A seeded random mixture: means are distinct points of the lattice grid_scale * {-2..2}^d
    (all 25 of them when d = 2, K = 25); covariances 'isotropic' (cov_std^2 I), 'diagonal' or 'full'
    (random, with the same average variance); weights 'uniform' or 'random' (Dirichlet(1))."""
    n_lattice = 5**dim
    if num_components > n_lattice:
        raise ConfigError(f"gmm: {num_components} components do not fit on the 5^{dim} lattice")
    if n_lattice <= 100_000:
        chosen = torch.randperm(n_lattice, generator=generator)[:num_components]
        points = [np.unravel_index(int(c), (5,) * dim) for c in chosen]
    else:  # rejection sampling of distinct lattice points
        seen: set = set()
        while len(seen) < num_components:
            seen.add(tuple(torch.randint(0, 5, (dim,), generator=generator).tolist()))
        points = sorted(seen)
    means = grid_scale * (torch.tensor(np.array(points), dtype=DTYPE) - 2)
    eye = torch.eye(dim, dtype=DTYPE)
    if cov_type == "isotropic":
        covs = cov_std**2 * eye.expand(num_components, dim, dim).clone()
    elif cov_type == "diagonal":
        scales = torch.exp(0.5 * torch.randn(num_components, dim, generator=generator, dtype=DTYPE))
        covs = torch.diag_embed(cov_std**2 * scales**2 / scales.pow(2).mean(-1, keepdim=True))
    elif cov_type == "full":
        root = torch.randn(num_components, dim, dim, generator=generator, dtype=DTYPE) / np.sqrt(dim)
        covs = root @ root.transpose(-1, -2) + 0.1 * eye
        covs = cov_std**2 * covs / torch.diagonal(covs, dim1=-2, dim2=-1).mean(-1)[:, None, None]
    else:
        raise ConfigError(f"gmm: unknown cov_type '{cov_type}' (isotropic, diagonal, full)")
    if weights == "uniform":
        w = torch.full((num_components,), 1.0 / num_components, dtype=DTYPE)
    elif weights == "random":
        w = -torch.log(torch.rand(num_components, generator=generator, dtype=DTYPE))  # Exp(1) = Gamma(1)
        w = w / w.sum()
    else:
        raise ConfigError(f"gmm: unknown weights '{weights}' (uniform, random)")
    return GaussianMixture(w, means, covs)


class GMMPrior(Prior):
    """Exact eps of a Gaussian mixture at every training step: eps = -sqrt(1 - abar_t) grad log p_t."""

    kind = "vector"

    def __init__(self, mixture: GaussianMixture, betas):
        super().__init__()
        self.mixture = mixture
        self.betas = np.asarray(betas, dtype=np.float64)
        self._train = Diffusion(self.betas)  # unspaced: step index == training index
        self._marginals: dict[int, GaussianMixture] = {}

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.mixture.dim,)

    def marginal(self, t: int) -> GaussianMixture:
        """p_t at training index t (cached: its precisions are computed once per t)."""
        if t not in self._marginals:
            self._marginals[t] = self.mixture.diffuse(float(self._train.alphas_cumprod[t]))
        return self._marginals[t]

    def predict(self, x_t, t):
        t = t.reshape(-1).cpu()
        steps = t.unique()
        if len(steps) == 1:  # the usual case: one step for the whole batch
            return self._eps_at(x_t, int(steps[0])), None
        eps = torch.empty_like(x_t)
        for step in steps:
            rows = (t == step).to(x_t.device)
            eps[rows] = self._eps_at(x_t[rows], int(step))
        return eps, None

    def _eps_at(self, x: torch.Tensor, step: int) -> torch.Tensor:
        mix = self.marginal(step)
        if mix.means.device != x.device:
            mix = mix.to(x.device)
        return self._train.eps_from_score(x, step, mix.score(x))

    def condition(self, A: torch.Tensor, y: torch.Tensor, sigma_y: float) -> "GMMPrior":
        """The prior of the exact posterior p(x_0 | y): its eps is the exact conditional score."""
        return GMMPrior(self.mixture.condition(A, y, sigma_y), self.betas)


def gmm_prior(instance_seed: int = 0, dim: int = 8, num_components: int = 25, grid_scale: float = 0.5,
              cov_std: float = 0.1, cov_type: str = "isotropic", weights: str = "uniform",
              noise_schedule: str = "linear", diffusion_steps: int = 1000) -> GMMPrior:
    """The analytic Gaussian-mixture prior (``kind: gmm``, conf/prior/gmm.yaml): the mixture drawn from
    instance_seed (:func:`make_mixture`), diffused with the given schedule."""
    gen = torch.Generator().manual_seed(int(instance_seed))
    mixture = make_mixture(dim, num_components, grid_scale, cov_std, cov_type, weights, gen)
    return GMMPrior(mixture, make_betas(noise_schedule, diffusion_steps))


def find_multimodal_problem(mixture: GaussianMixture, num_measurements: int, sigma_y: float,
                            generator: torch.Generator, min_modes: int = 2, min_weight: float = 0.1,
                            max_tries: int = 10_000):
    """Draw A (m x d, N(0, 1/d) entries), x0 ~ prior and y = A x0 + sigma_y n until the exact
    posterior has at least `min_modes` components of weight >= min_weight (a deliberately
    multimodal benchmark). Returns (A, x0, y, posterior, tries)."""
    d = mixture.dim
    for tries in range(1, max_tries + 1):
        A = torch.randn(num_measurements, d, generator=generator, dtype=DTYPE) / np.sqrt(d)
        x0 = mixture.sample(1, generator)[0]
        y = A @ x0 + sigma_y * torch.randn(num_measurements, generator=generator, dtype=DTYPE)
        posterior = mixture.condition(A, y, sigma_y)
        if int((posterior.weights >= min_weight).sum()) >= min_modes:
            return A, x0, y, posterior, tries
    raise ConfigError(f"gmm: no instance with {min_modes} posterior modes of weight >= {min_weight} in "
                      f"{max_tries} tries; change prior.instance_seed, task.sigma_y or the mixture")
