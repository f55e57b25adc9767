"""`make mutants`: deliberate bugs, each applied to a temporary copy of the repository and run against the
tests written to catch it. Prints killed/survived per mutant and the time.

    python tests/mutants.py              # all mutants (a few minutes on 2 CPU cores)
    python tests/mutants.py dsg_sign ... # some of them;  --list: names only

A mutant replaces one small exact snippet of one file. If the snippet is not found exactly once (the code
moved on), the script stops with exit code 2 and names the mutant to update, rather than report a mutant
that never ran. Before the mutants, the selected tests run once on the unmodified copy and must pass.
Exit code 0 if every mutant is killed, 1 if any survives or fails to run its tests.

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
    Mutant("dps_sign", "dps_map/samplers/dps.py", "x_prev = x_sampled - self.zeta * self.step_factor(diffusion, i, x) * grad",
           "x_prev = x_sampled + self.zeta * self.step_factor(diffusion, i, x) * grad",
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
    Mutant("blur_zero_padding", "dps_map/operators/blur.py", 'mode="reflect"', 'mode="constant"',
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
    # -- issue 28: the authors' units, PSLD's gluing, FreeDoM's window and re-noise ------------------------
    Mutant("euler_factor_dropped", "dps_map/samplers/dps.py",
           "x_prev = x_sampled - self.zeta * self.step_factor(diffusion, i, x) * grad", "x_prev = x_sampled - self.zeta * grad",
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
           'diffusion.forward_step(x_prev, i, n) if self.renoise == "forward" else diffusion.xu_renoise(x_prev, i, n)',
           "diffusion.forward_step(x_prev, i, n)", (STEP + "[freedom]",),
           "the authors' FreeDoM re-noise replaced by a proper forward step (not what run_fdm does)"),
    Mutant("xu_renoise_beta_at_i", "dps_map/diffusion.py",
           "loop_beta = np.asarray(betas, dtype=np.float64)[:self.num_steps][::-1]",
           "loop_beta = np.asarray(betas, dtype=np.float64)[:self.num_steps]",
           (F + "test_xu_renoise_is_run_fdm_on_euler_latents",),
           "run_fdm's re-noise with the training beta at our step index i, not at its loop index S - 1 - i"),
    Mutant("freedom_adaptive_no_schedule", "dps_map/diffusion.py",
           'return self._at("posterior_mean_coef1", i, x) * (1 - abar).sqrt() / abar.sqrt()',
           'return self._at("posterior_mean_coef1", i, x)',
           (G + "test_freedom_adaptive_step_is_yus_face_gd_rule",),
           "FreeDoM's adaptive rho without Yu's sqrt(1 - abar_t) / sqrt(abar_t)"),
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


def pytest(root: Path, tests, first_failure: bool) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    args = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "-W", "ignore", *tests]
    if first_failure:
        args.insert(4, "-x")
    proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    return proc.returncode, proc.stdout + proc.stderr


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:32s} {m.path:40s} {m.why}")
        return 0
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        print(f"unknown mutants {unknown} (see --list)", file=sys.stderr)
        return 2
    chosen = [known[n] for n in args.names] if args.names else MUTANTS
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dps-map-mutants-") as tmp:
        root = Path(tmp) / "repo"
        shutil.copytree(ROOT, root, ignore=IGNORE)
        where = subprocess.run([sys.executable, "-c", "import dps_map; print(dps_map.__file__)"], cwd=root,
                               env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True).stdout
        if not where.startswith(str(root)):
            print(f"the copy's dps_map is not the one imported ({where.strip()}): check PYTHONPATH", file=sys.stderr)
            return 2
        for m in chosen:  # every snippet must apply before anything runs
            (root / m.path).write_text(apply(root, m))
        tests = sorted({t for m in chosen for t in m.tests})
        code, out = pytest(root, tests, first_failure=False)
        if code != 0:
            print(out[-3000:], file=sys.stderr)
            print("the selected tests fail on the unmodified code: fix that first", file=sys.stderr)
            return 2
        print(f"baseline: the {len(tests)} selected tests pass on the unmodified copy "
              f"({time.perf_counter() - started:.0f} s)\n")
        print(f"{'mutant':32s} {'result':9s} {'s':>5s}  caught by")
        results = []
        for m in chosen:
            t0 = time.perf_counter()
            original = apply(root, m)
            try:
                code, out = pytest(root, m.tests, first_failure=True)
            finally:
                (root / m.path).write_text(original)
            failed = re.findall(r"^FAILED (\S+)", out, flags=re.M)
            result = "killed" if code == 1 and failed else ("survived" if code == 0 else f"error({code})")
            results.append(result)
            by = failed[0].split("::", 1)[-1] if failed else ("-" if code == 0 else out.strip().splitlines()[-1][:80])
            print(f"{m.name:32s} {result:9s} {time.perf_counter() - t0:5.1f}  {by}", flush=True)
    killed = results.count("killed")
    print(f"\n{killed}/{len(results)} mutants killed in {time.perf_counter() - started:.0f} s")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
