"""`make mutants`: deliberate bugs, each applied to a temporary copy of the repository and run against the
tests written to catch it. Prints killed/survived per mutant and the time.

    python tests/mutants.py              # all 182 mutants (about 5 minutes on 2 CPU cores)
    python tests/mutants.py dsg_sign ... # some of them;  --list: names only
    python tests/mutants.py --jobs 1     # one at a time (default: 2 at once, each in its own copy)
    python tests/mutants.py --no-fork    # a fresh interpreter per pytest run (slower; the default forks)

A mutant replaces one small exact snippet of one file. If the snippet is not found exactly once (the code
moved on), the script stops with exit code 2 and names the mutant to update, rather than report a mutant
that never ran. Before the mutants, the selected tests run once on the unmodified copies and must pass.
Exit code 0 if every mutant is killed, 1 if any survives or fails to run its tests.

Speed: each mutant runs only the one or two tests written for it, with -x. Most of a fresh pytest's time would go
to importing torch, diffusers, deepinv and the like, so this process imports those third-party modules once
(never dps_map) and forks one child per pytest run; the child puts its copy first on sys.path, checks that
`dps_map` comes from it, and runs pytest.main there. `--jobs` copies of the repository let that many mutants run
at once.

Why not mutmut or cosmic-ray: they generate operator-level mutants at random (+ for -, < for <=, a
constant changed) and have no way to state a bug that lives in the science, such as "the denoiser at t
instead of t-1", "bilinear instead of antialiased bicubic" or "the prior's covariance instead of the
posterior's"; and a random mutant is killed by any test that happens to notice, which is not what this
check is for: each mutant here names the tests written for it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "outputs", "multirun", "__pycache__", ".pytest_cache", "*.egg-info",
                                "wandb", ".ci")
G = "tests/test_guidance.py::"
OPS = "tests/test_operator_refs.py::"
F = "tests/test_sd2_faithful.py::"
STEP = F + "test_euler_units_reproduce_the_authors_loop_step_for_step"
OPER = "tests/test_operators.py::"
L = "tests/test_latent.py::"
AD = "tests/test_adapters.py::"
GM = "tests/test_gmm.py::"
M = "tests/test_metrics.py::"
D = "tests/test_device.py::"
TR = "tests/test_trainer.py::"
CG = "tests/test_config_guards.py::"
DS = "tests/test_data_split.py::"
DG = "tests/test_digest.py::test_help_text_paths_and_tuned_table_do_not_change_the_digest"
R = "tests/test_runner_measurement.py::test_saved_measurement_is_restrict_of_A_x0_plus_noise_from_the_ids_stream"
P = "tests/test_probes.py::"


@dataclass
class Mutant:
    name: str
    path: str  # file, relative to the repository root
    old: str  # exact snippet, must occur once
    new: str
    tests: tuple[str, ...]  # pytest node ids (or files) written to catch it
    why: str


MUTANTS = [
    # -- the list ------------------------------------------------------------------------------
    Mutant("dps_sign", "dps_map/samplers/dps.py", "x_prev = x_sampled - self.zeta * self.step_factor(diffusion, i, x) * g.grad",
           "x_prev = x_sampled + self.zeta * self.step_factor(diffusion, i, x) * g.grad",
           (G + "test_dps_step_is_the_ddpm_draw_minus_zeta_times_the_gradient", G + "test_dps_step_on_the_gmm_in_float64"),
           "DPS guidance sign flipped (ascends the misfit)"),
    Mutant("dsg_sign", "dps_map/samplers/dsg.py", "d_star = -radius * grad", "d_star = radius * grad",
           (G + "test_dsg_step_matches_the_spherical_gaussian_formula",),
           "DSG's steepest-descent point points away from y"),
    Mutant("dmap_sign", "dps_map/samplers/dmap.py", "x_star = x - self.zeta * factor * grad",
           "x_star = x + self.zeta * factor * grad",
           (G + "test_dmap_inner_steps_use_the_denoiser_at_t_minus_1_on_the_current_iterate",),
           "DMAP gradient step sign flipped"),
    Mutant("dsg_w_ignored", "dps_map/samplers/dsg.py", "mean + d_sample + self.w * (d_star - d_sample)",
           "mean + d_sample", (G + "test_dsg_step_matches_the_spherical_gaussian_formula",),
           "DSG ignores its weight w (the plain DDPM direction on the sphere)"),
    Mutant("dmap_denoiser_at_t", "dps_map/samplers/dmap.py", "x_prev, max(i - 1, 0), mean, radius,",
           "x_prev, i, mean, radius,",
           (G + "test_dmap_inner_steps_use_the_denoiser_at_t_minus_1_on_the_current_iterate",
            G + "test_network_sees_the_respaced_timesteps_in_order"),
           "DMAP's inner steps evaluate the denoiser at t instead of t-1"),
    Mutant("dmap_radius_x1.5", "dps_map/samplers/dmap.py", "radius = flat_norm(std.expand_as(x))",
           "radius = 1.5 * flat_norm(std.expand_as(x))",
           (G + "test_dmap_inner_steps_use_the_denoiser_at_t_minus_1_on_the_current_iterate",),
           "DMAP projection radius off by a factor 1.5"),
    Mutant("dsg_radius_x1.5", "dps_map/samplers/dsg.py", "radius = flat_norm(std.expand_as(x))",
           "radius = 1.5 * flat_norm(std.expand_as(x))",
           (G + "test_dsg_step_matches_the_spherical_gaussian_formula",),
           "DSG sphere radius off by a factor 1.5"),
    Mutant("sr_bilinear", "dps_map/operators/super_resolution.py", 'mode="bicubic", antialias=True',
           'mode="bilinear", antialias=True',
           (OPS + "test_bicubic_downsampling_matches_pil", OPS + "test_bicubic_downsampling_matches_deepinv_in_the_interior"),
           "super-resolution by bilinear instead of antialiased bicubic"),
    Mutant("blur_zero_padding", "dps_map/operators/blur.py",
           "padded = x[..., reflect_index(h, pad, x.device), :][..., reflect_index(w, pad, x.device)]",
           "padded = F.pad(x, (pad, pad, pad, pad))",
           (OPS + "test_blur_matches_scipy_correlate_with_mirror_boundary", OPS + "test_blur_matches_deepinv_with_the_flipped_kernel"),
           "Gaussian/motion blur with zero instead of reflect padding"),
    Mutant("posterior_prior_covariance", "dps_map/priors/gmm.py", "return GaussianMixture(post_w, post_mean, post_cov)",
           "return GaussianMixture(post_w, post_mean, self.covs)",
           ("tests/test_posterior_exact.py::test_posterior_equals_joint_gaussian_conditioning",),
           "GMM posterior covariance replaced by the prior covariance"),
    Mutant("respacing_fencepost", "dps_map/diffusion.py", "frac_stride = 1 if count <= 1 else (size - 1) / (count - 1)",
           "frac_stride = 1 if count <= 1 else size / count",
           (G + "test_network_sees_the_respaced_timesteps_in_order", "tests/test_diffusion.py::test_respacing_matches_adm"),
           "respacing off by one step: stride size/count, so the chain starts at t=900 instead of 999 (10 steps)"),
    Mutant("network_t_minus_one", "dps_map/samplers/base.py", "return steps[i].expand(batch)",
           "return (steps[i] - 1).clamp_min(0).expand(batch)",
           (G + "test_network_sees_the_respaced_timesteps_in_order",
            G + "test_dmap_inner_steps_use_the_denoiser_at_t_minus_1_on_the_current_iterate"),
           "the network sees the training index one below the step's (respaced index off by one)"),
    Mutant("clip_x0_ignored", "dps_map/samplers/base.py",
           'return x0.clamp(-1, 1) if (self.clip_x0 and prior.kind == "image") else x0', "return x0",
           (G + "test_clip_x0_clamps_the_estimate_in_the_transition_mean_only",),
           "clip_x0 ignored (the transition mean uses the unclipped x0_hat)"),
    # -- our own: details the papers' formulas make matter ------------------------------------------
    Mutant("guidance_squared_misfit", "dps_map/samplers/base.py", "torch.autograd.grad(misfit.sum(), x_in)",
           "torch.autograd.grad(misfit.pow(2).sum(), x_in)",
           (G + "test_measurement_gradient_equals_finite_differences_on_the_gmm",
            G + "test_measurement_gradient_equals_finite_differences_on_a_unet"),
           "the gradient of ||y - A x0||^2 instead of the DPS loss ||y - A x0|| (Chung et al. Alg. 1)"),
    Mutant("guidance_skips_network", "dps_map/samplers/base.py", "x0 = diffusion.x0_from_eps(x_in, i, eps)",
           "x0 = diffusion.x0_from_eps(x_in, i, eps.detach())",
           (G + "test_measurement_gradient_equals_finite_differences_on_the_gmm",
            G + "test_measurement_gradient_equals_finite_differences_on_a_unet"),
           "no VJP through the network: the gradient treats eps as a constant"),
    Mutant("chain_cache_by_array_id", "dps_map/samplers/base.py",
           "key = np.asarray(prior.betas, dtype=np.float64).tobytes()", "key = id(prior.betas)",
           ("tests/test_samplers.py::test_the_chain_is_cached_per_schedule_not_per_array_id",),
           "the chain cached by id(prior.betas): a freed array's id goes to the next prior's betas, which then get "
           "the first prior's schedule"),
    Mutant("step_calls_cumulative", "dps_map/samplers/base.py", 'forward=self.calls["forward"] - forward,',
           'forward=self.calls["forward"],', ("tests/test_contract.py::test_sampler_contract[dmap-image]",),
           "a hook's Step reports the call's forward passes so far instead of its step's"),
    Mutant("timed_without_sync", "dps_map/runner/timing.py", "    out = call()\n    sync(device)\n", "    out = call()\n",
           ("tests/test_perf_knobs.py::test_the_runner_times_a_sampler_call_between_two_device_syncs",),
           "the clock stops before the device's queued work is done: a CUDA sampler call timed at its launch"),
    Mutant("radius_sqrt_d_mean_sigma", "dps_map/samplers/dmap.py", "radius = flat_norm(std.expand_as(x))",
           "radius = std.expand_as(x).mean(dim=tuple(range(1, x.dim())), keepdim=True) * x[0].numel() ** 0.5",
           (G + "test_dmap_inner_steps_use_the_denoiser_at_t_minus_1_on_the_current_iterate",),
           "radius sqrt(d) mean(sigma_t) instead of ||sigma_t||_2 (differs under a learned, uneven variance)"),
    Mutant("dmap_adam_no_projection", "dps_map/samplers/dmap.py", "x.copy_(new)", "x.copy_(x_star)",
           (G + "test_dmap_adam_equals_adam_written_by_hand",),
           "the Adam variant skips the projection"),
    Mutant("dmap_adam_sign", "dps_map/samplers/dmap.py", "x.grad = grad", "x.grad = -grad",
           (G + "test_dmap_adam_equals_adam_written_by_hand",),
           "the Adam variant ascends the misfit"),
    Mutant("sr_no_antialias", "dps_map/operators/super_resolution.py", 'mode="bicubic", antialias=True',
           'mode="bicubic", antialias=False',
           (OPS + "test_bicubic_downsampling_matches_pil",),
           "bicubic downsampling without the antialiasing (the kernel is not stretched by the factor)"),
    Mutant("blur_convolution", "dps_map/operators/blur.py", "weight = self.kernel.to(x.dtype)",
           "weight = self.kernel.flip(0, 1).to(x.dtype)",
           (OPS + "test_blur_matches_scipy_correlate_with_mirror_boundary",),
           "blur by convolution instead of correlation (the motion kernel's orientation flipped)"),
    Mutant("posterior_weights_without_noise", "dps_map/priors/gmm.py",
           "+ sigma_y**2 * torch.eye(A.shape[0], dtype=DTYPE)", "+ 0 * torch.eye(A.shape[0], dtype=DTYPE)",
           ("tests/test_posterior_exact.py::test_posterior_equals_joint_gaussian_conditioning",),
           "mode weights from N(y; A m_k, A C_k A^T), forgetting sigma_y^2 I"),
    Mutant("learned_range_fraction", "dps_map/diffusion.py", "frac = (var_values + 1) / 2", "frac = var_values",
           (G + "test_dmap_inner_steps_use_the_denoiser_at_t_minus_1_on_the_current_iterate",
            "tests/test_diffusion.py::test_reverse_step_matches_adm_p_mean_variance"),
           "learned variance: v used as the interpolation fraction instead of (v + 1) / 2 (ADM eq. 15)"),
    # -- the authors' units, PSLD's gluing, FreeDoM's window and re-noise ------------------------
    Mutant("euler_factor_dropped", "dps_map/samplers/dps.py",
           "x_prev = x_sampled - self.zeta * self.step_factor(diffusion, i, x) * g.grad",
           "x_prev = x_sampled - self.zeta * g.grad",
           (STEP + "[dps]", F + "test_vp_and_euler_units_differ_by_the_derived_factor",
            G + "test_dps_step_in_euler_units_scales_the_gradient_by_sqrt_abar_t_abar_prev"),
           "DPS ignores guidance_units=euler (the constant VP step: 212x the authors' at t=999 on SD)"),
    Mutant("euler_factor_sqrt_abar_t", "dps_map/diffusion.py", "self.euler_guidance_factor = np.sqrt(abar * abar_prev)",
           "self.euler_guidance_factor = np.sqrt(abar)",
           (STEP + "[dps]", F + "test_vp_and_euler_units_differ_by_the_derived_factor"),
           "Euler units: grad_{x~} = sqrt(abar_t) grad_x, but the step not mapped back by sqrt(abar_{t-1})"),
    Mutant("dmap_inner_factor_as_dps", "dps_map/diffusion.py", 'return self._at("alphas_cumprod_prev", i, x)',
           'return self._at("euler_guidance_factor", i, x)',
           (STEP + "[dmap]", F + "test_vp_and_euler_units_differ_by_the_derived_factor"),
           "DMAP's inner step in Euler units with DPS's sqrt(abar_t abar_{t-1}) (its gradient is at x_{t-1}: abar_{t-1})"),
    Mutant("dmap_euler_factor_dropped", "dps_map/samplers/dmap.py", "x_star = x - self.zeta * factor * grad",
           "x_star = x - self.zeta * grad", (STEP + "[dmap]",),
           "DMAP ignores guidance_units=euler"),
    Mutant("euler_initial_noise_vp", "dps_map/samplers/base.py", "x = x * diffusion.initial_noise_std(self.guidance_units)",
           "x = x", (F + "test_euler_units_start_from_diffusers_initial_noise", STEP + "[dps]"),
           "Euler units start from N(0, I) instead of diffusers' init_noise_sigma (std sqrt(1 - abar_T))"),
    Mutant("psld_gluing_adjoint", "dps_map/samplers/psld.py", 'T = A.transpose if self.gluing == "transpose" else A.adjoint',
           "T = A.adjoint",
           (STEP + "[psld_sr4]", STEP + "[psld_blur]", F + "test_psld_gluing_with_the_transpose_fits_the_measurement"),
           "PSLD glues with the exact adjoint whatever `gluing` says (SR: 0.98 of the residual left)"),
    Mutant("sr_transpose_adjoint", "dps_map/operators/super_resolution.py",
           'return F.interpolate(y, scale_factor=self.factor, mode="nearest")', "return self.adjoint(y)",
           (F + "test_operator_transposes_are_the_psld_codes", F + "test_psld_gluing_with_the_transpose_fits_the_measurement",
            STEP + "[psld_sr4]"),
           "SR's PSLD transpose is A^T instead of the PSLD code's nearest upsampling"),
    Mutant("blur_transpose_adjoint", "dps_map/operators/blur.py", "        return y\n", "        return self.adjoint(y)\n",
           (F + "test_operator_transposes_are_the_psld_codes", STEP + "[psld_blur]"),
           "the blur's PSLD transpose is K^T instead of the PSLD code's identity"),
    Mutant("psld_encoding_mean", "dps_map/samplers/psld.py", 'if self.encoding == "mean" or prior is None:', "if True:",
           (STEP + "[psld_sr4]",), "PSLD encodes with the encoder's mean where both PSLD codes draw latent_dist.sample()"),
    Mutant("freedom_window_closed", "dps_map/samplers/freedom.py", "self.travel_start <= i / num_steps < self.travel_end",
           "self.travel_start <= i / num_steps <= self.travel_end",
           (F + "test_paper_sd2_is_the_authors_settings",),
           "FreeDoM's window closed at its end: run_fdm's loop indices 24..50 instead of 25..50"),
    Mutant("freedom_renoise_forward", "dps_map/samplers/freedom.py",
           'diffusion.forward_step(x_prev, i, n) if self.renoise == "forward" else diffusion.euler_renoise(x_prev, i, n)',
           "diffusion.forward_step(x_prev, i, n)", (STEP + "[freedom]",),
           "the authors' FreeDoM re-noise replaced by a proper forward step (not what run_fdm does)"),
    Mutant("euler_renoise_beta_at_i", "dps_map/diffusion.py",
           "loop_beta = np.asarray(betas, dtype=np.float64)[:self.num_steps][::-1]",
           "loop_beta = np.asarray(betas, dtype=np.float64)[:self.num_steps]",
           (F + "test_euler_renoise_is_run_fdm_on_euler_latents",),
           "run_fdm's re-noise with the training beta at our step index i, not at its loop index S - 1 - i"),
    Mutant("freedom_adaptive_no_schedule", "dps_map/diffusion.py",
           'return self._at("posterior_mean_coef1", i, x) * (1 - abar).sqrt() / abar.sqrt()',
           'return self._at("posterior_mean_coef1", i, x)',
           (G + "test_freedom_adaptive_step_is_yus_face_gd_rule",),
           "FreeDoM's adaptive rho without Yu's sqrt(1 - abar_t) / sqrt(abar_t)"),

    # -- every function that carries a formula -----------------------------------------------------
    # operators: forward, adjoint, naive, restrict
    Mutant("sr_naive_bilinear", "dps_map/operators/super_resolution.py",
           'return F.interpolate(y, scale_factor=self.factor, mode="bicubic", align_corners=False).clamp(-1, 1)',
           'return F.interpolate(y, scale_factor=self.factor, mode="bilinear", align_corners=False).clamp(-1, 1)',
           (OPS + "test_sr_naive_is_cubic_convolution_upsampling[4]",),
           "the SR baseline (and the adapter's hint) upsamples bilinearly instead of bicubically"),
    Mutant("sr_naive_align_corners", "dps_map/operators/super_resolution.py",
           'return F.interpolate(y, scale_factor=self.factor, mode="bicubic", align_corners=False).clamp(-1, 1)',
           'return F.interpolate(y, scale_factor=self.factor, mode="bicubic", align_corners=True).clamp(-1, 1)',
           (OPS + "test_sr_naive_is_cubic_convolution_upsampling[4]",),
           "the SR baseline samples with corners aligned (a sub-pixel shift against the downsampling's centres)"),
    Mutant("avgpool_adjoint_scale", "dps_map/operators/super_resolution.py", "return up / self.factor**2",
           "return up / self.factor", (OPER + "test_adjoint_identity[sr4_avgpool]",),
           "average pooling's adjoint divides the replicated blocks by f instead of f^2"),
    Mutant("inpaint_mask_inverted", "dps_map/operators/inpainting.py",
           "    def forward(self, x):\n        return x * self.mask", "    def forward(self, x):\n        return x * (1 - self.mask)",
           (OPS + "test_inpainting_is_the_numpy_mask_product[box]",),
           "inpainting keeps the hidden pixels (the mask read as 1 = hidden)"),
    Mutant("inpaint_adjoint_unmasked", "dps_map/operators/inpainting.py",
           "    def adjoint(self, y):\n        return y * self.mask", "    def adjoint(self, y):\n        return y",
           (OPER + "test_adjoint_identity[inpaint_box]",), "inpainting's adjoint forgets the mask (A^T = I)"),
    Mutant("inpaint_restrict_identity", "dps_map/operators/inpainting.py",
           "    def restrict(self, y):\n        return y * self.mask", "    def restrict(self, y):\n        return y",
           (OPER + "test_inpainting_restricts_noise", OPS + "test_inpainting_naive_is_the_masked_noisy_image[box]"),
           "restrict keeps the noise on the hidden pixels (y carries what was never observed)"),
    Mutant("blur_naive_backprojects", "dps_map/operators/blur.py", "    def transpose(self, y):\n",
           "    def naive(self, y):\n        return self.adjoint(y)\n\n    def transpose(self, y):\n",
           (OPS + "test_blur_naive_is_the_blurred_noisy_image[motion]",),
           "the deblurring baseline back-projects (K^T y, blurred twice) instead of being the measurement itself"),
    Mutant("matrix_naive_adjoint", "dps_map/operators/base.py", "return y @ torch.linalg.pinv(self.matrix).T.to(y.dtype)",
           "return y @ self.matrix.to(y.dtype)", (OPER + "test_matrix_operator_and_pseudo_inverse",),
           "the Gaussian-mixture baseline A^T y instead of the least-squares A^+ y"),
    # noise models: sample and misfit
    Mutant("gaussian_noise_variance", "dps_map/operators/noise.py", "return Ax + self.sigma * n",
           "return Ax + self.sigma**2 * n", (OPER + "test_gaussian_noise_and_misfit",),
           "sigma_y used as the variance of the measurement noise, not its std"),
    Mutant("gaussian_misfit_squared", "dps_map/operators/noise.py", "return _flat(y - Ax).norm(dim=1)",
           "return _flat(y - Ax).pow(2).sum(dim=1)", (OPER + "test_gaussian_noise_and_misfit",),
           "the noise model's misfit squared (||y - Ax||^2, not the DPS norm)"),
    Mutant("poisson_rate_scale", "dps_map/operators/noise.py", "lam = (self.rate * (Ax.clamp(-1, 1) + 1) / 2)",
           "lam = (self.rate * (Ax.clamp(-1, 1) + 1))", (OPER + "test_poisson_noise_is_unbiased_with_known_variance",),
           "Poisson intensity from [-1, 1] mapped to [0, 2] instead of [0, 1] (biased y)"),
    Mutant("poisson_misfit_variance", "dps_map/operators/noise.py",
           "var = (2 * (y + 1) / self.rate).clamp(min=2 / self.rate)", "var = ((y + 1) / self.rate).clamp(min=1 / self.rate)",
           (OPER + "test_poisson_misfit_is_the_inverse_variance_weighted_norm",),
           "the Poisson misfit weighted by the counts' variance on [0, 1], not y's on [-1, 1] (a factor 2)"),
    # the latent prior: decode, encode, v-prediction
    Mutant("latent_decode_unscaled", "dps_map/priors/latent.py", "return self.vae.decode(_at_least_fp32(z) / self.scaling_factor).sample",
           "return self.vae.decode(_at_least_fp32(z)).sample", (L + "test_decode_and_encode_are_the_vae_with_its_scaling_factor",),
           "decode(z) = D(z), forgetting the VAE's scaling factor (SD: latents 5.5x too large for D)"),
    Mutant("latent_encode_unscaled", "dps_map/priors/latent.py", "return self.vae.encode(_at_least_fp32(x)).latent_dist.mean.to(x.dtype) * self.scaling_factor",
           "return self.vae.encode(_at_least_fp32(x)).latent_dist.mean.to(x.dtype)", (L + "test_decode_and_encode_are_the_vae_with_its_scaling_factor",),
           "encode(x) = E(x) without the scaling factor (CCDF starts and PSLD's gluing off the prior's scale)"),
    Mutant("latent_v_coefficients_swapped", "dps_map/priors/latent.py",
           "out = eps_from_v(z, out, self.abar[t].to(z.dtype).reshape(-1, 1, 1, 1))",
           "out = eps_from_v(z, out, (1 - self.abar[t]).to(z.dtype).reshape(-1, 1, 1, 1))",
           (L + "test_decode_and_encode_are_the_vae_with_its_scaling_factor",),
           "a v-model's output converted with abar_t and 1 - abar_t swapped"),
    Mutant("eps_from_v_sign", "dps_map/diffusion.py", "return abar.sqrt() * v + (1 - abar).sqrt() * x_t",
           "return abar.sqrt() * v - (1 - abar).sqrt() * x_t", (L + "test_v_eps_conversion_against_get_velocity",),
           "eps from v with the x_t term's sign flipped"),
    # the conditional adapter: label, hint, zero convolutions
    Mutant("adapter_ignores_label", "dps_map/adapters/adm_controlnet.py", "emb = emb + self.label_emb(labels)", "emb = emb",
           (AD + "test_trained_adapter_follows_controlnets_definition_with_label_and_hint",),
           "the adapter's encoder copy never sees the class label"),
    Mutant("controlled_unet_ignores_label", "dps_map/adapters/adm_controlnet.py", "emb = emb + unet.label_emb(labels)",
           "emb = emb", (AD + "test_zero_init_equivalence_on_a_class_conditional_prior",),
           "the frozen UNet under the adapter runs unconditionally (no class label)"),
    Mutant("conditional_prior_one_label", "dps_map/priors/conditional.py",
           "labels = self.prior.labels_for(x_t) if self.prior.class_cond else None",
           "labels = self.prior.labels_for(x_t)[:1].expand(x_t.shape[0]) if self.prior.class_cond else None",
           (AD + "test_zero_init_equivalence_on_a_class_conditional_prior",),
           "the conditional prior gives every row the first row's label (stacked measurements lose theirs)"),
    Mutant("prior_adapter_dropped", "dps_map/config/targets.py",
           "    return with_adapter(prior, adapter)", "    return prior",
           ("tests/test_prior_adapter.py::test_base_sampler_with_prior_adapter_is_the_adapter_preset_bit_for_bit[dps-knobs0]",),
           "prior.adapter (and the presets' sampler.adapter) is read but the run samples the bare prior"),
    Mutant("adapter_operator_unchecked", "dps_map/adapters/adm_controlnet.py", "if trained is not None and trained != here:",
           "if False:", (AD + "test_adapter_for_another_operator_is_refused",),
           "an adapter trained for another operator is used: its hint means something else"),
    Mutant("adapter_operator_check_off_by_default", "dps_map/priors/conditional.py",
           "def with_adapter(prior: Prior, path, check_operator: bool = True)",
           "def with_adapter(prior: Prior, path, check_operator: bool = False)",
           (AD + "test_adapter_for_another_operator_is_refused",),
           "every run binds an adapter to any operator: the check meant for a study's deliberate mismatch is off"),
    Mutant("digest_blind_to_prior_adapter", "dps_map/config/digest.py",
           '{**prior, "adapter": True} if plain["prior"]["adapter"] else prior', "prior",
           ("tests/test_prior_adapter.py::test_prior_adapter_digest_says_whether_one_is_set",),
           "a run dir of sampler=dps is resumed with prior.adapter set: samples of two priors in one run"),
    Mutant("adapter_hint_dropped", "dps_map/adapters/adm_controlnet.py", "h = h + self.hint(hint.float())", "h = h",
           (AD + "test_trained_adapter_follows_controlnets_definition_with_label_and_hint",),
           "the hint network's features never enter the encoder copy (the adapter cannot see y)"),
    Mutant("adapter_residual_on_the_stream", "dps_map/adapters/adm_controlnet.py", "skips.append(h + res.type(h.dtype))",
           "h = h + res.type(h.dtype)\n        skips.append(h)",
           (AD + "test_trained_adapter_follows_controlnets_definition_with_label_and_hint",),
           "residuals added to the frozen encoder's features (feeding its next block), not to the skip connections only"),
    Mutant("adapter_middle_residual_dropped", "dps_map/adapters/adm_controlnet.py",
           "h = unet.middle_block(h, emb) + middle.type(unet.dtype)", "h = unet.middle_block(h, emb)",
           (AD + "test_trained_adapter_follows_controlnets_definition_with_label_and_hint",),
           "the middle block's zero convolution is never added"),
    Mutant("zero_conv_random_init", "dps_map/adapters/adm_controlnet.py", "nn.init.zeros_(conv.weight)", "pass",
           (AD + "test_zero_init_conditional_prior_equals_prior",),
           "zero convolutions initialised at random (the untrained adapter is not the prior)"),
    Mutant("hint_without_mask", "dps_map/adapters/adm_controlnet.py", 'mask = getattr(operator, "mask", None)', "mask = None",
           (AD + "test_hint_is_naive_measurement_plus_mask",),
           "the hint's mask channel is all ones for inpainting (the adapter cannot tell hidden from observed)"),
    Mutant("hint_unrestricted", "dps_map/adapters/adm_controlnet.py", "image = operator.naive(operator.restrict(y))",
           "image = operator.naive(y)", (AD + "test_hint_is_naive_measurement_plus_mask",),
           "the hint reads the noise on the hidden pixels"),
    # the Gaussian mixture: marginal, posterior, exact references
    Mutant("gmm_diffuse_mean_abar", "dps_map/priors/gmm.py", "np.sqrt(abar) * self.means", "abar * self.means",
           (GM + "test_diffuse_is_the_forward_marginal_of_q_sample[400]", GM + "test_oracle_matches_exact_posterior"),
           "the forward marginal's means scaled by abar_t instead of sqrt(abar_t) (the issue's accidental catch)"),
    Mutant("gmm_diffuse_cov_sqrt_abar", "dps_map/priors/gmm.py", "abar * self.covs + (1 - abar) * eye",
           "np.sqrt(abar) * self.covs + (1 - abar) * eye", (GM + "test_diffuse_is_the_forward_marginal_of_q_sample[400]",),
           "the forward marginal's covariances scaled by sqrt(abar_t) like the means"),
    Mutant("gmm_posterior_mean_sigma", "dps_map/priors/gmm.py", "(A.T @ y)[None] / sigma_y**2", "(A.T @ y)[None] / sigma_y",
           ("tests/test_posterior_exact.py::test_posterior_equals_joint_gaussian_conditioning[benchmark]",),
           "the posterior mean weighs the data by 1 / sigma_y instead of 1 / sigma_y^2"),
    Mutant("gmm_eps_unscaled", "dps_map/priors/gmm.py", "return self._train.eps_from_score(x, step, mix.score(x))",
           "return -mix.score(x)", (GM + "test_prior_eps_is_scaled_exact_score",),
           "the mixture's eps = -score, without the sqrt(1 - abar_t)"),
    Mutant("oracle_on_the_prior", "dps_map/samplers/gmm_reference.py",
           "return super().run(_posterior_prior(prior, operator, noise, y), operator, noise, y, shape,",
           "return super().run(prior, operator, noise, y, shape,", (GM + "test_oracle_matches_exact_posterior",),
           "the oracle chain runs on the prior's score, not the exact conditional score"),
    Mutant("exact_draws_the_prior", "dps_map/samplers/gmm_reference.py",
           "posterior = _posterior_prior(prior, operator, noise, y).mixture.to(generator.device)",
           "posterior = prior.mixture.to(generator.device)", (GM + "test_oracle_matches_exact_posterior",),
           "'exact' draws from the prior instead of the posterior"),
    # the chain's formulas (every sampler's step)
    Mutant("posterior_coef2_sqrt_abar", "dps_map/diffusion.py",
           "self.posterior_mean_coef2 = (1.0 - abar_prev) * np.sqrt(1.0 - self.betas) / (1.0 - abar)",
           "self.posterior_mean_coef2 = (1.0 - abar_prev) * np.sqrt(abar) / (1.0 - abar)",
           ("tests/test_diffusion.py::test_reverse_step_matches_adm_p_mean_variance[fixed_small-ModelVarType.FIXED_SMALL]",),
           "the transition mean's x_t coefficient with sqrt(abar_t) instead of sqrt(alpha_t) (Ho eq. 7)"),
    Mutant("posterior_variance_beta", "dps_map/diffusion.py",
           "self.posterior_variance = self.betas * (1.0 - abar_prev) / (1.0 - abar)",
           "self.posterior_variance = self.betas.copy()",
           ("tests/test_diffusion.py::test_respaced_schedule_and_posterior_match_adm[100]",),
           "'fixed_small' variance is beta_t (fixed_large) instead of the posterior variance"),
    Mutant("respaced_betas_not_recomputed", "dps_map/diffusion.py", "self.betas = 1.0 - abar / abar_prev",
           "self.betas = np.asarray(betas, dtype=np.float64)[kept]",
           ("tests/test_diffusion.py::test_respaced_schedule_and_posterior_match_adm[100]",),
           "respacing keeps the training betas of the kept steps instead of 1 - abar_t / abar_{t-1} (ADM)"),
    Mutant("ddim_sigma_without_ratio", "dps_map/diffusion.py",
           "sigma = eta * ((1 - abar_prev) / (1 - abar)).sqrt() * (1 - abar / abar_prev).sqrt()",
           "sigma = eta * (1 - abar / abar_prev).sqrt()", ("tests/test_diffusion.py::test_ddim_matches_adm",),
           "DDIM's sigma without the (1 - abar_{t-1}) / (1 - abar_t) factor (DDIM eq. 16)"),
    Mutant("x0_hat_over_abar", "dps_map/diffusion.py", "return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()",
           "return (x_t - (1 - abar).sqrt() * eps) / abar", (G + "test_dps_step_on_the_gmm_in_float64",),
           "Tweedie's x0_hat divided by abar_t instead of sqrt(abar_t)"),
    # PSLD and FreeDoM
    Mutant("psld_gluing_sign", "dps_map/samplers/psld.py", "gluing = (z0 - self.encoded(", "gluing = (z0 + self.encoded(",
           (G + "test_psld_step_on_a_pixel_prior_descends_its_objective[adjoint]",),
           "PSLD's gluing residual with the wrong sign"),
    Mutant("psld_glue_unprojected", "dps_map/samplers/psld.py", "return T(y) + image - T(A(image))",
           "return T(y) + image", (G + "test_psld_step_on_a_pixel_prior_descends_its_objective[transpose]",
                                   L + "test_psld_gradient_matches_finite_differences_of_its_objective"),
           "x_glued = T y + D(z0_hat), without removing the measured part T A D(z0_hat)"),
    Mutant("psld_gamma_dropped", "dps_map/samplers/psld.py", "(self.zeta * misfit + self.gamma * gluing).sum()",
           "(self.zeta * misfit).sum()", (G + "test_psld_step_on_a_pixel_prior_descends_its_objective[adjoint]",),
           "PSLD without its gluing term (gamma ignored: DPS)"),
    Mutant("forward_step_variance_exploding", "dps_map/diffusion.py",
           "return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise", "return x_prev + beta.sqrt() * noise",
           (G + "test_freedom_time_travel_on_a_pixel_prior_is_the_closed_form_renoise[forward]",),
           "FreeDoM's re-noise adds noise without shrinking x_{t-1} by sqrt(alpha_t)"),
    Mutant("freedom_renoise_from_x_t", "dps_map/samplers/freedom.py", "diffusion.forward_step(x_prev, i, n) if",
           "diffusion.forward_step(x, i, n) if",
           (G + "test_freedom_time_travel_on_a_pixel_prior_is_the_closed_form_renoise[forward]",),
           "time travel re-noises the old x_t instead of the new x_{t-1}"),
    Mutant("euler_renoise_scale_without_alpha", "dps_map/diffusion.py",
           "self.euler_renoise_scale = np.sqrt((1.0 - loop_beta) * abar / abar_prev)",
           "self.euler_renoise_scale = np.sqrt(1.0 - loop_beta)",
           (G + "test_freedom_time_travel_on_a_pixel_prior_is_the_closed_form_renoise[xu]",),
           "run_fdm's re-noise in VP without the sqrt(abar_t / abar_{t-1}) of the Euler rescaling"),
    # metrics: PSNR, SSIM, FID/KID, Inception features
    Mutant("psnr_on_minus1_1", "dps_map/metrics/image.py", "mse = (to_unit(x) - to_unit(ref).to(x.dtype))",
           "mse = (x - ref.to(x.dtype))", (M + "test_psnr_known_perturbation",),
           "PSNR of [-1, 1] images with peak 1 (6 dB low)"),
    Mutant("psnr_20_log10", "dps_map/metrics/image.py", "return 10 * torch.log10(1.0 / mse)",
           "return 20 * torch.log10(1.0 / mse)", (M + "test_psnr_known_perturbation",),
           "PSNR as 20 log10 of the inverse MSE (the amplitude form applied to a power)"),
    Mutant("to_unit_unclamped", "dps_map/metrics/image.py", "return ((x + 1) / 2).clamp(0, 1)", "return (x + 1) / 2",
           (M + "test_ssim_is_wangs_formula_at_data_range_1",),
           "metrics on unclamped samples (not the images a PNG would hold)"),
    Mutant("ssim_data_range_2", "dps_map/metrics/image.py", "data_range=1.0, channel_axis=0)",
           "data_range=2.0, channel_axis=0)", (M + "test_ssim_is_wangs_formula_at_data_range_1",),
           "SSIM with data_range 2 on [0, 1] images (C1, C2 four times too large)"),
    Mutant("ssim_gaussian_window", "dps_map/metrics/image.py", "data_range=1.0, channel_axis=0)",
           "data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)",
           (M + "test_ssim_is_wangs_formula_at_data_range_1",),
           "SSIM with Wang's 11x11 Gaussian window instead of the documented 7x7 uniform one"),
    Mutant("fid_trace_factor", "dps_map/metrics/fid.py", "np.trace(s1) + np.trace(s2) - 2 * tr_covmean)",
           "np.trace(s1) + np.trace(s2) - tr_covmean)", (M + "test_frechet_distance_diagonal_closed_form",),
           "FID with Tr((S1 S2)^1/2) once instead of twice"),
    Mutant("fid_symmetrised_product", "dps_map/metrics/fid.py", "m = r1 @ s2 @ r1", "m = s1 @ s2",
           (M + "test_frechet_distance_matches_sqrtm_and_pytorch_fid",),
           "Tr((S1 S2)^1/2) from the eigenvalues of the symmetrised product (wrong when S1, S2 do not commute)"),
    Mutant("fid_small_n_ddof", "dps_map/metrics/fid.py",
           "a1, a2 = (f1 - mu1) / np.sqrt(len(f1) - 1), (f2 - mu2) / np.sqrt(len(f2) - 1)",
           "a1, a2 = (f1 - mu1) / np.sqrt(len(f1)), (f2 - mu2) / np.sqrt(len(f2))",
           (M + "test_fid_with_fewer_samples_than_dimensions_equals_the_covariance_formula",),
           "the N <= D form of FID with the population covariance (pytorch-fid: ddof 1)"),
    Mutant("kid_biased", "dps_map/metrics/fid.py", "sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))",
           "sxx = kxx.sum() / (m * m)", (M + "test_kid_matches_double_loop",),
           "KID's within-set term with the diagonal (the biased MMD^2)"),
    Mutant("inception_input_unit", "dps_map/metrics/fid.py", "x = images.float().clamp(-1, 1)",
           "x = ((images.float() + 1) / 2).clamp(0, 1)", (M + "test_inception_features_match_torch_fidelity_on_the_same_weights",),
           "Inception fed [0, 1] images where the FID weights expect [-1, 1]"),
    # the runner's measurement
    Mutant("measure_without_restrict", "dps_map/runner/execute.py", "operator.restrict(noise.sample(operator(x0), gen))",
           "noise.sample(operator(x0), gen)", (R + "[inpaint_box]",),
           "the runner's y keeps noise on the hidden pixels (restrict skipped)"),
    Mutant("measure_one_stream", "dps_map/runner/execute.py", "gen = torch.Generator().manual_seed(item_seed(cfg.seed, item.id))",
           "gen = torch.Generator().manual_seed(cfg.seed)", (R + "[inpaint_box]",),
           "every measurement drawn from the run's seed (same mask and noise for every image, shard-dependent)"),
    Mutant("measure_noise_before_operator", "dps_map/runner/execute.py", "operator.restrict(noise.sample(operator(x0), gen))",
           "operator.restrict(operator(noise.sample(x0, gen)))", (R + "[sr4]",),
           "noise added to x0 before A (SR: the noise is averaged down, sigma_y no longer the measurement's)"),
    # precision, devices and the deterministic operator paths
    Mutant("precision_auto_fp16_everywhere", "dps_map/config/device.py",
           'return "fp16" if torch.device(device).type == "cuda" else "fp32"', 'return "fp16"',
           (D + "test_precision_auto_is_fp16_on_cuda_and_fp32_elsewhere",
            "tests/test_paper_scale.py::test_paper_preset_composes_and_runs_scaled_down"),
           "perf.precision=auto computes fp16 on a CPU (40x slower on an AMD EPYC, and another precision)"),
    Mutant("vae_under_autocast", "dps_map/priors/latent.py",
           "with self.full_precision(z.device):\n            return self.vae.decode(",
           "with self.autocast(z.device):\n            return self.vae.decode(",
           (D + "test_sd2_vae_decodes_in_fp32_under_a_low_precision_unet",),
           "the SD2 VAE decodes under the UNet's half-precision autocast (diffusers upcasts it)"),
    Mutant("compile_static_batch", "dps_map/priors/adm.py", '"dynamic": True', '"dynamic": False',
           ("tests/test_perf_knobs.py::test_compile_makes_one_graph_per_kind_of_call_with_a_dynamic_batch",),
           "torch.compile specialises every batch size (graphs pile up to dynamo's recompile limit)"),
    Mutant("blur_symmetric_padding", "dps_map/operators/blur.py", "return torch.where(i > n - 1, 2 * (n - 1) - i, i)",
           "return torch.where(i > n - 1, 2 * n - 1 - i, i)",
           (D + "test_blur_padding_gathers_exactly_what_reflect_padding_gives",
            OPS + "test_blur_matches_scipy_correlate_with_mirror_boundary"),
           "the blur's padding repeats the edge pixel (symmetric) where the authors' code reflects"),
    Mutant("stacked_rows_uncapped", "dps_map/runner/execute.py",
           "if pending and sum(len(u.ks) for u in pending) + len(ks) > max_rows:", "if False:",
           (D + "test_batch_size_caps_the_rows_of_stacked_measurements",),
           "measurement_batch stacks past batch_size (out of memory on a GPU)"),
    Mutant("imresize_zero_padding", "dps_map/operators/super_resolution.py", 'pad_mode="symmetric"', 'pad_mode="constant"',
           ("tests/test_operator_papers.py::test_imresize_matrix_is_matlabs_algorithm",),
           "imresize with resize-right's default zero padding, not MATLAB's symmetric border"),
    Mutant("drop_range_fixed", "dps_map/operators/inpainting.py",
           "p = lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))", "p = hi",
           ("tests/test_operator_papers.py::test_a_drop_range_draws_each_images_fraction_uniformly",),
           "a drop range [lo, hi] hides a fixed fraction instead of one drawn per image"),
    Mutant("dps_score_without_guidance", "dps_map/samplers/dps.py",
           "return step.eps + (1 - abar).sqrt() * self.likelihood_weight(diffusion, step.i, step.x_t) * step.grad",
           "return step.eps", ("tests/test_implied_score.py::test_dps_score_against_the_closed_form",),
           "the DPS conditional score without its likelihood term (s_DPS - s_uncond would be 0 at every zeta)"),
    # -- the runner, io, aggregate and migrate: resume, summaries, crops, completeness -------------------
    Mutant("summary_std_ddof0", "dps_map/runner/summary.py", "std = float(v.std(ddof=1)) if v.size > 1 else None",
           "std = float(v.std()) if v.size > 1 else None",
           (P + "test_summary_std_is_the_sample_std_and_sem_its_standard_error",),
           "the summary's std with ddof 0 (the population std: too small, and so is the standard error)"),
    Mutant("summary_sem_n_minus_1", "dps_map/runner/summary.py", "std / float(np.sqrt(v.size))",
           "std / float(np.sqrt(v.size - 1))", (P + "test_summary_std_is_the_sample_std_and_sem_its_standard_error",),
           "the standard error divides by sqrt(n - 1) instead of sqrt(n)"),
    Mutant("aggregate_complete_off_by_one", "dps_map/runner/sweep_results.py",
           "(expected is not None and len(records) < expected)", "(expected is not None and len(records) < expected - 1)",
           (P + "test_a_job_one_record_short_of_n_expected_is_unfinished",),
           "the aggregate's completeness check off by one: a job one record short counts as complete"),
    Mutant("crop_top_left", "dps_map/io.py", "left, top = (w - side) // 2, (h - side) // 2", "left, top = 0, 0",
           (P + "test_pil_to_tensor_takes_the_centre_square",),
           "a top-left instead of a centre crop (the documented preprocessing, docs/outputs.md)"),
    Mutant("crop_to_target_size", "dps_map/io.py", "img = img.crop((left, top, left + side, top + side))",
           "img = img.crop((left, top, left + size, top + size))",
           (P + "test_pil_to_tensor_resizes_the_whole_centre_square",),
           "the crop takes size x size pixels instead of the whole centre square (no downscale, a zoomed-in image)"),
    Mutant("resume_trusts_missing_png", "dps_map/runner/execute.py",
           """if r.get("failed") or (out / "recon" / f"{r['id']}_{r['k']}.png").exists()}""", "if True}",
           (P + "test_resume_redoes_a_sample_whose_png_is_gone",),
           "resume trusts a record whose PNG is gone: the sample is never redone, the directory stays short of it"),
    Mutant("record_without_k_accepted", "dps_map/runner/summary.py",
           """return "no integer 'k'" if k is None else f"'k' is {k!r}, not an integer\"""", "return None",
           (P + "test_an_unusable_record_is_one_line_and_nothing_is_rewritten",),
           "resume reads a record without k (a KeyError traceback instead of one line naming the file)"),
    Mutant("record_string_metric_accepted", "dps_map/runner/summary.py",
           "if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):", "if False:",
           (P + "test_an_unusable_record_is_one_line_and_nothing_is_rewritten",),
           "a string PSNR reaches mean_sem (a TypeError traceback instead of one line naming the file)"),
    Mutant("corrupt_marker_as_absent", "dps_map/runner/rundir.py",
           "    except UserError as err:  # a ConfigError, so that overwrite=true can still replace the directory\n"
           "        raise ConfigError(str(err)) from err",
           "    except UserError:\n        return None",
           (P + "test_truncated_run_json_is_one_line_and_the_outputs_stay",),
           "a truncated run.json read as no run.json: the run claims the directory and mixes its outputs with its own"),
    Mutant("empty_checkpoint_unchecked", "dps_map/io.py", "    if Path(path).stat().st_size == 0:", "    if False:",
           (P + "test_empty_checkpoint_is_one_line_naming_it",),
           "a 0-byte checkpoint (an interrupted download) reported as torch's bare EOFError, not as an empty file"),
    Mutant("run_dir_file_unchecked", "dps_map/runner/lock.py", "except (FileExistsError, NotADirectoryError) as err:",
           "except NotADirectoryError as err:", (P + "test_a_run_dir_that_is_a_file_is_one_line",),
           "a run directory that is a file ends in a FileExistsError traceback"),
    Mutant("read_only_run_dir_unchecked", "dps_map/runner/lock.py", "    if not os.access(run_dir, os.W_OK):",
           "    if False:", (P + "test_a_read_only_run_dir_is_one_line_and_untouched",),
           "a read-only run directory is not refused up front (Hydra and the run fail later, mid-write)"),
    Mutant("lock_shared", "dps_map/runner/lock.py", "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
           "fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)", (P + "test_the_run_lock_is_exclusive",),
           "the run lock taken shared: two writers in one run directory, and the aggregate sees no running job"),
    Mutant("jsonl_corrupt_line_drops_the_rest", "dps_map/io.py",
           "            record = None\n        out.append((line, record))",
           "            break\n        out.append((line, record))",
           (P + "test_a_corrupt_line_in_the_middle_keeps_the_good_records_around_it",),
           "a corrupt metrics.jsonl line drops every good record after it (and append_jsonl deletes them)"),
    Mutant("shard_mixing_accepted", "dps_map/runner/execute.py", "    check_one_shard(out, records, items)\n", "",
           (P + "test_a_second_shard_into_one_run_dir_is_refused_and_nothing_is_lost",),
           "a second shard run into one run directory: its summary describes that shard only, beside both on disk"),
    Mutant("aggregate_reference_cache_ignores_images", "dps_map/runner/sweep_results.py",
           "key = (weights_path, str(device), size, contents)", "key = (weights_path, str(device), size)",
           ("tests/test_sweep.py::test_aggregate_builds_one_inception_and_passes_each_reference_set_once",),
           "the aggregate's cache of reference features ignores the images: a group is scored "
           "against another group's ground truth"),
    Mutant("study_paired_sem_ddof0", "experiments/common.py",
           "sem = float(d.std(ddof=1) / np.sqrt(len(d)))", "sem = float(d.std() / np.sqrt(len(d)))",
           ("tests/test_tiny_prior_studies.py::test_paired_and_mean_sem_on_known_values",),
           "the studies' paired standard error uses the population std: too small over a few crops"),
    Mutant("aggregate_groups_by_label", "dps_map/runner/sweep_results.py",
           'groups.setdefault(job["digest"], []).append(job)', 'groups.setdefault(_label(job), []).append(job)',
           (P + "test_jobs_that_differ_only_in_seed_are_two_groups",),
           "the aggregate's group key drops the seed (and every setting not among the job's overrides)"),
    Mutant("aggregate_counts_broken_jobs", "dps_map/runner/sweep_results.py",
           '            job["summary"], job["records"] = None, []\n', "",
           (P + "test_a_broken_job_is_named_and_the_rest_aggregated",),
           "the records of a job whose run.json is broken are counted in its group"),
    Mutant("aggregate_broken_job_complete", "dps_map/runner/sweep_results.py", 'status = "broken"', 'status = "complete"',
           (P + "test_a_broken_job_is_named_and_the_rest_aggregated",),
           "a broken job counts as complete: its group is averaged without it"),
    Mutant("aggregate_exit_0_when_incomplete", "dps_map/aggregate.py", "if (incomplete or broken) and not args.partial:",
           "if broken and not args.partial:", (P + "test_an_incomplete_sweep_exits_1_unless_partial_is_asked",),
           "the aggregate exits 0 on a sweep with a missing shard (a pipeline publishes the partial table)"),
    Mutant("migrate_stops_at_first_failure", "dps_map/migrate.py",
           '            continue\n        counts["left alone"', '            break\n        counts["left alone"',
           (P + "test_migrate_reports_each_directory_and_goes_on_after_a_failure",),
           "migrate stops at the first directory it cannot read, leaving the later ones unmigrated"),
    Mutant("migrate_summary_digest_stale", "dps_map/migrate.py", '            data["digest"] = new\n', "",
           (P + "test_migrate_reports_each_directory_and_goes_on_after_a_failure",),
           "migrate rewrites run.json but leaves the old digest in summary.json"),
    # -- metrics beyond the formulas: sliced Wasserstein, KID subsets, diversity, LPIPS ------------------
    Mutant("sw_unnormalised_directions", "dps_map/metrics/posterior.py",
           "dirs = dirs / dirs.norm(dim=0, keepdim=True)", "dirs = dirs * 1.0",
           (M + "test_sliced_wasserstein_is_the_mean_1d_w1_over_unit_directions",),
           "sliced Wasserstein on Gaussian directions not scaled to unit length (every distance ~sqrt(d) too large)"),
    Mutant("sw_w2_not_w1", "dps_map/metrics/posterior.py", "return float((qa - qb).abs().mean())",
           "return float((qa - qb).pow(2).mean().sqrt())",
           (M + "test_sliced_wasserstein_is_the_mean_1d_w1_over_unit_directions",),
           "sliced W2 (root mean square over quantiles and directions) where the docstring promises W1"),
    Mutant("sw_quantile_levels", "dps_map/metrics/posterior.py",
           "levels = (torch.arange(n, dtype=torch.float64) + 0.5) / n",
           "levels = torch.arange(n, dtype=torch.float64) / (n - 1)",
           (M + "test_sliced_wasserstein_is_the_mean_1d_w1_over_unit_directions",),
           "unequal set sizes matched at the levels i / (n - 1) (the extremes) instead of the midpoints (i + 1/2) / n"),
    Mutant("kid_subset_std_ddof1", "dps_map/metrics/fid.py", "float(vals.std(ddof=0))", "float(vals.std(ddof=1))",
           (M + "test_kid_subsets_mean_and_population_std_of_the_subset_estimates",),
           "KID's std over subsets with ddof 1 (torchmetrics and torch-fidelity report the population std)"),
    Mutant("diversity_pixel_std_unbiased", "dps_map/metrics/diversity.py", "s.std(dim=0, unbiased=False)",
           "s.std(dim=0, unbiased=True)", (M + "test_diversity_hand_computation",),
           "the diversity figure's per-pixel std with ddof 1 (the paper's population std is documented)"),
    Mutant("diversity_l2_rms_over_pairs", "dps_map/metrics/diversity.py", ".pow(2).mean(1).sqrt().mean())",
           ".pow(2).mean(1).mean().sqrt())", (M + "test_diversity_hand_computation",),
           "pairwise L2 as the RMS over all pairs instead of the mean of the pairs' RMS distances"),
    Mutant("diversity_pairs_with_self", "dps_map/metrics/diversity.py", "torch.triu_indices(n, n, offset=1)",
           "torch.triu_indices(n, n, offset=0)", (M + "test_diversity_hand_computation",),
           "pairwise L2 / LPIPS averaged over pairs that include each sample with itself (distance 0)"),
    Mutant("lpips_input_as_unit", "dps_map/metrics/lpips.py",
           "d = self.model(x.float(), ref.to(x.device).float())",
           "d = self.model(x.float(), ref.to(x.device).float(), normalize=True)",
           (M + "test_lpips_matches_torchmetrics_from_a_torchvision_backbone_file",),
           "LPIPS treats the [-1, 1] images as [0, 1] ones (lpips' normalize=True rescales them to [-3, 1])"),
    Mutant("lpips_linear_not_loaded", "dps_map/metrics/lpips.py", "model.load_state_dict(lin_state, strict=False)",
           "pass", (M + "test_lpips_random_backbone",),
           "LPIPS with its random linear layers: the v0.1 weights read but not loaded"),
    Mutant("lpips_backbone_slices_shifted", "dps_map/metrics/lpips.py",
           "index_to_slice[idx] = slice_name", "index_to_slice[idx] = slice_name if slice_name != \"slice2\" else \"slice1\"",
           (M + "test_lpips_matches_torchmetrics_from_a_torchvision_backbone_file",),
           "the torchvision-to-lpips key map sends slice2's layer to slice1 (the backbone file is rejected or misplaced)"),
    Mutant("weights_directory_not_resolved", "dps_map/metrics/weight_files.py",
           "return p / entry.filename if p.is_dir() else p", "return p",
           ("tests/test_metrics.py::test_lpips_loads_backbone_from_hub_cache",),
           "an explicit weight path naming the directory that holds the file (documented) is not looked into"),
    Mutant("posterior_tv_without_half", "dps_map/metrics/posterior.py",
           "tv = 0.5 * (weights - posterior.weights.cpu()).abs().sum()",
           "tv = (weights - posterior.weights.cpu()).abs().sum()", (M + "test_posterior_report_against_numpy",),
           "mode-weight 'total variation' as the L1 distance (twice the TV)"),
    Mutant("effective_modes_entropy", "dps_map/metrics/posterior.py", "return float(torch.exp(-(w * w.log()).sum()))",
           "return float(-(w * w.log()).sum())", (M + "test_posterior_report_against_numpy",),
           "effective number of modes as the entropy instead of exp(entropy)"),
    Mutant("within_mode_population_cov", "dps_map/metrics/posterior.py",
           "total += len(xs) * float(torch.trace(torch.cov(xs.T)))",
           "total += len(xs) * float(torch.trace(torch.cov(xs.T, correction=0)))",
           (M + "test_posterior_report_against_numpy",),
           "within-mode spread from the population covariance (biased low for small modes)"),
    Mutant("trace_ratio_within_components", "dps_map/metrics/posterior.py",
           "/ torch.trace(posterior.covariance())",
           "/ torch.trace((posterior.weights[:, None, None] * posterior.covs).sum(0))",
           (M + "test_posterior_report_against_numpy",),
           "trace ratio against the mean component covariance, missing the spread between the posterior's modes"),
    Mutant("score_floor_ddof0", "dps_map/metrics/score.py", "flat.var(0, unbiased=True)", "flat.var(0, unbiased=False)",
           (M + "test_score_error_and_score_mean_against_numpy",),
           "score_mean's Monte-Carlo floor from the population variance (documented: sample variance)"),
    Mutant("score_error_summed_over_d", "dps_map/metrics/score.py", "return float(diff.pow(2).mean())",
           "return float(diff.pow(2).sum(1).mean())", (M + "test_score_error_and_score_mean_against_numpy",),
           "score error ||s - s_ref||^2 not divided by d"),
    # -- config, data and training: validation, datasets, the trainer's accumulation ----------------------
    Mutant("accumulate_ignored", "dps_map/training/trainer.py", "for _ in range(self.accumulate):",
           "for _ in range(1):", (TR + "test_accumulated_gradient_is_the_full_batch_gradient_and_the_adamw_step_follows",
            AD + "test_trainer_gradient_accumulation"),
           "accumulate=k trains on one micro-batch per step (the effective batch of the adm512 recipe lost)"),
    Mutant("accumulate_loss_not_divided", "dps_map/training/trainer.py", "micro = batch_loss() / self.accumulate",
           "micro = batch_loss()", (TR + "test_accumulated_gradient_is_the_full_batch_gradient_and_the_adamw_step_follows",
            AD + "test_trainer_gradient_accumulation"),
           "the accumulated gradient is the sum of the micro-batch gradients, k times the mean loss's"),
    Mutant("accumulate_loss_last_micro", "dps_map/training/trainer.py", "loss = loss + micro.detach()",
           "loss = micro.detach()", (TR + "test_accumulated_gradient_is_the_full_batch_gradient_and_the_adamw_step_follows",),
           "the recorded loss (the card's loss curve) is the last micro-batch's share, not the step's mean loss"),
    Mutant("grad_clip_after_step", "dps_map/training/trainer.py",
           "grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)\n            self.opt.step()",
           "self.opt.step()\n            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)",
           (TR + "test_clipped_gradients_have_the_norm_grad_clip_in_two_adamw_steps",),
           "the gradient is clipped after the optimiser step (clipping has no effect on training)"),
    Mutant("lr_warmup_from_zero", "dps_map/training/trainer.py", "return cfg.lr * (step + 1) / cfg.warmup",
           "return cfg.lr * step / cfg.warmup", (TR + "test_learning_rate_schedule_is_linear_warmup_then_constant_or_cosine",),
           "warmup off by one: the first step has lr 0 and the peak comes one step late"),
    Mutant("lr_cosine_without_floor", "dps_map/training/trainer.py",
           "return final + 0.5 * (cfg.lr - final) * (1 + math.cos(math.pi * prog))",
           "return 0.5 * cfg.lr * (1 + math.cos(math.pi * prog))",
           (TR + "test_learning_rate_schedule_is_linear_warmup_then_constant_or_cosine",),
           "the cosine decays to 0 instead of lr * lr_final_frac"),
    Mutant("lr_cosine_span_with_warmup", "dps_map/training/trainer.py", "span = max(1, cfg.steps - cfg.warmup)",
           "span = max(1, cfg.steps)", (TR + "test_learning_rate_schedule_is_linear_warmup_then_constant_or_cosine",),
           "the cosine's span counts the warmup steps: training ends above the floor"),
    Mutant("ema_weights_swapped", "dps_map/training/trainer.py", "ema[k].mul_(decay).add_(v, alpha=1 - decay)",
           "ema[k].mul_(1 - decay).add_(v, alpha=decay)",
           (TR + "test_ema_update_weighs_the_old_average_by_the_decay",
            TR + "test_ema_follows_its_recurrence_over_the_trainers_steps"),
           "EMA with decay and 1 - decay swapped (the average is nearly the current weights)"),
    Mutant("ema_warmup_ignored", "dps_map/training/trainer.py", "    if cfg.ema_warmup:\n", "    if False:\n",
           (TR + "test_ema_follows_its_recurrence_over_the_trainers_steps",),
           "ema_warmup=true ignored: the early EMA keeps the random initialisation"),
    Mutant("resume_without_rng_state", "dps_map/training/trainer.py", "                rng.set_state(state[key])",
           "                pass", (TR + "test_resume_continues_bit_for_bit",),
           "a resumed run draws its batches from the seed again (the batches of steps 1, 2, ... seen twice)"),
    Mutant("resume_without_optimizer_state", "dps_map/training/trainer.py",
           "            self.opt.load_state_dict(state[\"optimizer\"])\n", "",
           (TR + "test_resume_continues_bit_for_bit",),
           "a resumed run restarts Adam's moments (not the uninterrupted run)"),
    Mutant("resume_ema_reset", "dps_map/training/trainer.py",
           "self.ema = {k: v.to(self.ema[k].device) for k, v in state[\"ema\"].items()}",
           "self.ema = {k: v.detach().clone() for k, v in module.state_dict().items()}",
           (TR + "test_resume_continues_bit_for_bit",),
           "a resumed run restarts the EMA from the current weights"),
    Mutant("check_sr_factor_only_too_large", "dps_map/config/checks.py",
           'task.operator == "super_resolution" and size % task.factor:',
           'task.operator == "super_resolution" and size < task.factor:', (CG + "test_an_impossible_config_is_refused_in_one_line_and_its_valid_neighbour_passes[sr_factor]",),
           "an SR factor that does not divide the image size passes (A's adjoint and the crops would not match)"),
    Mutant("check_kernel_half_width_boundary", "dps_map/config/checks.py", "task.kernel_size // 2 >= size:",
           "task.kernel_size // 2 > size:", (CG + "test_an_impossible_config_is_refused_in_one_line_and_its_valid_neighbour_passes[blur_kernel]",),
           "a blur kernel of half-width equal to the image size passes (reflect padding of that width fails)"),
    Mutant("check_box_of_zero_pixels", "dps_map/config/checks.py", "not 1 <= round(task.box_fraction * size) < size:",
           "not 0 <= round(task.box_fraction * size) < size:", (CG + "test_an_impossible_config_is_refused_in_one_line_and_its_valid_neighbour_passes[box_size]",),
           "a box that rounds to 0 pixels passes (an inpainting task that hides nothing)"),
    Mutant("check_shard_upper_bound", "dps_map/config/checks.py", 'if not 0 <= data.get("shard", 0) < shards:',
           'if not 0 <= data.get("shard", 0) <= shards:', (CG + "test_an_impossible_config_is_refused_in_one_line_and_its_valid_neighbour_passes[shard]",),
           "data.shard=n of n shards passes (an empty shard: a job that silently does nothing)"),
    Mutant("check_learned_range_reads_wrong_key", "dps_map/config/checks.py",
           'and not (prior.get("unet") or {}).get("learn_sigma", False):', 'and not prior.get("learn_sigma", True):',
           (CG + "test_an_impossible_config_is_refused_in_one_line_and_its_valid_neighbour_passes[learned_range]",),
           "variance=learned_range passes on a prior without variance channels (the check reads a key no prior has)"),
    Mutant("check_gmm_data_ignored", "dps_map/config/checks.py",
           'if is_gmm_task != (prior.kind == "gmm") or is_gmm_task != (data.kind == "gmm"):',
           'if is_gmm_task != (prior.kind == "gmm"):', (CG + "test_an_impossible_config_is_refused_in_one_line_and_its_valid_neighbour_passes[gmm_data]",),
           "the Gaussian-mixture task and prior with image data pass"),
    Mutant("check_oracle_on_images", "dps_map/config/checks.py", 'in ("exact", "oracle") and not is_gmm_task:',
           'in ("exact",) and not is_gmm_task:', (CG + "test_an_impossible_config_is_refused_in_one_line_and_its_valid_neighbour_passes[exact_posterior]",),
           "sampler=oracle passes on an image task, where no exact posterior exists"),
    Mutant("digest_ignores_seed", "dps_map/config/keys.py", 'NON_OUTPUT = ("hydra", "logger",',
           'NON_OUTPUT = ("hydra", "seed", "logger",', (DG,),
           "the digest ignores the seed: a run dir accepts samples of another seed as its own"),
    Mutant("digest_includes_progress", "dps_map/config/keys.py", '"logger", "progress", "device"', '"logger", "device"',
           (DG,), "the digest includes progress=false: finished runs disowned by a display setting"),
    Mutant("digest_excludes_whole_groups", "dps_map/config/digest.py",
           "                out[head] = without_keys(out[head], [rest])", "                del out[head]", (DG,),
           "a dotted exclusion (data.shard, prior.what, sampler.adapter) drops its whole group: data, prior and "
           "sampler changes no longer change the digest"),
    Mutant("sweep_first_job_of_each_batch", "dps_map/config/sweep.py",
           "[job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]",
           "[batch[0] for batch in BasicSweeper.split_arguments(parsed, None)]",
           (CG + "test_a_multirun_expands_into_the_cartesian_product_each_in_its_own_directory",),
           "a multirun checks (and preflights) only its first job"),
    Mutant("sweep_single_run_accepts_a_sweep", "dps_map/config/sweep.py", "            if sweeps:\n",
           "            if False:\n",
           (CG + "test_a_multirun_expands_into_the_cartesian_product_each_in_its_own_directory",),
           "task=sr4,sr8 without -m is not refused with the hint to add -m"),
    Mutant("sweep_subdir_without_hash", "dps_map/config/sweep.py",
           'return f"{head}~{hashlib.sha256(override_dirname.encode()).hexdigest()[:16]}"', "return head",
           (CG + "test_long_job_directory_names_stay_unique_and_stable",),
           "two long sweep jobs that differ past the cut share one directory (the second refused or mixed in)"),
    Mutant("tuned_all_tasks_first", "dps_map/config/tuned.py",
           'for path in (f"priors.{prior}.{task}.{sampler}.{key}", f"priors.{prior}.all_tasks.{sampler}.{key}"):',
           'for path in (f"priors.{prior}.all_tasks.{sampler}.{key}", f"priors.{prior}.{task}.{sampler}.{key}"):',
           (CG + "test_tuned_lookup_prefers_the_task_entry_then_all_tasks_then_the_named_sampler",),
           "the all-tasks value beats the one tuned for this task"),
    Mutant("tuned_like_before_own", "dps_map/config/tuned.py", 'for sampler in (names["sampler"], like):',
           'for sampler in (like, names["sampler"]):',
           (CG + "test_tuned_lookup_prefers_the_task_entry_then_all_tasks_then_the_named_sampler",),
           "a sampler variant takes the step size of the sampler it names even when it has its own"),
    Mutant("shard_unsorted", "dps_map/data.py", "ordered = sorted(items, key=lambda it: it.id)", "ordered = list(items)",
           (DS + "test_shards_split_the_sorted_ids_round_robin_whatever_the_order_given",),
           "shards split the listing order: two jobs listing a folder differently skip or repeat images"),
    Mutant("demo_crop_third_of_short_side", "dps_map/data.py", "side = min(h, w) // 2", "side = min(h, w) // 3",
           (DS + "test_demo_crops_are_half_the_short_side_spread_along_the_long_side",),
           "the demo crops are another zoom of the photographs than documented (and than finished runs used)"),
    Mutant("demo_crop_tops_not_reversed", "dps_map/data.py", "tops = np.linspace(0, h - side, per_photo).round().astype(int)[::-1]",
           "tops = np.linspace(0, h - side, per_photo).round().astype(int)",
           (DS + "test_demo_crops_are_half_the_short_side_spread_along_the_long_side",),
           "the demo crops run along the other diagonal (other test images)"),
    Mutant("train_photos_include_heldout", "dps_map/data.py",
           "TRAIN_PHOTOS = tuple(name for name in PHOTOS if name not in HELDOUT_PHOTOS)", "TRAIN_PHOTOS = tuple(PHOTOS)",
           ("tests/test_train_prior.py::test_heldout_photos_never_trained_on",),
           "the default training photographs include the held-out test photographs"),
    Mutant("heldout_leak_not_refused", "dps_map/training/common.py", "    if leaked:\n", "    if False:\n",
           ("tests/test_train_prior.py::test_heldout_photos_never_trained_on",),
           "data.photos naming a held-out photograph is not refused with a one-line error (a bare assert, gone "
           "under python -O)"),
    Mutant("crop_stream_seed_ignored", "dps_map/training/common.py", "self.rng = np.random.default_rng(seed)",
           "self.rng = np.random.default_rng(0)", (DS + "test_training_crops_follow_their_seed",),
           "every seed trains the tiny prior on the same crop stream"),
    Mutant("training_set_seed_ignored", "dps_map/training/common.py", "hflip=False, seed=d.seed)",
           "hflip=False, seed=0)", (DS + "test_training_crops_follow_their_seed",),
           "data.seed does not change the adapters' fixed training set"),
    Mutant("v_loss_weight_dropped", "dps_map/training/common.py",
           "return (diffusion.v_loss_weight(t, per_sample) * per_sample).mean()", "return per_sample.mean()",
           (AD + "test_v_loss_weight_is_the_v_prediction_loss",),
           "loss_weight=v trains with the plain eps loss (the high-noise steps that must learn y weighted down)"),
    Mutant("class_label_of_the_first_rows", "dps_map/training/adapter.py", "prior.set_class_labels(self.labels[idx])",
           "prior.set_class_labels(self.labels[:len(idx)])",
           (AD + "test_class_labels_in_training_are_each_drawn_images_own_or_one_random_per_row",),
           "class_label=data gives each row the label of image r, not of the image drawn for it"),
    Mutant("class_label_random_one_per_batch", "dps_map/training/adapter.py",
           "torch.randint(0, 1000, (len(idx),), generator=gen)", "torch.randint(0, 1000, (1,), generator=gen)",
           (AD + "test_class_labels_in_training_are_each_drawn_images_own_or_one_random_per_row",),
           "class_label=random draws one label for the whole batch instead of one per row"),
]


def apply(root: Path, mutant: Mutant) -> str:
    """Write the mutant into the copy at root; return the original text (fails loudly if the snippet moved)."""
    path = root / mutant.path
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise SystemExit(f"mutant {mutant.name}: snippet {mutant.old!r} found {count} times in {mutant.path} "
                         f"(expected once): update the mutant in tests/mutants.py")
    path.write_text(text.replace(mutant.old, mutant.new))
    return text


#: third-party modules the tests import, loaded once by this process and inherited by every forked pytest (a fresh
#: interpreter spends 2-6 s of CPU importing them; dps_map itself is never imported here, so each child imports
#: the mutated copy)
PRELOAD = ("numpy", "scipy.linalg", "scipy.ndimage", "PIL.Image", "torch", "torchvision", "skimage.data",
           "skimage.metrics", "omegaconf", "hydra", "pytest", "guided_diffusion.script_util",
           "guided_diffusion.gaussian_diffusion", "guided_diffusion.respace", "lpips", "pytorch_fid.inception", "deepinv",
           "diffusers", "transformers")
PRELOAD_NAMES = {"diffusers": ("DDPMScheduler", "EulerAncestralDiscreteScheduler", "AutoencoderKL",
                               "UNet2DConditionModel", "ControlNetModel"),
                 "transformers": ("CLIPTextConfig", "CLIPTextModel", "CLIPTokenizer")}
PYTEST_ARGS = ["-q", "-rf", "-p", "no:cacheprovider", "-W", "ignore"]
TIMEOUT = 900


def preload() -> None:
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in PRELOAD:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            for attr in PRELOAD_NAMES.get(name, ()):  # lazy packages: import the classes the tests use
                getattr(module, attr, None)


class PytestRun:
    """One pytest run on a copy of the repository, in a forked child of this (preloaded) process, or in a fresh
    interpreter (fork=False). Its output goes to a log file; poll() gives the exit code once it has finished."""

    def __init__(self, root: Path, tests, first_failure: bool, fork: bool, log: Path):
        self.log, self.started = log, time.perf_counter()
        args = [*PYTEST_ARGS, *(["-x"] if first_failure else []), *tests]
        env = {"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        if not fork:
            self.pid = None
            with open(log, "w") as out:
                self.proc = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=root, env={**os.environ, **env},
                                             stdout=out, stderr=subprocess.STDOUT, text=True)
            return
        self.proc = None
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            code = 3
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.chdir(root)
                os.environ.update(env)  # the subprocesses the tests start import the copy too
                sys.dont_write_bytecode = True
                here = {str(ROOT), str(ROOT / "tests"), "", "."}
                sys.path[:] = [str(root)] + [p for p in sys.path if p not in here]
                import dps_map

                if not dps_map.__file__.startswith(str(root)):
                    print(f"the copy's dps_map is not the one imported ({dps_map.__file__}): check sys.path")
                else:
                    import pytest

                    code = int(pytest.main(args))
            except BaseException:  # noqa: BLE001 - report anything, then leave without running the parent's code
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)

    def poll(self) -> int | None:
        if self.proc is not None:
            return self.proc.poll()
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        return None if pid == 0 else os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_any(running: dict):
    """Block until one of the running PytestRuns finishes (killing any past TIMEOUT); return (key, exit code)."""
    while True:
        for key, run in running.items():
            code = run.poll()
            if code is None and time.perf_counter() - run.started > TIMEOUT:
                run.kill()
                code = -9
            if code is not None:
                return key, code
        time.sleep(0.05)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="mutants run at once, each in its own copy (default: 2, or 1 on a 1-core machine)")
    parser.add_argument("--no-fork", action="store_true",
                        help="a fresh interpreter per pytest run instead of a fork of this preloaded process (slower)")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:34s} {m.path:40s} {m.why}")
        return 0
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        print(f"unknown mutants {unknown} (see --list)", file=sys.stderr)
        return 2
    chosen = [known[n] for n in args.names] if args.names else MUTANTS
    jobs = max(1, min(args.jobs, len(chosen)))
    fork = hasattr(os, "fork") and not args.no_fork
    started = time.perf_counter()
    os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported: a forked child must not inherit a thread pool
    if fork:
        preload()
    with tempfile.TemporaryDirectory(prefix="dps-map-mutants-") as tmp:
        roots = [Path(tmp) / f"repo{k}" for k in range(jobs)]
        for root in roots:
            shutil.copytree(ROOT, root, ignore=IGNORE)
        for m in chosen:  # every snippet must apply before anything runs
            (roots[0] / m.path).write_text(apply(roots[0], m))
        logs = Path(tmp) / "logs"
        logs.mkdir()
        # the baseline: the selected tests on the unmodified copies, split over the workers
        tests = sorted({t for m in chosen for t in m.tests})
        running = {k: PytestRun(roots[k], tests[k::jobs], False, fork, logs / f"baseline{k}.log")
                   for k in range(jobs) if tests[k::jobs]}
        while running:
            k, code = wait_any(running)
            if code != 0:
                print(running[k].output()[-3000:], file=sys.stderr)
                print("the selected tests fail on the unmodified code: fix that first", file=sys.stderr)
                for other in running.values():
                    if other.poll() is None:
                        other.kill()
                return 2
            del running[k]
        print(f"baseline: the {len(tests)} selected tests pass on the unmodified copy "
              f"({time.perf_counter() - started:.0f} s, {jobs} worker{'s' * (jobs > 1)}, "
              f"{'forked from a preloaded process' if fork else 'fresh interpreters'})\n")
        print(f"{'mutant':34s} {'result':9s} {'s':>5s}  caught by", flush=True)
        results, queue, free = {}, list(chosen), list(range(jobs))
        while queue or running:
            while queue and free:
                m, k = queue.pop(0), free.pop(0)
                original = apply(roots[k], m)
                running[k] = (m, original, PytestRun(roots[k], m.tests, True, fork, logs / f"{m.name}.log"))
                running[k][2].started = time.perf_counter()
            k, code = wait_any({key: item[2] for key, item in running.items()})
            m, original, run = running.pop(k)
            (roots[k] / m.path).write_text(original)
            free.append(k)
            out = run.output()
            failed = re.findall(r"^FAILED (\S+)", out, flags=re.M)
            result = "killed" if code == 1 and failed else ("survived" if code == 0 else f"error({code})")
            results[m.name] = result
            lines = out.strip().splitlines()
            by = failed[0].split("::", 1)[-1] if failed else ("-" if code == 0 else (lines[-1][:80] if lines else "?"))
            print(f"{m.name:34s} {result:9s} {time.perf_counter() - run.started:5.1f}  {by}", flush=True)
    killed = sum(r == "killed" for r in results.values())
    missed = [name for name, r in results.items() if r != "killed"]
    print(f"\n{killed}/{len(results)} mutants killed in {time.perf_counter() - started:.0f} s"
          + (f"; not killed: {', '.join(missed)}" if missed else ""))
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
