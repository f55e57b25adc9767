"""The paper's SD2 samplers step for step: our samplers in the authors' units (sampler.guidance_units=euler)
against their loops re-implemented here from tongdaxu/ControlNet-Low-Level (pipe.py at 0e8ea62) with diffusers'
EulerAncestralDiscreteScheduler, on the tiny SD2 stand-in (prior=sd2_tiny: random diffusers networks, SD's
scaled-linear schedule).

The references are written from the authors' loops, not from dps_map's samplers: they step diffusers' Euler
latents x~ (init_noise_sigma, scale_model_input, scheduler.step, pred_original_sample), take the gradient of
||A(D(x0_hat)) - y|| (plain norm) w.r.t. x~ and add -s * grad to x~ after the step:
  run_dps        pipe.py:4090-4134
  run_dsg        pipe.py:5474-5525 (EulerAncestralDSG's mean and sigma_up: diffusers' formulas, pipe.py:542-560)
  run_dsg_max    pipe.py:5742-5782 with dsg_step 5555-5583 ("max", our DMAP)
  run_psld       pipe.py:6215-6264 (the operators' transpose, op.py:582-583 and 662-663; a sampled encoding)
  run_fdm        pipe.py:4321-4375 (with its window moved from loop indices 25..50 to 2..4, inside a 10-step chain)
  adapter_dps    the pipeline's __call__, pipe.py:1436-1755 (run_dps on the ControlNet's conditional eps, with the
                 hint the bicubic-upsampled y of main_sd2cn.py; a random ControlNet whose zero convolutions moved)
Every random draw comes from one generator, in the authors' order (the ancestral noise in scheduler.step, then
the encoder's sample or FreeDoM's re-noise), and our sampler draws from a generator with the same seed.
After each step we map x~ to our VP latent, z = sqrt(abar) x~ = x~ / sqrt(1 + sigma^2), and compare.

Grid: the authors call set_timesteps(500) with diffusers' default "linspace" spacing, whose timesteps
linspace(0, 999, 500) are fractional; our respacing rounds them to integers (dps_map/diffusion.py). Both express
the 10-step linspace grid exactly (999/9 = 111: timesteps 999, 888, ..., 0, integers), so the tests run there.
Deviations of the references from the authors' code, none of which changes a result: the sphere radius is
sqrt(d) sigma_up (they hard-code 128 = sqrt(4*64*64), i.e. sqrt(d) at 512x512); the extra scheduler.step inside
dsg_step, whose output is discarded, draws its noise from a throwaway generator (theirs shifts the global stream).
The step sizes are larger than the paper's (20 instead of 4.8, PSLD's gluing weight 0.5 instead of 0.002) so that
every term moves the tiny chain by far more than the tolerance: then a wrong factor, the adjoint instead of the
transpose or the forward re-noise instead of theirs is off by 1e-3 or more (checked by tests/mutants.py).

Largest relative differences, max over the 10 steps of max |ours - ref| / max |ref| (float32, when written):
run_dps 6.0e-7, run_dsg 6.5e-7, run_dsg_max 9.1e-7, run_psld 1.1e-6 (SR x4) / 8.9e-7 (blur), run_fdm 8.1e-7,
adapter_dps 7.1e-7 (in VP units 0.40; the ControlNet moves the chain by 0.19). Our hint clamps naive(y) to
[-1, 1], theirs does not: the test's hint stays inside (max 0.44), where the two agree.
The tests assert 1e-4.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import EulerAncestralDiscreteScheduler  # the `latent` extra (make install installs it)
from omegaconf import OmegaConf

from dps_map.operators import GaussianNoise, SuperResolution, gaussian_blur
from dps_map.priors.latent import DecodedOperator

from support import built_sampler, compose, shipped_prior

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
N = 10  # linspace(0, 999, 10) = 999, 888, ..., 0: integer timesteps, our respacing "10"
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    return shipped_prior("sd2_tiny")


@pytest.fixture(scope="module")
def problem(tiny):
    g = torch.Generator().manual_seed(0)
    x_true = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    return {"sr4": (SuperResolution(4), lambda v: F.interpolate(v, scale_factor=4)),  # their SR transpose: nearest
            "blur": (gaussian_blur(9, 2.0), lambda v: v)}, x_true                   # their blur transpose: identity


# -- the authors' loops --------------------------------------------------------------------------------------
class Authors:
    """The pieces every pipeline of pipe.py shares: the scheduler, the UNet on scale_model_input, the decoder."""

    def __init__(self, prior, A, y, seed):
        self.prior, self.A, self.y = prior, A, y
        self.sched = EulerAncestralDiscreteScheduler(**SD, timestep_spacing="linspace")
        self.sched.set_timesteps(N)
        self.gen = torch.Generator().manual_seed(seed)
        self.shape = (1, *prior.sample_shape)
        self.d = math.prod(prior.sample_shape)
        self.trajectory = []  # z after every step

    def init(self):
        """prepare_latents: randn * init_noise_sigma (= sigma_max for linspace spacing)."""
        return torch.randn(self.shape, generator=self.gen) * self.sched.init_noise_sigma

    def eps(self, x, t):
        inp = self.sched.scale_model_input(x, t)
        ctx = self.prior.text_embedding.expand(x.shape[0], -1, -1)
        return self.prior.unet(inp, t, encoder_hidden_states=ctx).sample

    def decode(self, z0):
        return self.prior.vae.decode(z0 / self.prior.vae.config.scaling_factor).sample

    def step(self, eps, t, x, generator=None):
        """scheduler.step, plus the mean and sigma_up EulerAncestralDSG returns (pipe.py:542-568)."""
        i = self.sched.step_index if self.sched.step_index is not None else 0
        sigma_from, sigma_to = self.sched.sigmas[i], self.sched.sigmas[i + 1]
        gen = generator or self.gen
        state = gen.get_state()
        out = self.sched.step(eps, t, x, generator=gen)
        noise = torch.randn(x.shape, generator=torch.Generator().set_state(state))
        sigma_up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
        return out.prev_sample, out.pred_original_sample, out.prev_sample - noise * sigma_up, sigma_up

    def record(self, x):
        """z = x~ / sqrt(1 + sigma^2) at the level x~ now has (the scheduler's step index)."""
        sigma = self.sched.sigmas[self.sched.step_index]
        self.trajectory.append((x / (sigma**2 + 1) ** 0.5).detach().clone())

    def norm(self, z0):
        return torch.linalg.norm(self.A(self.decode(z0)) - self.y)


def run_dps(a: Authors, scale):
    x = a.init()
    for t in a.sched.timesteps:
        with torch.enable_grad():
            x.requires_grad_(True)
            x_next, z0, _, _ = a.step(a.eps(x, t), t, x)
            (grad,) = torch.autograd.grad(a.norm(z0), x)
        x = (x_next - grad * scale).detach()
        a.record(x)
    return a.trajectory


def run_dsg(a: Authors, scale):
    x = a.init()
    for t in a.sched.timesteps:
        with torch.enable_grad():
            x.requires_grad_(True)
            x_next, z0, mean, sigma_up = a.step(a.eps(x, t), t, x)
            (grad,) = torch.autograd.grad(a.norm(z0), x)
        r = a.d**0.5 * sigma_up
        d_star = -r * grad / (torch.linalg.norm(grad) + 1e-8)
        d_sample = x_next - mean
        mix = d_sample + scale * (d_star - d_sample)
        x = (mean + r * mix / (torch.linalg.norm(mix) + 1e-8)).detach()
        a.record(x)
    return a.trajectory


def run_dsg_max(a: Authors, scale, inner=3):
    throwaway = torch.Generator().manual_seed(12345)

    def dsg_step(x, t):  # gradient at x with the model at t (advances the step index)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            _, z0, _, _ = a.step(a.eps(x, t), t, x, generator=throwaway)
            return torch.autograd.grad(a.norm(z0), x)[0]

    x = a.init()
    timesteps = a.sched.timesteps
    for i, t in enumerate(timesteps):
        with torch.no_grad():
            x_next, _, mean, sigma_up = a.step(a.eps(x, t), t, x)
        for _ in range(inner):
            if i != len(timesteps) - 1:
                grad = dsg_step(x_next, timesteps[i + 1])
                a.sched._step_index -= 1
            else:
                a.sched._step_index -= 1
                grad = dsg_step(x_next, t)
            star = x_next - grad * scale
            diff = star - mean
            x_next = (mean + diff / torch.linalg.norm(diff) * sigma_up * a.d**0.5).detach()
        x = x_next
        a.record(x)
    return a.trajectory


def run_psld(a: Authors, scale, transpose, gluing_weight=0.5):
    x = a.init()
    sf = a.prior.vae.config.scaling_factor
    for t in a.sched.timesteps:
        with torch.enable_grad():
            x.requires_grad_(True)
            x_next, z0, _, _ = a.step(a.eps(x, t), t, x)
            image = a.decode(z0)
            inpainted = transpose(a.y) + (image - transpose(a.A(image)))
            encoded = a.prior.vae.encode(inpainted).latent_dist.sample(generator=a.gen) * sf
            norm = torch.linalg.norm(a.A(image) - a.y) + gluing_weight * torch.linalg.norm(encoded - z0)
            (grad,) = torch.autograd.grad(norm, x)
        x = (x_next - grad * scale).detach()
        a.record(x)
    return a.trajectory


def run_fdm(a: Authors, scale, window=(2, 4)):
    x = a.init()
    for k, t in enumerate(a.sched.timesteps):
        repeats = 2 if window[0] <= k <= window[1] else 1
        for j in range(repeats):
            with torch.enable_grad():
                x.requires_grad_(True)
                x_next, z0, _, _ = a.step(a.eps(x, t), t, x)
                (grad,) = torch.autograd.grad(a.norm(z0), x)
            x = (x_next - grad * scale).detach()
            if j != repeats - 1:
                beta = a.sched.betas[k]
                x = torch.sqrt(1 - beta) * x + torch.sqrt(beta) * torch.randn(x.shape, generator=a.gen)
                a.sched._step_index -= 1
        a.record(x)
    return a.trajectory


# -- ours ----------------------------------------------------------------------------------------------------
def ours(prior, A, y, seed, **cfg):
    sampler = built_sampler({"respacing": str(N), "clip_x0": False, **cfg})
    steps = []
    sampler.sample(prior, DecodedOperator(A, prior), GaussianNoise(0.0), y, (1, *prior.sample_shape),
                   torch.Generator().manual_seed(seed), hooks=[steps.append])
    return [st.x_prev for st in steps]


def largest_difference(mine, theirs):
    assert len(mine) == len(theirs) == N
    return max(float((m - r).abs().max() / r.abs().max()) for m, r in zip(mine, theirs))


CASES = {  # name: (our config, the authors' loop, its scale, task)
    "dps": ({"name": "dps", "method": "dps", "zeta": 20.0}, run_dps, 20.0, "sr4"),
    "dsg": ({"name": "dsg", "method": "dsg", "w": 0.3}, run_dsg, 0.3, "sr4"),
    "dmap": ({"name": "dmap", "method": "dmap", "zeta": 20.0, "num_inner": 3}, run_dsg_max, 20.0, "sr4"),
    "psld_sr4": ({"name": "psld", "method": "psld", "zeta": 20.0, "gamma": 10.0}, run_psld, 20.0, "sr4"),
    "psld_blur": ({"name": "psld", "method": "psld", "zeta": 20.0, "gamma": 10.0}, run_psld, 20.0, "blur"),
    "freedom": ({"name": "freedom", "method": "freedom", "zeta": 20.0, "repeat": 2, "travel_start": 0.5,
                 "travel_end": 0.75}, run_fdm, 20.0, "sr4"),  # i = 7, 6, 5 = loop indices 2..4
}


@pytest.mark.parametrize("case", list(CASES))
def test_euler_units_reproduce_the_authors_loop_step_for_step(tiny, problem, case):
    cfg, loop, scale, task = CASES[case]
    ops, x_true = problem
    A, transpose = ops[task]
    y = A(x_true)
    seed = 7
    args = (transpose,) if loop is run_psld else ()
    theirs = loop(Authors(tiny, A, y, seed), scale, *args)
    mine = ours(tiny, A, y, seed, guidance_units="euler", **cfg)
    difference = largest_difference(mine, theirs)
    assert difference < TOL, (case, difference)



# -- adapter_dps: DPS on the ControlNet-conditioned eps (pipe.py:1436-1755, the pipeline's __call__) -----------
class AuthorsControlNet(Authors):
    """Their __call__: the ControlNet reads the same scaled input as the UNet, the text context and the hint
    ``image`` (main_sd2cn.py: y2 = f(x, keep_shape=True), the bicubic-upsampled measurement, op.py:574-580),
    conditioning_scale 1, guess_mode off; its residuals enter the UNet; then the DPS step of run_dps."""

    def __init__(self, prior, A, y, seed, controlnet, hint):
        super().__init__(prior, A, y, seed)
        self.controlnet, self.hint = controlnet, hint

    def eps(self, x, t):
        inp = self.sched.scale_model_input(x, t)
        ctx = self.prior.text_embedding.expand(x.shape[0], -1, -1)
        down, mid = self.controlnet(inp, t, encoder_hidden_states=ctx, controlnet_cond=self.hint,
                                    conditioning_scale=1.0, guess_mode=False, return_dict=False)
        return self.prior.unet(inp, t, encoder_hidden_states=ctx, down_block_additional_residuals=down,
                               mid_block_additional_residual=mid).sample


def test_adapter_dps_in_euler_units_is_the_authors_controlnet_pipeline_step_for_step(tiny, problem, tmp_path):
    from dps_map.priors.latent import build_controlnet

    controlnet = build_controlnet(tiny)
    g = torch.Generator().manual_seed(5)
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                  controlnet.controlnet_cond_embedding.conv_out]
    with torch.no_grad():  # a trained ControlNet: its zero convolutions have moved (else it adds nothing)
        for conv in zero_convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
    controlnet.save_pretrained(tmp_path / "controlnet", safe_serialization=True)
    ops, x_true = problem
    A, _ = ops["sr4"]
    y = A(x_true)
    hint = F.interpolate(y, scale_factor=4, mode="bicubic")  # theirs, unclamped
    assert float(hint.abs().max()) <= 1  # where our naive(y)'s clamp to [-1, 1] changes nothing
    seed = 7
    theirs = run_dps(AuthorsControlNet(tiny, A, y, seed, controlnet.eval(), hint), 20.0)
    plain = run_dps(Authors(tiny, A, y, seed), 20.0)
    assert largest_difference(plain, theirs) > 1e-2  # the ControlNet moves the chain
    from dps_map.priors.conditional import with_adapter  # prior.adapter=FOLDER, bound to y as the runner does

    conditional = with_adapter(tiny, tmp_path / "controlnet").condition(DecodedOperator(A, tiny), y)
    mine = ours(conditional, A, y, seed, name="adapter_dps", method="adapter_dps", zeta=20.0, guidance_units="euler")
    difference = largest_difference(mine, theirs)
    assert difference < TOL, difference

# -- the VP form and the authors' form differ by the factor docs/methods.md derives ------------------------------
def sd_factors(i):
    """From diffusers' sigmas on the 10-step linspace grid (our step i = its index N - 1 - i):
    sqrt(abar_t abar_{t-1}) = 1 / sqrt((1 + sigma_t^2)(1 + sigma_{t-1}^2)), and abar_{t-1}."""
    sched = EulerAncestralDiscreteScheduler(**SD, timestep_spacing="linspace")
    sched.set_timesteps(N)
    s_t, s_prev = float(sched.sigmas[N - 1 - i]), float(sched.sigmas[N - i])
    return 1 / math.sqrt((1 + s_t**2) * (1 + s_prev**2)), 1 / (1 + s_prev**2)


def transition_pair(prior, op, y, cfg, i, **units_free):
    """One transition from the same x_t with the same draws in VP and in Euler units: (x_vp, x_euler, grads)."""
    x_t = torch.randn(1, *prior.sample_shape, generator=torch.Generator().manual_seed(3))
    out = {}
    for units in ("vp", "euler"):
        sampler = built_sampler({"respacing": str(N), "clip_x0": False, "guidance_units": units,
                                                  **cfg, **units_free})
        steps = []
        x_prev = sampler.transition(prior, op, GaussianNoise(0.0), y, x_t, i, torch.Generator().manual_seed(4),
                                    hooks=[steps.append])
        out[units] = (x_prev, steps[0].grad)
    return out["vp"][0], out["euler"][0], out["vp"][1], out["euler"][1]


@pytest.mark.parametrize("i", [9, 5, 2])
@pytest.mark.parametrize("method", ["dps", "psld", "freedom", "dmap", "dsg"])
def test_vp_and_euler_units_differ_by_the_derived_factor(tiny, problem, method, i):
    ops, x_true = problem
    A = ops["sr4"][0]
    op, y = DecodedOperator(A, tiny), A(x_true)
    zeta = 3.0
    factor, abar_prev = sd_factors(i)
    cfg = {"dps": {"method": "dps", "zeta": zeta},
           "psld": {"method": "psld", "zeta": zeta, "gamma": 1.0, "gluing": "transpose", "encoding": "mean"},
           "freedom": {"method": "freedom", "zeta": zeta, "repeat": 1},
           "dmap": {"method": "dmap", "zeta": zeta, "num_inner": 1, "project": False},  # one step: x* = x - zeta f g
           "dsg": {"method": "dsg", "w": 0.5}}[method]
    x_vp, x_eu, g_vp, g_eu = transition_pair(tiny, op, y, {"name": method, **cfg}, i)
    torch.testing.assert_close(g_vp, g_eu, rtol=0, atol=0)  # the same gradient at the same point
    if method == "dsg":  # the authors' DSG is VP-DSG with the same w
        torch.testing.assert_close(x_vp, x_eu, rtol=0, atol=0)
        return
    step = 1.0 if method == "psld" else zeta  # PSLD's gradient already carries zeta and gamma
    expected = step * ((abar_prev if method == "dmap" else factor) - 1) * g_vp  # x_vp - x_euler
    torch.testing.assert_close(x_vp - x_eu, expected, rtol=1e-4, atol=2e-6 * float(x_vp.abs().max()))
    assert float(expected.abs().max()) > 1e-3 * float(x_vp.abs().max())  # the factor matters at this step


def test_euler_factor_on_a_pixel_prior_with_linear_betas():
    """Any VP schedule: on ADM's linear betas (a 16-d Gaussian-mixture prior, float64), the DPS step in Euler
    units is zeta sqrt(abar_t abar_{t-1}) g, with abar read from the training betas at the kept timesteps."""
    import numpy as np

    from dps_map.operators import MatrixOperator
    from dps_map.priors.gmm import find_multimodal_problem

    prior = shipped_prior("gmm")
    A, _, y, _, _ = find_multimodal_problem(prior.mixture, 2, 0.05, torch.Generator().manual_seed(0))
    op, noise = MatrixOperator(A), GaussianNoise(0.05)
    betas = np.asarray(prior.betas, dtype=np.float64)
    abar = np.cumprod(1 - betas)
    kept = [round(j * 999 / 9) for j in range(10)]
    x_t = torch.randn(2, A.shape[1], generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    for i in (9, 4, 1):
        outs = {}
        for units in ("vp", "euler"):
            sampler = built_sampler({"name": "dps", "method": "dps", "respacing": "10", "zeta": 0.5,
                                                      "guidance_units": units})
            steps = []
            outs[units] = (sampler.transition(prior, op, noise, y[None].expand(2, -1), x_t, i,
                                              torch.Generator().manual_seed(2), hooks=[steps.append]), steps[0].grad)
        factor = math.sqrt(abar[kept[i]] * abar[kept[i - 1]])
        torch.testing.assert_close(outs["vp"][0] - outs["euler"][0], 0.5 * (factor - 1) * outs["vp"][1],
                                   rtol=1e-6, atol=1e-9)


def test_euler_units_start_from_diffusers_initial_noise(tiny):
    """x_T = sqrt(abar_T) init_noise_sigma n = sqrt(1 - abar_T) n in VP (diffusers' linspace spacing: sigma_max)."""
    sched = EulerAncestralDiscreteScheduler(**SD, timestep_spacing="linspace")
    sched.set_timesteps(N)
    std = float(sched.init_noise_sigma) / math.sqrt(1 + float(sched.sigmas[0]) ** 2)
    firsts = {}
    for units in ("vp", "euler"):
        sampler = built_sampler({"name": "ddpm", "method": "ddpm", "respacing": str(N),
                                                  "guidance_units": units})
        steps = []
        sampler.sample(tiny, DecodedOperator(SuperResolution(4), tiny), GaussianNoise(0.0), None,
                       (1, *tiny.sample_shape), torch.Generator().manual_seed(0), hooks=[steps.append])
        firsts[units] = steps[0].x_t
    torch.testing.assert_close(firsts["euler"], std * firsts["vp"], rtol=1e-6, atol=0)
    assert abs(std - 0.99767) < 1e-4


def test_dmap_adam_refuses_euler_units():
    from dps_map.errors import ConfigError

    with pytest.raises(ConfigError, match="guidance_units=vp"):
        built_sampler({"name": "dmap_adam", "method": "dmap", "optimizer": "adam",
                                        "guidance_units": "euler"})
    with pytest.raises(ConfigError, match="guidance_units"):
        built_sampler({"name": "dps", "method": "dps", "guidance_units": "eular"})


# -- PSLD's gluing: the operators' transpose ------------------------------------------------------------------
def test_operator_transposes_are_the_psld_codes():
    """SR: nearest upsampling (LituRout/PSLD measurements.py:83-84, F.interpolate's default mode); blur: the
    identity (:107-108); inpainting: the mask (its identity on the masked y gives the same)."""
    from dps_map.operators import Inpainting, box_mask

    y = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    up = y[..., :, None, :, None].expand(2, 3, 4, 8, 4, 8).reshape(2, 3, 32, 32)
    assert torch.equal(SuperResolution(8).transpose(y), up)
    assert torch.equal(SuperResolution(8, "avgpool").transpose(y), up)
    torch.testing.assert_close(SuperResolution(8, "avgpool")(up), y)  # for average pooling: the pseudo-inverse
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(gaussian_blur(9, 2.0).transpose(x), x)
    mask = box_mask(32, 0.5, "center", torch.Generator().manual_seed(0))
    assert torch.equal(Inpainting(mask).transpose(x), x * mask)


def residual_fraction(gluing, A, x_true, estimate):
    """||y - A(x_glued)|| / ||y - A(x)|| for PSLD's x_glued = T y + (I - T A) x (PSLDSampler.glue)."""
    sampler = built_sampler({"name": "psld", "method": "psld", "gluing": gluing})
    y = A(x_true)
    glued = sampler.glue(A, y, estimate)
    return float((y - A(glued)).norm() / (y - A(estimate)).norm())


@pytest.fixture(scope="module")
def photos():
    """Two held-out photograph crops at 256x256: the truth, and another photograph as an estimate far from it
    (an early, smooth D(z0_hat)); and the truth plus white noise of std 0.3 (a late, noisy one)."""
    from dps_map.data import demo_crops

    crops = demo_crops(256, per_photo=1)
    truth, other = crops[0].image[None], crops[1].image[None]
    noisy = truth + 0.3 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    return truth, {"other photograph": other, "truth + white noise": noisy}


def test_psld_gluing_with_the_transpose_fits_the_measurement(photos):
    """The glued image's residual falls to at most 0.3 of the decoded one's on SR x8 and the paper's Gaussian blur
    (61, std 3) with the PSLD code's transpose, for an estimate with a photograph's error spectrum, and to 0 on
    inpainting; with the exact adjoint it stays near 1 on SR (A A^T ~ I / 64). With a white error the identity
    transpose of the blur leaves more (measured 0.40; the adjoint 0.56), still less than the adjoint."""
    from dps_map.operators import box_inpainting

    truth, estimates = photos
    ops = {"sr8": SuperResolution(8), "blur": gaussian_blur(61, 3.0),
           "inpaint": box_inpainting(256, torch.Generator().manual_seed(0))}
    far = estimates["other photograph"]
    assert residual_fraction("transpose", ops["sr8"], truth, far) <= 0.3
    assert residual_fraction("transpose", ops["blur"], truth, far) <= 0.3
    assert residual_fraction("adjoint", ops["sr8"], truth, far) > 0.9
    for estimate in estimates.values():
        assert residual_fraction("transpose", ops["inpaint"], truth, estimate) < 1e-6
        for name in ("sr8", "blur"):
            assert residual_fraction("transpose", ops[name], truth, estimate) < \
                residual_fraction("adjoint", ops[name], truth, estimate)


# -- the authors' FreeDoM re-noise and the paper_sd2 presets -------------------------------------------------------
def test_euler_renoise_is_run_fdm_on_euler_latents():
    """Diffusion.euler_renoise against pipe.py:4371-4375 written on Euler latents: x~_{t-1} = z / sqrt(abar_{t-1}),
    x~ <- sqrt(1 - betas[k]) x~ + sqrt(betas[k]) n with diffusers' training betas at the loop index k, then read as
    x~_t (the step index goes back), z_t = x~ / sqrt(1 + sigma_t^2); on the 500-step linspace grid's integer
    neighbours (our respacing '500' rounds it) and on the 10-step grid."""
    from dps_map.diffusion import Diffusion, make_betas

    for steps in (10, 500):
        diffusion = Diffusion(make_betas("scaled_linear"), str(steps))
        abar = diffusion.alphas_cumprod
        sched = EulerAncestralDiscreteScheduler(**SD, timestep_spacing="linspace")
        g = torch.Generator().manual_seed(0)
        for k in (1, 2, 25, 50, 300):
            if k >= steps - 1:
                continue
            i = steps - 1 - k
            z, n = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(2, 4, 8, 8, generator=g,
                                                                                           dtype=torch.float64)
            beta = float(sched.betas[k])
            x = z / math.sqrt(abar[i - 1])
            x = math.sqrt(1 - beta) * x + math.sqrt(beta) * n
            expected = x * math.sqrt(abar[i])
            torch.testing.assert_close(diffusion.euler_renoise(z, i, n), expected, rtol=1e-6, atol=1e-9)


def compose_sampler(*overrides):
    cfg = compose("progress=false", *overrides)
    node = OmegaConf.to_container(cfg.sampler, resolve=True)
    node.pop("adapter", None)
    return cfg, node


@pytest.mark.parametrize("task, zeta", [("sr8", 4.8), ("gaussian_deblur", 0.6), ("motion_deblur", 0.6)])
def test_paper_sd2_is_the_authors_settings(task, zeta):
    """+experiment=paper_sd2: Euler units for every sampler; run_psld's weights (s, 0.002 s: pipe.py:6258); run_fdm's
    two passes exactly at loop indices 25..50 of 500 (pipe.py:4324-4327) with its re-noise; DMAP's ("max") step."""
    built = {}
    for name in ("dps", "dmap", "dsg", "psld", "freedom", "ddpm"):
        cfg, node = compose_sampler("+experiment=paper_sd2", f"task={task}", f"sampler={name}")
        assert cfg.sampler.respacing == "500" and node["guidance_units"] == "euler"
        built[name] = built_sampler(node)
    assert built["dps"].zeta == built["psld"].zeta == built["freedom"].zeta == built["dmap"].zeta == zeta
    assert built["psld"].gamma == pytest.approx(0.002 * zeta)
    assert (built["psld"].gluing, built["psld"].encoding) == ("transpose", "sample")
    freedom = built["freedom"]
    assert freedom.renoise == "xu" and freedom.rho == "constant"
    assert [freedom.repeats(i, 500) for i in range(500)] == [2 if 25 <= 499 - i <= 50 else 1 for i in range(500)]


def test_named_presets_of_rout_and_yu():
    from dps_map.diffusion import Diffusion, make_betas

    _, node = compose_sampler("prior=sd2_tiny", "task=sr4", "sampler=psld_rout")
    psld = built_sampler(node)
    assert (psld.respacing, psld.guidance_units, psld.zeta, psld.gamma) == ("1000", "vp", 1.0, 0.1)
    assert (psld.gluing, psld.encoding, psld.update, psld.eta, psld.noise_on_prediction) == \
        ("transpose", "sample", "ddim", 0.0, True)
    _, node = compose_sampler("prior=sd2_tiny", "task=sr4", "sampler=freedom_yu")
    freedom = built_sampler(node)
    assert (freedom.guidance_units, freedom.rho, freedom.zeta, freedom.renoise) == ("vp", "adaptive", 0.02, "forward")
    timesteps = Diffusion(make_betas("scaled_linear"), freedom.respacing).timesteps.tolist()
    assert timesteps == list(range(0, 1000, 10))  # Face-GD's seq = range(0, 1000, 1000 // 100)
    assert [t for i, t in enumerate(timesteps) if freedom.repeats(i, 100) == 10] == list(range(500, 801, 10))


# The step size of every (task, sampler) of the SD2 sweep, and the run of the authors' log it is taken from
# (Record.md at 0e8ea62; on the ControlNet, the runs of the 100-image estimators sd2cn_srx8_100 / sd2cn_gdb_100).
AUTHORS_SD2_STEPS = {
    ("sr8", "dps"): ("zeta", 4.8),             # Record.md:52, main_sd2.py's default --scale
    ("sr8", "dmap"): ("zeta", 4.8),            # Record.md:489, --mode max --scale 4.8
    ("sr8", "dsg"): ("w", 0.08),               # Record.md:344, --mode dsg --scale 0.08
    ("sr8", "adapter_dps"): ("zeta", 4.8),     # Record.md:159, dpscn_100_500s_4.8
    ("sr8", "adapter_dmap"): ("zeta", 3.6),    # Record.md:491, maxcn_100_500s_3.6
    ("sr8", "adapter_dsg"): ("w", 0.08),       # Record.md:346, dsgcn_100_500s_0.08
    ("gaussian_deblur", "dps"): ("zeta", 0.6),           # Record.md:400
    ("gaussian_deblur", "dmap"): ("zeta", 0.6),          # Record.md:495
    ("gaussian_deblur", "dsg"): ("w", 0.08),             # Record.md:410
    ("gaussian_deblur", "adapter_dps"): ("zeta", 0.6),   # Record.md:407, dpscn_100_500s
    ("gaussian_deblur", "adapter_dmap"): ("zeta", 0.6),  # Record.md:497, maxcn_100_500s
    ("gaussian_deblur", "adapter_dsg"): ("w", 0.02),     # Record.md:412, dsgcn_100_500s
}
# no motion-blur run in Record.md (main_sd2.py:57-64 builds no motion operator): the Gaussian deblurring values
AUTHORS_SD2_STEPS |= {("motion_deblur", s): v for (t, s), v in list(AUTHORS_SD2_STEPS.items()) if t == "gaussian_deblur"}


@pytest.mark.parametrize("task, sampler", sorted(AUTHORS_SD2_STEPS))
def test_paper_sd2_step_sizes_are_the_authors_runs(task, sampler):
    """Each sampler of +experiment=paper_sd2 gets the step size of the authors' run of that method and task, from
    the preset's own tuned: entry (not a sampler YAML's fallback), in their Euler units."""
    key, value = AUTHORS_SD2_STEPS[task, sampler]
    cfg, node = compose_sampler("+experiment=paper_sd2", f"task={task}", f"sampler={sampler}")
    assert node["guidance_units"] == "euler"
    assert node[key] == pytest.approx(value)
    assert cfg.tuned.priors.sd2_base[task][sampler][key] == pytest.approx(value)


def _make_dry_run(*targets):
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(root), *targets], capture_output=True,
                          text=True, env={k: v for k, v in __import__("os").environ.items()
                                          if k not in ("MAKEFLAGS", "MFLAGS")})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_paper_sd2_sweep_runs_the_papers_method_with_the_authors_step_sizes():
    """make reproduce-paper-sd2 and preflight-paper-sd2 sweep DMAP and DMAP + estimator (the paper's method) beside
    the baselines, on every task; and every (task, sampler) they run has its step size in the preset's table."""
    import re

    out = _make_dry_run("reproduce-paper-sd2", "preflight-paper-sd2")
    sweeps = [line for line in out.splitlines() if "+experiment=paper_sd2" in line]
    assert len(sweeps) == 4  # two sweeps run, the same two preflighted
    covered = set()
    for line in sweeps:
        opts = dict(re.findall(r"(?:^|\s)(task|sampler)=(\S+)", line))
        samplers, tasks = opts["sampler"].split(","), opts["task"].split(",")
        assert {"dmap", "adapter_dmap", "dps", "adapter_dps", "dsg", "psld", "freedom"} <= set(samplers), samplers
        covered |= {(t, s) for t in tasks for s in samplers}
    assert {t for t, _ in covered} == {"sr8", "gaussian_deblur", "motion_deblur"}
    cfg = compose("+experiment=paper_sd2")
    missing = [(t, s) for t, s in covered if s not in cfg.tuned.priors.sd2_base[t]]
    assert not missing, f"no step size in paper_sd2.yaml for {missing}: the sampler's fallback would run"


def test_each_paper_table_names_its_setting():
    """The SD2 table is the authors' published setting, the ADM-512 one this project's: each title says which."""
    out = _make_dry_run("reproduce-paper-sd2", "reproduce-paper")
    titles = [line for line in out.splitlines() if "--title" in line]
    assert len(titles) == 2, titles
    sd2, adm = sorted(titles, key=lambda line: "SD2" not in line)
    assert "SD2-base latent setting (the authors' published tables)" in sd2
    assert "ADM-512 pixel setting (this project's; DPS2022's protocol)" in adm
