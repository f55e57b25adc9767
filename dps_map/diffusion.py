"""The variance-preserving (VP) diffusion maths: the one place for every schedule formula.

Notation (Ho et al. 2020; Nichol & Dhariwal 2021, "ADM"):
  beta_t, alpha_t = 1 - beta_t, abar_t = prod_{s<=t} alpha_s,
  q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)                      (Ho eq. 4)
  x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)                     (Ho eq. 15)
  score  = -eps / sqrt(1 - abar_t)
  q(x_{t-1} | x_t, x_0) = N(mu_t, sigma_t^2 I),
  mu_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0
         + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t               (Ho eq. 7)
  sigma_t^2 = (1 - abar_{t-1}) / (1 - abar_t) beta_t   ("fixed small")

A :class:`Diffusion` is a (possibly respaced) chain of S steps indexed i = 0..S-1. Step i
corresponds to the training-schedule index ``timesteps[i]``, which is what a prior network is
called with. Respacing follows ADM (Nichol & Dhariwal 2021, sec. 4): keep a subset of the training
steps and recompute beta_i = 1 - abar_{t_i} / abar_{t_{i-1}} so abar is unchanged on the subset.

Stable Diffusion (Rombach et al. 2022) uses the "scaled_linear" betas (:func:`make_betas`) and, for
v-models, predicts v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022, eq. after (8));
:func:`eps_from_v` turns it into eps, so every sampler keeps working with eps.

Euler-ancestral = ancestral DDPM. In the scaled variable x~ = x_t / sqrt(abar_t) with
sigma_t = sqrt((1 - abar_t) / abar_t), the Euler-ancestral step (Karras et al. 2022 / k-diffusion,
eta = 1) from sigma_t to sigma_s uses sigma_up^2 = sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2,
sigma_down = sqrt(sigma_s^2 - sigma_up^2) = sigma_s^2 / sigma_t, and gives
x~_s = x0 + (sigma_s^2 / sigma_t^2) (x~_t - x0) + sigma_up z: exactly the DDPM posterior
q(x_s | x_t, x0) with the "fixed small" variance (Ho eq. 7) on the same (respaced) grid, rescaled by
sqrt(abar). So :meth:`Diffusion.ddpm_step` on the 500-step grid is the authors' 500-step
Euler-ancestral sampler, given the same x0_hat and noise (tests/test_latent.py checks it against
diffusers' EulerAncestralDiscreteScheduler.step and DDPMScheduler.step). One difference of grid, not
of step: diffusers' default "linspace" spacing calls the network at fractional timesteps, our
respacing rounds them to integers.

Guidance units (docs/methods.md, "Guidance units"). The authors' SD2 code adds its guidance step in those
scaled coordinates, -s grad_{x~_t} L, to x~_{t-1}. The loss L(x0_hat) is the same function of x_t in both
coordinates, so grad_{x~_t} L = sqrt(abar_t) grad_{x_t} L, and multiplying the update by sqrt(abar_{t-1})
gives the VP step -s sqrt(abar_t abar_{t-1}) grad_{x_t} L (:meth:`Diffusion.guidance_factor`). A gradient
taken at the new x_{t-1} and added to x~_{t-1} (their "max", our DMAP) is -s abar_{t-1} grad_{x_{t-1}} L.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import ConfigError

VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
#: the coordinates a guidance step size is given in: 'vp' (x_t itself, the textbook form) or 'euler'
#: (diffusers' Euler-ancestral x~ = x_t / sqrt(abar_t), the authors' SD2 code)
GUIDANCE_UNITS = ("vp", "euler")


def make_betas(schedule: str = "linear", num_steps: int = 1000, beta_start: float = 0.00085,
               beta_end: float = 0.012) -> np.ndarray:
    """Training betas: ADM's 'linear' (1e-4..0.02 scaled to 1000 steps) or 'cosine' (Nichol eq. 17), or
    Stable Diffusion's 'scaled_linear', beta_t = (linspace(sqrt(beta_start), sqrt(beta_end), T)_t)^2
    (defaults 0.00085 and 0.012, the values of SD 1.x/2.x's scheduler_config.json)."""
    if schedule == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=np.float64) ** 2
    if schedule == "linear":
        scale = 1000 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    if schedule == "cosine":
        def abar(u):
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array(
            [min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), 0.999) for i in range(num_steps)],
            dtype=np.float64,
        )
    raise ConfigError(f"unknown noise schedule '{schedule}' (expected 'linear', 'cosine' or 'scaled_linear')")


def alphas_cumprod(betas) -> np.ndarray:
    """abar_t = prod_{s<=t} (1 - beta_s)."""
    return np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))


def velocity(x0: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022), abar broadcast against x0."""
    return abar.sqrt() * eps - (1 - abar).sqrt() * x0


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t: the one v -> eps conversion (a v-model's output).

    From x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps and the definition of v (:func:`velocity`)."""
    return abar.sqrt() * v + (1 - abar).sqrt() * x_t


def v_from_eps(x_t: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """v = (eps - sqrt(1 - abar_t) x_t) / sqrt(abar_t), the inverse of :func:`eps_from_v`."""
    return (eps - (1 - abar).sqrt() * x_t) / abar.sqrt()


def space_timesteps(num_train_steps: int, respacing: str | int | None) -> list[int]:
    """Training indices kept by a respacing string, as in ADM.

    '250' keeps 250 evenly strided steps; '10,20' splits the chain in equal sections with that
    many steps each; 'ddim50' uses an integer stride that yields exactly 50 steps (starting at 0).
    None or '' keeps every step.
    """
    if respacing in (None, "", str(num_train_steps), num_train_steps):
        return list(range(num_train_steps))
    spec = str(respacing)
    if spec.startswith("ddim"):
        wanted = int(spec[len("ddim"):])
        for stride in range(1, num_train_steps):
            if len(range(0, num_train_steps, stride)) == wanted:
                return list(range(0, num_train_steps, stride))
        raise ConfigError(f"respacing '{spec}': no integer stride gives exactly {wanted} of {num_train_steps} steps")
    counts = [int(c) for c in spec.split(",")]
    size_per, extra = divmod(num_train_steps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count > size or count < 1:
            raise ConfigError(f"respacing '{spec}': cannot take {count} steps from a section of {size}")
        frac_stride = 1 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(j * frac_stride) for j in range(count)]
        start += size
    return kept


class Diffusion:
    """A VP diffusion chain (respaced or not) with the transition formulas used by every sampler.

    Args:
        betas: the training betas of the prior (length T).
        respacing: see :func:`space_timesteps`.
        variance: 'fixed_small' (posterior variance), 'fixed_large' (beta_t) or 'learned_range'
            (ADM's interpolation between the two from the model's extra output channels).
    """

    def __init__(self, betas, respacing: str | int | None = None, variance: str = "fixed_small"):
        if variance not in VARIANCE_TYPES:
            raise ConfigError(f"unknown variance type '{variance}' (expected one of {VARIANCE_TYPES})")
        train_abar = alphas_cumprod(betas)
        self.num_train_steps = len(train_abar)
        self.variance = variance
        kept = space_timesteps(self.num_train_steps, respacing)
        abar = train_abar[kept]
        abar_prev = np.append(1.0, abar[:-1])
        self.timesteps = torch.tensor(kept, dtype=torch.long)
        self.betas = 1.0 - abar / abar_prev
        self.alphas_cumprod = abar
        self.alphas_cumprod_prev = abar_prev
        self.num_steps = len(kept)
        # q(x_{t-1} | x_t, x_0), Ho eq. 7
        self.posterior_variance = self.betas * (1.0 - abar_prev) / (1.0 - abar)
        # log of the posterior variance, clipped at the first step where it is 0 (as in ADM)
        clipped = np.append(self.posterior_variance[1], self.posterior_variance[1:]) if self.num_steps > 1 \
            else self.betas.copy()
        self.posterior_log_variance_clipped = np.log(clipped)
        # "fixed large" uses beta_t, with the posterior variance at the first step (as in ADM)
        self.log_variance_large = np.log(np.append(clipped[0], self.betas[1:]))
        self.posterior_mean_coef1 = self.betas * np.sqrt(abar_prev) / (1.0 - abar)
        self.posterior_mean_coef2 = (1.0 - abar_prev) * np.sqrt(1.0 - self.betas) / (1.0 - abar)
        # guidance in Euler-ancestral units (module docstring): the VP factor of a step at x_t
        self.euler_guidance_factor = np.sqrt(abar * abar_prev)
        # the authors' FreeDoM "re-noise" (run_fdm), mapped to VP: the training beta at the loop index
        # k = S - 1 - i, applied to the Euler latent x~_{t-1}, which the repeated step then reads as x~_t
        loop_beta = np.asarray(betas, dtype=np.float64)[:self.num_steps][::-1]
        self.euler_renoise_scale = np.sqrt((1.0 - loop_beta) * abar / abar_prev)
        self.euler_renoise_std = np.sqrt(loop_beta * abar)
        self._cache: dict = {}

    # -- indexing helpers ---------------------------------------------------------------------
    def _at(self, name: str, i, x: torch.Tensor) -> torch.Tensor:
        """Gather schedule array `name` at step(s) i, shaped to broadcast against x."""
        key = (name, x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = torch.as_tensor(getattr(self, name), device=x.device, dtype=x.dtype)
        arr = self._cache[key]
        if isinstance(i, int):
            return arr[i]
        return arr[i.to(x.device)].reshape(-1, *([1] * (x.dim() - 1)))

    def model_t(self, i: int, batch: int, device=None) -> torch.Tensor:
        """Training-schedule index of step i for a batch (what Prior.eps receives)."""
        return self.timesteps[i].to(device).expand(batch)

    def timesteps_on(self, device) -> torch.Tensor:
        """`timesteps` on `device`, copied once per device (a sampler's loop indexes it there: a host copy
        at every step would synchronise on CUDA)."""
        key = ("timesteps", torch.device(device))
        if key not in self._cache:
            self._cache[key] = self.timesteps.to(device)
        return self._cache[key]

    # -- forward process and conversions ------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, i, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho eq. 4)."""
        abar = self._at("alphas_cumprod", i, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def x0_from_eps(self, x_t: torch.Tensor, i, eps: torch.Tensor) -> torch.Tensor:
        """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (Tweedie / Ho eq. 15)."""
        abar = self._at("alphas_cumprod", i, x_t)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def eps_from_x0(self, x_t: torch.Tensor, i, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t), the inverse of :meth:`x0_from_eps`."""
        abar = self._at("alphas_cumprod", i, x_t)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()

    def score_from_eps(self, x_t: torch.Tensor, i, eps: torch.Tensor) -> torch.Tensor:
        """score = grad log p_t(x_t) = -eps / sqrt(1 - abar_t)."""
        return -eps / (1 - self._at("alphas_cumprod", i, x_t)).sqrt()

    def eps_from_score(self, x_t: torch.Tensor, i, score: torch.Tensor) -> torch.Tensor:
        """eps = -sqrt(1 - abar_t) score, the inverse of :meth:`score_from_eps`."""
        return -(1 - self._at("alphas_cumprod", i, x_t)).sqrt() * score

    def v_loss_weight(self, i, x: torch.Tensor) -> torch.Tensor:
        """1 / abar_t = 1 + 1/SNR_t: the weight that turns the eps loss into the v-prediction loss
        (Salimans & Ho 2022): ||v_hat - v||^2 = ||eps_hat - eps||^2 / abar_t for an eps model."""
        return 1.0 / self._at("alphas_cumprod", i, x)

    def eps_from_mean(self, x_t: torch.Tensor, i, mean: torch.Tensor) -> torch.Tensor:
        """The eps whose DDPM transition mean is `mean`: inverts mu_t = (x_t - beta_t eps / sqrt(1 - abar_t))
        / sqrt(alpha_t) (Ho eq. 11): eps = (x_t - sqrt(alpha_t) mean) sqrt(1 - abar_t) / beta_t.

        A guided update that shifts the mean by -zeta g therefore implies eps + zeta g / c_t with
        c_t = beta_t / (sqrt(alpha_t) sqrt(1 - abar_t)), i.e. the score s - zeta sqrt(alpha_t) g / beta_t."""
        beta = self._at("betas", i, x_t)
        abar = self._at("alphas_cumprod", i, x_t)
        return (x_t - (1 - beta).sqrt() * mean) * (1 - abar).sqrt() / beta

    # -- guidance step sizes -----------------------------------------------------------------
    def guidance_factor(self, units: str, i, x: torch.Tensor):
        """The VP step of a step size s for a gradient taken at x_t (step i) is s * factor * grad_{x_t} L:
        1 in 'vp' units; sqrt(abar_t abar_{t-1}) in 'euler' units, since -s grad_{x~_t} L added to
        x~_{t-1} = x_{t-1} / sqrt(abar_{t-1}) is -s sqrt(abar_t) sqrt(abar_{t-1}) grad_{x_t} L in x_{t-1}."""
        if units == "vp":
            return 1.0
        if units == "euler":
            return self._at("euler_guidance_factor", i, x)
        raise ConfigError(f"guidance units must be one of {GUIDANCE_UNITS}, got '{units}'")

    def inner_guidance_factor(self, units: str, i, x: torch.Tensor):
        """As :meth:`guidance_factor`, for a gradient taken at the new x_{t-1} of step i and added to it
        (DMAP's inner steps; the authors' "max"): 1 in 'vp' units, abar_{t-1} in 'euler' units
        (grad_{x~_{t-1}} L = sqrt(abar_{t-1}) grad_{x_{t-1}} L, mapped back by sqrt(abar_{t-1}))."""
        if units == "vp":
            return 1.0
        if units == "euler":
            return self._at("alphas_cumprod_prev", i, x)
        raise ConfigError(f"guidance units must be one of {GUIDANCE_UNITS}, got '{units}'")

    def initial_noise_std(self, units: str) -> float:
        """Std of x_T: 1 (VP); in 'euler' units diffusers' Euler-ancestral pipelines draw x~_T with
        init_noise_sigma = sigma_max for "linspace" spacing, i.e. x_T = sqrt(abar_T) sigma_max n =
        sqrt(1 - abar_T) n (0.9977 for SD's schedule)."""
        return 1.0 if units == "vp" else float(np.sqrt(1.0 - self.alphas_cumprod[-1]))

    def eps_weight_in_mean(self, i, x: torch.Tensor) -> torch.Tensor:
        """coef1_t sqrt(1 - abar_t) / sqrt(abar_t): the weight with which eps enters mu_t through x0_hat
        (FreeDoM's adaptive step, Yu et al.'s Face-GD code, functions/denoising.py:67-69)."""
        abar = self._at("alphas_cumprod", i, x)
        return self._at("posterior_mean_coef1", i, x) * (1 - abar).sqrt() / abar.sqrt()

    # -- time travel (FreeDoM) ----------------------------------------------------------------
    def forward_step(self, x_prev: torch.Tensor, i, noise: torch.Tensor) -> torch.Tensor:
        """One forward step q(x_t | x_{t-1}) of the (respaced) chain: sqrt(alpha_t) x_{t-1} + sqrt(1 - alpha_t) n
        (FreeDoM's time travel, Yu et al. eq. 11)."""
        beta = self._at("betas", i, x_prev)
        return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise

    def euler_renoise(self, x_prev: torch.Tensor, i, noise: torch.Tensor) -> torch.Tensor:
        """The authors' FreeDoM re-noise (run_fdm, pipe.py:4371-4375) in VP: on the Euler latent,
        x~ <- sqrt(1 - b) x~_{t-1} + sqrt(b) n with b the *training* beta at the loop index k = S - 1 - i,
        then the step is redone from sigma_t, i.e. x~ is read as x~_t:
        x_t = sqrt(1 - b) sqrt(abar_t / abar_{t-1}) x_{t-1} + sqrt(b abar_t) n (docs/methods.md)."""
        return self._at("euler_renoise_scale", i, x_prev) * x_prev + self._at("euler_renoise_std", i, x_prev) * noise

    # -- reverse transitions ------------------------------------------------------------------
    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, i) -> torch.Tensor:
        """mu_t(x_t, x0) of q(x_{t-1} | x_t, x_0) (Ho eq. 7)."""
        return self._at("posterior_mean_coef1", i, x_t) * x0 + self._at("posterior_mean_coef2", i, x_t) * x_t

    def log_variance(self, i, x: torch.Tensor, var_values: torch.Tensor | None = None) -> torch.Tensor:
        """log sigma_t^2 of the reverse step: fixed small, fixed large, or ADM's learned range.

        learned_range (Nichol & Dhariwal eq. 15): log var = f log beta_t + (1 - f) log sigma_small^2,
        f = (v + 1) / 2 with v the model's extra output channels in [-1, 1].
        """
        if self.variance == "fixed_small":
            return self._at("posterior_log_variance_clipped", i, x).expand_as(x)
        if self.variance == "fixed_large":
            return self._at("log_variance_large", i, x).expand_as(x)
        if var_values is None:
            raise ConfigError("variance 'learned_range' needs a prior with learned sigma (learn_sigma: true)")
        frac = (var_values + 1) / 2
        min_log = self._at("posterior_log_variance_clipped", i, x)
        max_log = self._at("betas", i, x).log()
        return frac * max_log + (1 - frac) * min_log

    def step_std(self, i, x: torch.Tensor, var_values: torch.Tensor | None = None) -> torch.Tensor:
        """sigma_t of the noise the DDPM step actually adds: 0 at the final step (i = 0), as in ADM."""
        std = (0.5 * self.log_variance(i, x, var_values)).exp()
        if isinstance(i, int):
            return std * float(i > 0)
        return std * (i.to(x.device) > 0).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))

    def ddpm_step(self, x0: torch.Tensor, x_t: torch.Tensor, i, noise: torch.Tensor,
                  var_values: torch.Tensor | None = None):
        """Ancestral step x_{t-1} = mu_t + sigma_t z. Returns (x_{t-1}, mu_t, sigma_t)."""
        mean = self.posterior_mean(x0, x_t, i)
        std = self.step_std(i, x_t, var_values)
        return mean + std * noise, mean, std

    def ddim_step(self, x0: torch.Tensor, eps: torch.Tensor, i, noise: torch.Tensor | None = None,
                  eta: float = 0.0) -> torch.Tensor:
        """DDIM (Song et al. 2021, eq. 12): x_{t-1} = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1} - s^2) eps + s z,
        s = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1})."""
        abar = self._at("alphas_cumprod", i, x0)
        abar_prev = self._at("alphas_cumprod_prev", i, x0)
        sigma = eta * ((1 - abar_prev) / (1 - abar)).sqrt() * (1 - abar / abar_prev).sqrt()
        out = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0:
            if noise is None:
                raise ValueError("ddim_step with eta > 0 needs noise")
            out = out + sigma * noise * (0.0 if isinstance(i, int) and i == 0 else 1.0)
        return out
