"""What every sampler shares: the diffusion chain, noise draws, the measurement gradient, cost counters.

Contract (docs/architecture.md): ``run(prior, operator, noise, y, shape, generator, hooks=None, x_T=None)``
returns a :class:`SampleResult` (the samples, their cost, which diverged); ``sample(...)`` returns the
samples alone. A method implements ``step(...) -> Transition``; the base class runs the loop and calls the
hooks, once per diffusion step and in one place (:meth:`Sampler._advance`), with a :class:`Step`, so
diagnostics read the very code path that produces samples. Samplers count their network calls but do not
time themselves: the caller does (dps_map/runner/timing.py).

Cost discipline (measured by ``python -m dps_map.bench``): a step costs its network calls and
a few element-wise operations. The step loop never synchronises host and device (no ``.item()``,
``bool()`` or ``.to(device)`` of host tensors: the timestep indices live on the device, divergence
bookkeeping is done with ``torch.where``), keeps no autograd graph from one step to the next (every VJP
returns detached tensors), and draws all samples of a batch as one tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..diffusion import GUIDANCE_UNITS, Diffusion
from ..errors import ConfigError


@dataclass(frozen=True)
class Denoised:
    """One network pass at (x_t, t_i) without a graph (:meth:`Sampler.denoise`): eps_hat, ADM's
    learned-variance channels (None without), x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)
    (Ho eq. 15)."""

    eps: torch.Tensor
    var_values: torch.Tensor | None
    x0_hat: torch.Tensor


@dataclass(frozen=True)
class MeasurementGradient(Denoised):
    """The guidance of DPS (Chung et al. 2023, Alg. 1) at (x_t, t_i), through the network (one VJP;
    :meth:`Sampler.measurement_gradient`): the misfit ||y - A(x0_hat(x_t))|| per sample and its gradient
    g = grad_{x_t} misfit, with the pass's eps_hat, variance channels and x0_hat. All detached."""

    misfit: torch.Tensor
    grad: torch.Tensor


@dataclass(frozen=True)
class Transition:
    """What one reverse step x_t -> x_{t-1} computed (:meth:`Sampler.step` returns it): the new state and
    the quantities it came from, which the hooks see."""

    x_t: torch.Tensor  # the state the step's last network pass read (FreeDoM: x_t after its time-travel)
    x0_hat: torch.Tensor  # Ho eq. 15, unclipped
    eps: torch.Tensor  # eps_hat(x_t, t)
    grad: torch.Tensor | None  # the guidance gradient (None for a step without guidance)
    mean: torch.Tensor  # mu_t of the DDPM transition (Ho eq. 7)
    std: torch.Tensor  # sigma_t
    x_prev: torch.Tensor  # x_{t-1}


@dataclass(frozen=True)
class Step(Transition):
    """What a hook sees after diffusion step i (training index t): the step's :class:`Transition` and the
    network calls it made (forward passes without a graph, passes with their VJP)."""

    i: int
    t: int
    forward: int
    vjp: int


@dataclass(frozen=True)
class SampleResult:
    """What one sampler call gives back (:meth:`Sampler.run`).

    x0: the chain's last state, detached (a latent prior's latents z_0).
    stats: the cost: ``forward`` (network passes without a graph), ``vjp`` (passes with their VJP), ``nfe``
        (the two together), ``steps`` (diffusion steps run), and the operator's own counters (a latent
        prior's ``decoder_forward``, ``decoder_vjp``, ``encoder``).
    failed_at: (B,) the step index at which each sample became NaN/Inf, -1 for one that did not.
    last_misfit: (B,) each sample's last finite misfit ||y - A(x0_hat)|| (NaN: none recorded).
    The two tensors stay where the chain ran: :meth:`failures` reads them back.
    """

    x0: torch.Tensor
    stats: dict
    failed_at: torch.Tensor
    last_misfit: torch.Tensor

    def failures(self) -> list[dict]:
        """The samples that became NaN/Inf: [{index, step, last_misfit}] (empty if none)."""
        failed = self.failed_at.cpu()
        misfit = self.last_misfit.cpu()
        return [{"index": int(b), "step": int(failed[b]),
                 "last_misfit": None if torch.isnan(misfit[b]) else float(misfit[b])}
                for b in torch.nonzero(failed >= 0).flatten().tolist()]


class GeneratorStack:
    """The random streams of a batch of stacked measurements (``measurement_batch``): rows
    [r_j, r_j + n_j) of every draw come from generator j alone, drawn with the shape they would have
    alone, so a sample does not depend on what it was batched with (resume and shards stay exact)."""

    def __init__(self, parts):
        self.parts = [(gen, int(rows)) for gen, rows in parts]  # [(torch.Generator, rows)]
        self.device = self.parts[0][0].device

    @property
    def rows(self) -> int:
        return sum(rows for _, rows in self.parts)


def randn(shape, generator, dtype, device) -> torch.Tensor:
    """N(0, I) from the run's generator (drawn on the generator's device, then moved). The one place
    samplers draw noise: a :class:`GeneratorStack` draws each measurement's rows from its own stream."""
    if isinstance(generator, GeneratorStack):
        if generator.rows != shape[0]:
            raise ValueError(f"GeneratorStack covers {generator.rows} rows, the draw has {shape[0]}")
        return torch.cat([torch.randn((rows, *shape[1:]), generator=gen, dtype=dtype, device=gen.device).to(device)
                          for gen, rows in generator.parts])
    return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


def flat_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped to broadcast against v."""
    return v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))


def project_to_sphere(x: torch.Tensor, center: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """center + radius (x - center) / ||x - center||: the closest point of the sphere (per sample)."""
    diff = x - center
    return center + radius * diff / flat_norm(diff).clamp_min(torch.finfo(x.dtype).tiny)


class Sampler:
    """Base class: holds the chain settings and counts network calls.

    Args:
        respacing: diffusion steps to use (see diffusion.space_timesteps), e.g. "100" or "ddim50".
        variance: 'fixed_small', 'fixed_large' or 'learned_range' (needs a learn_sigma prior).
        clip_x0: clamp x0_hat to [-1, 1] in the transition mean (images only; never for guidance).
        start: fraction of the chain to run (1: all of it, from x_T ~ N(0, I)). Below 1, the chain
            starts at step k = round(start * N) - 1 from the naive estimate diffused there,
            x_k = q_sample(naive(y), k) (CCDF, Chung et al. CVPR 2022: "come closer, diffuse faster").
        guidance_units: the coordinates the step sizes are given in (docs/methods.md, "Guidance units").
            'vp' (default): the textbook form, a step zeta * grad_{x_t} added to x_{t-1}.
            'euler': the authors' SD2 code (tongdaxu/ControlNet-Low-Level, pipe.py), which steps diffusers'
            Euler-ancestral latents x~ = x_t / sqrt(abar_t) with the gradient w.r.t. x~: the VP step is
            zeta sqrt(abar_t abar_{t-1}) grad_{x_t} (DMAP's inner steps: zeta abar_{t-1} grad_{x_{t-1}};
            DSG is the same in both). This mode also takes that code's other details: x_T with std
            sqrt(1 - abar_T) (diffusers' init_noise_sigma), PSLD's gluing and encoding, FreeDoM's re-noise.
    """

    name = "base"

    CHECK_EVERY = 10  # steps between checks whether the whole batch has diverged (stop early if so)

    def __init__(self, respacing="100", variance="fixed_small", clip_x0=True, start=1.0, guidance_units="vp"):
        self.respacing, self.variance, self.clip_x0 = respacing, variance, clip_x0
        if guidance_units not in GUIDANCE_UNITS:
            raise ConfigError(f"sampler.guidance_units must be one of {', '.join(GUIDANCE_UNITS)}, got '{guidance_units}'")
        self.guidance_units = guidance_units
        if not 0 < float(start) <= 1:
            raise ConfigError(f"sampler.start must lie in (0, 1] (the fraction of the chain to run), got {start}")
        self.start = float(start)
        #: network calls of the call in progress (run or transition): denoise and measurement_gradient count
        #: theirs, a step that calls the network itself counts here; run() returns them in SampleResult.stats
        self.calls = {"forward": 0, "vjp": 0}
        self._diffusions: dict = {}

    # -- helpers ---------------------------------------------------------------------------------
    def diffusion(self, prior) -> Diffusion:
        """The respaced chain of this prior's training schedule, built once per schedule. Keyed by the betas'
        values, not by the array's id: Python reuses the id of a freed array for the next one."""
        key = np.asarray(prior.betas, dtype=np.float64).tobytes()
        if key not in self._diffusions:
            self._diffusions[key] = Diffusion(prior.betas, self.respacing, self.variance)
        return self._diffusions[key]

    def model_t(self, diffusion: Diffusion, i: int, batch: int, device) -> torch.Tensor:
        """Training index of step i for a batch, from the copy of the timesteps on the device
        (diffusion.model_t copies a host scalar at every call, which synchronises on CUDA)."""
        steps = diffusion.timesteps_on(device)
        return steps[i].expand(batch)

    def step_factor(self, diffusion: Diffusion, i, x):
        """The factor of the step size at step i for a gradient at x_t: 1 in VP units, sqrt(abar_t abar_{t-1})
        in Euler units (Diffusion.guidance_factor)."""
        return diffusion.guidance_factor(self.guidance_units, i, x)

    def _clip(self, prior, x0):
        return x0.clamp(-1, 1) if (self.clip_x0 and prior.kind == "image") else x0

    def denoise(self, prior, diffusion: Diffusion, x, i) -> Denoised:
        """One network pass at (x_t, t_i) without a graph."""
        t = self.model_t(diffusion, i, x.shape[0], x.device)
        with torch.no_grad():
            eps, var = prior.predict(x, t)
        self.calls["forward"] += 1
        return Denoised(eps=eps, var_values=var, x0_hat=diffusion.x0_from_eps(x, i, eps))

    def measurement_gradient(self, prior, diffusion: Diffusion, operator, noise, y, x, i) -> MeasurementGradient:
        """g = grad_x ||y - A(x0_hat(x, t_i))|| through the network (one VJP; Chung et al. 2023, Alg. 1), with
        the misfit per sample and the pass's eps_hat and x0_hat. Arguments in the order of :meth:`step`."""
        t = self.model_t(diffusion, i, x.shape[0], x.device)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps, var = prior.predict(x_in, t)
            x0 = diffusion.x0_from_eps(x_in, i, eps)
            misfit = noise.misfit(y, operator(x0))
            (grad,) = torch.autograd.grad(misfit.sum(), x_in)
        self.calls["vjp"] += 1
        return MeasurementGradient(eps=eps.detach(), var_values=None if var is None else var.detach(),
                                   x0_hat=x0.detach(), misfit=misfit.detach(), grad=grad)

    def record_misfit(self, misfit: torch.Tensor) -> None:
        """Remember each sample's last finite misfit (reported for a sample that diverges), without a host
        sync. A step calls it with each misfit it computes."""
        misfit = misfit.detach().to(self._last_misfit.dtype)
        self._last_misfit = torch.where(torch.isfinite(misfit), misfit, self._last_misfit)

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, prior, operator, noise, y, shape, generator: torch.Generator, hooks=None,
            x_T: torch.Tensor | None = None) -> SampleResult:
        """Run the reverse chain from x_T ~ N(0, I) (or the given x_T) to x_0; `hooks` are called with a
        :class:`Step` after every step. Returns the samples, their cost and which diverged."""
        if hasattr(operator, "reset_stats"):  # e.g. latent priors' DecodedOperator: decoder calls
            operator.reset_stats()
        diffusion = self.diffusion(prior)
        device = y.device if y is not None else generator.device
        dtype = y.dtype if (y is not None and y.is_floating_point()) else torch.float32
        first = diffusion.num_steps - 1
        if x_T is not None:
            x = x_T
        elif self.start < 1:  # CCDF: from the naive estimate, diffused to step `first`
            first = max(0, round(self.start * diffusion.num_steps) - 1)
            naive = operator.naive(y).to(dtype).expand(shape)
            x = diffusion.q_sample(naive, first, randn(shape, generator, dtype, device))
        else:
            x = randn(shape, generator, dtype, device)
            if self.guidance_units == "euler":  # diffusers' init_noise_sigma, in VP (Diffusion.initial_noise_std)
                x = x * diffusion.initial_noise_std(self.guidance_units)
        batch = x.shape[0]
        self._begin(x)
        steps = 0
        for i in reversed(range(first + 1)):
            x = self._advance(prior, diffusion, operator, noise, y, x, i, generator, hooks)
            steps += 1
            nonfinite = ~torch.isfinite(x.reshape(batch, -1)).all(dim=1)
            self._failed_at = torch.where((self._failed_at < 0) & nonfinite, i, self._failed_at)
            # once every sample of the batch has diverged, the rest of the chain is wasted work; one host
            # sync every CHECK_EVERY steps finds out
            if i > 0 and steps % self.CHECK_EVERY == 0 and bool((self._failed_at >= 0).all()):
                break
        stats = {**self.calls, "nfe": self.calls["forward"] + self.calls["vjp"], "steps": steps,
                 **getattr(operator, "stats", {})}
        return SampleResult(x0=x.detach(), stats=stats, failed_at=self._failed_at, last_misfit=self._last_misfit)

    def sample(self, prior, operator, noise, y, shape, generator: torch.Generator, hooks=None,
               x_T: torch.Tensor | None = None) -> torch.Tensor:
        """The samples alone: ``run(...).x0``."""
        return self.run(prior, operator, noise, y, shape, generator, hooks=hooks, x_T=x_T).x0

    def transition(self, prior, operator, noise, y, x_t: torch.Tensor, i: int, generator: torch.Generator,
                   hooks=None) -> torch.Tensor:
        """One reverse step x_t -> x_{t-1} at step index i, through the same `step` and hooks as :meth:`run`
        (for diagnostics that evaluate a sampler at given states x_t ~ p_t(x_t | y))."""
        self._begin(x_t)
        return self._advance(prior, self.diffusion(prior), operator, noise, y, x_t, i, generator, hooks)

    def step(self, prior, diffusion, operator, noise, y, x, i, generator) -> Transition:
        """One reverse step x_t -> x_{t-1} at step index i (training index diffusion.timesteps[i])."""
        raise NotImplementedError

    def _begin(self, x: torch.Tensor) -> None:
        """Fresh bookkeeping for a call on the batch x: network calls, and per sample the step at which it
        diverged and its last finite misfit, kept on the device (no host sync inside the loop)."""
        self.calls = {"forward": 0, "vjp": 0}
        self._failed_at = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        self._last_misfit = torch.full((x.shape[0],), float("nan"), device=x.device)

    def _advance(self, prior, diffusion, operator, noise, y, x, i, generator, hooks) -> torch.Tensor:
        """x_{t-1} from `step`; the one place hooks are called, with the step's Transition and its calls."""
        if not hooks:  # no per-step Python work when nobody listens
            return self.step(prior, diffusion, operator, noise, y, x, i, generator).x_prev
        forward, vjp = self.calls["forward"], self.calls["vjp"]
        transition = self.step(prior, diffusion, operator, noise, y, x, i, generator)
        step = Step(**vars(transition), i=i, t=int(diffusion.timesteps[i]), forward=self.calls["forward"] - forward,
                    vjp=self.calls["vjp"] - vjp)
        for hook in hooks:
            hook(step)
        return transition.x_prev
