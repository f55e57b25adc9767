"""Sample-based comparisons against an exact posterior (Gaussian-mixture benchmark)."""

from __future__ import annotations

import torch


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance: mean over random unit directions u of W1(u.a, u.b), the 1-D
    W1 computed from matched quantiles (both sets interpolated to the same levels). W1 rather than
    W2: with well-separated modes, W2 is dominated by the binomial noise of the mode counts."""
    a, b = a.double().cpu(), b.double().cpu()
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(a.shape[1], num_projections, generator=gen, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, pb = (a @ dirs).sort(dim=0).values, (b @ dirs).sort(dim=0).values
    n = max(len(pa), len(pb))
    levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    qa = torch.quantile(pa, levels, dim=0, interpolation="linear") if len(pa) != n else pa
    qb = torch.quantile(pb, levels, dim=0, interpolation="linear") if len(pb) != n else pb
    return float((qa - qb).abs().mean())


def mode_weights(samples: torch.Tensor, mixture) -> torch.Tensor:
    """Fraction of samples assigned (by maximum responsibility) to each component of `mixture`."""
    assign = mixture.responsibilities(samples.double()).argmax(dim=1)
    return torch.bincount(assign, minlength=len(mixture.weights)).double() / len(samples)


def effective_modes(weights: torch.Tensor) -> float:
    """exp(entropy) of mode weights: the number of equally weighted modes with the same entropy."""
    w = weights[weights > 0].double()
    return float(torch.exp(-(w * w.log()).sum()))


def within_mode_trace(samples: torch.Tensor, mixture) -> float:
    """Mean (over samples) trace of the covariance of the samples assigned to the same component:
    the spread inside modes, which a MAP-like sampler collapses (paper observation 3)."""
    assign = mixture.responsibilities(samples.double()).argmax(dim=1)
    total, count = 0.0, 0
    for k in assign.unique():
        xs = samples[assign == k].double()
        if len(xs) >= 2:
            total += len(xs) * float(torch.trace(torch.cov(xs.T)))
            count += len(xs)
    return total / max(count, 1)


def posterior_report(samples: torch.Tensor, posterior, reference: torch.Tensor, A: torch.Tensor,
                     y: torch.Tensor) -> dict:
    """How well samples (N, d) match an exact posterior mixture: mean log posterior density, mean
    misfit ||y - A x||, sliced Wasserstein to exact reference samples, covariance trace ratio
    tr Cov(samples) / tr Cov(posterior), total-variation distance between recovered mode weights and
    the posterior weights, the ratio of effective numbers of modes (exp entropy of the weights), and
    the ratio of within-mode spread (samples grouped by their most responsible component, against the
    posterior components' covariance traces)."""
    x = samples.double().cpu()
    finite = torch.isfinite(x).all(dim=1)
    x = x[finite]
    if len(x) < 2:
        return {"n_finite": int(len(x))}
    misfit = (x @ A.double().T - y.double().reshape(1, -1)).norm(dim=1)
    weights = mode_weights(x, posterior)
    tv = 0.5 * (weights - posterior.weights.cpu()).abs().sum()
    return {
        "n_finite": int(len(x)),
        "log_posterior": float(posterior.log_prob(x).mean()),
        "misfit": float(misfit.mean()),
        "sliced_wasserstein": sliced_wasserstein(x, reference),
        "trace_ratio": float(torch.trace(torch.cov(x.T)) / torch.trace(posterior.covariance())),
        "mode_weight_tv": float(tv),
        "effective_modes_ratio": effective_modes(weights) / effective_modes(posterior.weights.cpu().double()),
        "within_mode_trace_ratio": within_mode_trace(x, posterior) / float(
            (posterior.weights.cpu().double() * torch.diagonal(posterior.covs.cpu().double(), dim1=1, dim2=2).sum(1)).sum()),
        "mean_error": float((x.mean(0) - posterior.mean().cpu()).norm()),
    }


def sw_noise_floor(posterior, n: int, seed: int = 1) -> float:
    """Sliced Wasserstein between two independent exact sample sets of size n (the floor)."""
    gen = torch.Generator().manual_seed(seed)
    return sliced_wasserstein(posterior.sample(n, gen), posterior.sample(n, gen))


__all__ = ["sliced_wasserstein", "mode_weights", "effective_modes", "within_mode_trace", "posterior_report",
           "sw_noise_floor"]
