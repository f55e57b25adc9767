"""The latent (Stable Diffusion) prior: the schedule against diffusers, the decoder seam, every sampler end to
end on prior=sd2_tiny (random diffusers networks of the same classes), the folder loader and its refusal.

Maximum differences against diffusers 0.42.1 (measured over all 50 steps of the grid when written; diffusers
keeps its schedule in float32): betas 1.8e-9 (relative 2.2e-7), get_velocity 1.3e-6, eps_from_v 1.2e-6,
DDPMScheduler.step 4.5e-6 (eps model) / 5.2e-6 (v model), EulerAncestralDiscreteScheduler.step 5.4e-7 relative
to 1 + max|x~| (the tests assert looser bounds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, EulerAncestralDiscreteScheduler  # the `latent` extra (make install installs it)
from omegaconf import OmegaConf
from PIL import Image

from dps_map.config.targets import build_prior  # noqa: E402
from dps_map.diffusion import Diffusion, alphas_cumprod, eps_from_v, make_betas, v_from_eps, velocity  # noqa: E402
from dps_map.errors import MissingFileError  # noqa: E402
from dps_map.io import read_jsonl  # noqa: E402
from dps_map.operators import GaussianNoise, SuperResolution  # noqa: E402
from dps_map.priors.latent import DecodedOperator, check_folder  # noqa: E402
from dps_map.runner import run  # noqa: E402

from support import CONF, built_sampler, compose, png_psnr, run_with_guard, shipped_prior

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)



def config(*overrides):
    return compose("progress=false", *overrides)


@pytest.fixture(scope="module")
def tiny():
    return shipped_prior("sd2_tiny")


# -- the schedule against diffusers -----------------------------------------------------------------
def test_scaled_linear_betas_equal_diffusers():
    ours = make_betas("scaled_linear", 1000)
    theirs = DDPMScheduler(**SD).betas.double().numpy()
    assert np.abs(ours - theirs).max() < 5e-9  # diffusers computes them in float32
    assert np.abs(ours / theirs - 1).max() < 1e-6
    assert np.abs(ours - make_betas("linear", 1000)).max() > 1e-3  # a different schedule than ADM's


def test_v_eps_conversion_against_get_velocity():
    sched = DDPMScheduler(**SD)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([0, 250, 600, 999])
    abar = torch.tensor(alphas_cumprod(make_betas("scaled_linear")), dtype=torch.float32)[t].reshape(-1, 1, 1, 1)
    v = sched.get_velocity(x0, eps, t)
    assert (velocity(x0, eps, abar) - v).abs().max() < 2e-6
    x_t = sched.add_noise(x0, eps, t)
    assert (eps_from_v(x_t, v, abar) - eps).abs().max() < 2e-5
    assert (v_from_eps(x_t, eps, abar) - v).abs().max() < 2e-5


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ancestral_step_equals_diffusers_ddpm_step(prediction):
    """Our ancestral step (respaced 'ddim50' = diffusers' 'leading' spacing) on the same x_t, model output and
    noise as DDPMScheduler.step; v-model outputs go through eps_from_v first."""
    sched = DDPMScheduler(**SD, clip_sample=False, prediction_type=prediction, timestep_spacing="leading")
    sched.set_timesteps(50)
    diffusion = Diffusion(make_betas("scaled_linear"), "ddim50")
    assert diffusion.timesteps.flip(0).tolist() == sched.timesteps.tolist()
    abar_all = torch.tensor(alphas_cumprod(make_betas("scaled_linear")), dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    for i in (49, 30, 10, 1, 0):
        t = int(diffusion.timesteps[i])
        x_t, out = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        theirs = sched.step(out, t, x_t, generator=torch.Generator().manual_seed(i)).prev_sample
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(i))
        eps = eps_from_v(x_t, out, abar_all[t]) if prediction == "v_prediction" else out
        ours, _, _ = diffusion.ddpm_step(diffusion.x0_from_eps(x_t, i, eps), x_t, i, noise)
        assert (ours - theirs).abs().max() < 1e-4 * (1 + theirs.abs().max()), (i, float((ours - theirs).abs().max()))


def test_ancestral_step_equals_euler_ancestral():
    """The authors' Euler-ancestral step (in x~ = x_t / sqrt(abar_t)) is our DDPM step, rescaled
    (dps_map/diffusion.py's docstring derives it)."""
    diffusion = Diffusion(make_betas("scaled_linear"), "ddim50")
    abar = diffusion.alphas_cumprod
    g = torch.Generator().manual_seed(2)
    for i in (49, 25, 3, 0):
        sched = EulerAncestralDiscreteScheduler(**SD, timestep_spacing="leading")
        sched.set_timesteps(50)
        t = int(diffusion.timesteps[i])
        assert int(sched.timesteps[49 - i]) == t
        x_t, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        sched.set_begin_index(49 - i)
        theirs = sched.step(eps, sched.timesteps[49 - i], x_t / abar[i] ** 0.5,
                            generator=torch.Generator().manual_seed(i)).prev_sample
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(i))
        ours, _, _ = diffusion.ddpm_step(diffusion.x0_from_eps(x_t, i, eps), x_t, i, noise)
        ours = ours / diffusion.alphas_cumprod_prev[i] ** 0.5
        assert (ours - theirs).abs().max() < 1e-4 * (1 + theirs.abs().max()), (i, float((ours - theirs).abs().max()))


# -- the prior and its seam ---------------------------------------------------------------------------
def test_decode_and_encode_are_the_vae_with_its_scaling_factor(tiny):
    """decode(z) = vae.decode(z / s).sample and encode(x) = s vae.encode(x).latent_dist.mean, called on diffusers'
    AutoencoderKL directly, with s = 0.18215 read from the prior's YAML (SD's factor); naive(y) on latents (CCDF's start)
    is the encoded pixel naive image, and a v-model's output becomes eps = sqrt(abar_t) v + sqrt(1 - abar_t) z_t with
    abar_t from diffusers' scheduler."""
    s = float(OmegaConf.load(CONF / "prior" / "sd2_tiny.yaml").vae.scaling_factor)
    assert s == 0.18215 and tiny.sample_shape == (4, 8, 8) and tiny.image_size == 32 and tiny.kind == "latent"
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, *tiny.sample_shape, generator=g)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        image = tiny.vae.decode(z / s).sample
        torch.testing.assert_close(tiny.decode(z), image, rtol=0, atol=1e-6)
        latent = s * tiny.vae.encode(x).latent_dist.mean
        torch.testing.assert_close(tiny.encode(x), latent, rtol=0, atol=1e-7)
        # the factor matters for these networks: without it both are far off
        assert (tiny.vae.decode(z).sample - image).abs().max() > 1e-2
        assert (tiny.vae.encode(x).latent_dist.mean - latent).abs().max() > 1e-2
        op = SuperResolution(4)
        y = op(x)
        torch.testing.assert_close(DecodedOperator(op, tiny).naive(y), s * tiny.vae.encode(op.naive(y)).latent_dist.mean,
                                   rtol=0, atol=1e-7)
        t = torch.tensor([10, 700])
        eps = tiny.predict(z, t)[0]
        raw = tiny.unet(z, t, encoder_hidden_states=tiny.text_embedding.expand(2, -1, -1)).sample
        tiny.prediction_type = "v_prediction"
        try:
            as_v = tiny.predict(z, t)[0]
        finally:
            tiny.prediction_type = "epsilon"
    assert torch.equal(eps, raw)
    abar = DDPMScheduler(**SD).alphas_cumprod[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(as_v, abar.sqrt() * raw + (1 - abar).sqrt() * z, rtol=0, atol=2e-6)
    assert not torch.allclose(as_v, raw, atol=1e-3)


def test_dps_gradient_goes_through_the_decoder_and_is_counted(tiny):
    """The guidance gradient equals a finite difference of ||y - A(D(z0_hat(z)))|| (float64), and every VJP
    of the chain is counted as a decoder VJP."""
    prior = tiny.double()
    try:
        op, noise = DecodedOperator(SuperResolution(4), prior), GaussianNoise(0.05)
        g = torch.Generator().manual_seed(3)
        x0 = torch.rand(1, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1
        y = op.operator(x0)
        sampler = built_sampler({"name": "dps", "method": "dps", "respacing": "4", "zeta": 1.0})
        diffusion = sampler.diffusion(prior)
        z = torch.randn(1, *prior.sample_shape, generator=g, dtype=torch.float64)
        grad = sampler.measurement_gradient(prior, diffusion, op, noise, y, z, 2).grad

        def loss(zz):
            with torch.no_grad():
                eps = prior.predict(zz, diffusion.model_t(2, 1))[0]
                return float(noise.misfit(y, op.operator(prior.decode(diffusion.x0_from_eps(zz, 2, eps)))))

        d = torch.randn(z.shape, generator=g, dtype=torch.float64)
        h = 1e-5
        fd = (loss(z + h * d) - loss(z - h * d)) / (2 * h)
        assert abs(float((grad * d).sum()) - fd) < 1e-5 * max(1.0, abs(fd))
        stats = sampler.run(prior, op, noise, y, (1, *prior.sample_shape), torch.Generator().manual_seed(0)).stats
        assert stats["vjp"] == 4 and stats["decoder_vjp"] == 4
        assert stats["decoder_forward"] == 0
    finally:
        tiny.float()


# -- PSLD and FreeDoM against references ------------------------------------------------------------------
def _sample(prior, method, op, y, seed=0, **kw):
    sampler = built_sampler({"name": method, "method": method, "respacing": "4", "clip_x0": False, **kw})
    steps = []
    z = sampler.sample(prior, op, GaussianNoise(0.05), y, (1, *prior.sample_shape), torch.Generator().manual_seed(seed),
                       hooks=[steps.append])
    return z, steps


def test_psld_without_gluing_and_freedom_without_time_travel_are_dps(tiny):
    op = DecodedOperator(SuperResolution(4), tiny)
    y = op.operator(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    dps = _sample(tiny, "dps", op, y, zeta=2.0)[0]
    assert torch.allclose(_sample(tiny, "psld", op, y, zeta=2.0, gamma=0.0)[0], dps, atol=1e-5)
    assert torch.allclose(_sample(tiny, "freedom", op, y, zeta=2.0, repeat=1)[0], dps, atol=1e-5)
    assert not torch.allclose(_sample(tiny, "psld", op, y, zeta=2.0, gamma=1.0)[0], dps, atol=1e-3)
    assert not torch.allclose(_sample(tiny, "freedom", op, y, zeta=2.0, repeat=3)[0], dps, atol=1e-3)


def test_freedom_time_travel_is_a_dps_step_renoised_one_step_forward(tiny):
    """Inside the window, a FreeDoM step with repeat=2 = DPS step, x_t <- sqrt(alpha_t) x_{t-1} + sqrt(1 - alpha_t) n
    (Yu et al. eq. 11, with alpha_t of the respaced chain), DPS step again, with the same random draws."""
    from dps_map.samplers.base import randn

    op = DecodedOperator(SuperResolution(4), tiny)
    y = op.operator(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    noise, i = GaussianNoise(0.05), 2  # 2 / 4 lies in the window [0.3, 0.7)
    x_t = torch.randn(1, *tiny.sample_shape, generator=torch.Generator().manual_seed(5))
    freedom = built_sampler({"name": "freedom", "method": "freedom", "respacing": "4", "zeta": 2.0,
                                              "repeat": 2})
    dps = built_sampler({"name": "dps", "method": "dps", "respacing": "4", "zeta": 2.0})
    ours = freedom.transition(tiny, op, noise, y, x_t, i, torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(6)
    beta = float(Diffusion(tiny.betas, "4").betas[i])
    x_prev = dps.transition(tiny, op, noise, y, x_t, i, g)
    x_again = (1 - beta) ** 0.5 * x_prev + beta**0.5 * randn(x_t.shape, g, x_t.dtype, x_t.device)
    torch.testing.assert_close(ours, dps.transition(tiny, op, noise, y, x_again, i, g), rtol=0, atol=1e-5)


def test_psld_gradient_matches_finite_differences_of_its_objective(tiny):
    """PSLD's gradient (from its hook) against central differences of zeta ||y - A D(z0)|| + gamma ||z0 - E(A^T y +
    (I - A^T A) D(z0))||, evaluated without autograd and with the explicit adjoint of average pooling (float64)."""
    prior = tiny.double()
    try:
        A = SuperResolution(4, "avgpool")
        op = DecodedOperator(A, prior)
        g = torch.Generator().manual_seed(4)
        y = A(torch.rand(1, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1)
        zeta, gamma = 0.7, 0.3
        _, steps = _sample(prior, "psld", op, y, zeta=zeta, gamma=gamma)
        step = steps[1]  # i = 2
        diffusion = Diffusion(prior.betas, "4")

        def objective(z):
            with torch.no_grad():
                eps = prior.predict(z, diffusion.model_t(step.i, 1))[0]
                z0 = diffusion.x0_from_eps(z, step.i, eps)
                x0 = prior.decode(z0)
                up = lambda v: v.repeat_interleave(4, -2).repeat_interleave(4, -1) / 16  # noqa: E731  A^T of avgpool
                glued = up(y) + x0 - up(A(x0))
                return float(zeta * (y - A(x0)).norm() + gamma * (z0 - prior.encode(glued)).norm())

        d = torch.randn(step.x_t.shape, generator=g, dtype=torch.float64)
        h = 1e-5
        fd = (objective(step.x_t + h * d) - objective(step.x_t - h * d)) / (2 * h)
        assert abs(float((step.grad * d).sum()) - fd) < 1e-5 * max(1.0, abs(fd))
    finally:
        tiny.float()


# -- every sampler end to end through dps_map.run ---------------------------------------------------------
@pytest.mark.parametrize("sampler, vjp", [("ddpm", 0), ("dps", 3), ("dsg", 3), ("dmap", 6), ("dmap_adam", 6), ("psld", 3),
                                          ("freedom", 5),  # freedom: i = 2, 1 of 3 lie in its time-travel window
                                          ("psld_rout", 3),
                                          ("freedom_yu", 12)])  # i = 2 lies in its window: 10 passes
def test_every_sampler_end_to_end(sampler, vjp, tmp_path):
    cfg = config("prior=sd2_tiny", "task=sr4", f"sampler={sampler}", "data=demo", "data.per_photo=1",
                 "+data.photos=[chelsea]", "sampler.respacing=3", "metrics=fast")
    summary = run(cfg, tmp_path)
    assert summary["n_samples"] == 1 and summary["n_failed"] == 0
    recs = read_jsonl(tmp_path / "metrics.jsonl")
    assert recs[0]["vjp"] == vjp and recs[0]["decoder_vjp"] == vjp
    assert abs(recs[0]["psnr"] - png_psnr(tmp_path / "recon" / "chelsea_0_0.png", tmp_path / "label" / "chelsea_0.png")) < 0.1

    with Image.open(tmp_path / "recon" / "chelsea_0_0.png") as im:
        assert im.size == (32, 32)  # decoded images, not latents
    assert summary["cost"]["vjp_per_sample"] == vjp


# -- the folder loader --------------------------------------------------------------------------------
def test_missing_folder_is_one_line_exit_2(tmp_path):
    proc = run_with_guard([sys.executable, "-m", "dps_map.run", "prior=sd2_base", "paths.sd2_base=/nonexistent",
                           f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, cpu_limit=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "/nonexistent" in lines[0] and "paths.sd2_base=" in lines[0] and "DPS_MAP_SD2_BASE" in lines[0]


def save_folder(prior, root: Path, text_encoder_state) -> None:
    """A diffusers folder of the tiny prior (safetensors), with a tiny CLIP tokenizer whose empty prompt is
    [bos, eos, eos, ...] like sd2_tiny's."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    prior.unet.save_pretrained(root / "unet", safe_serialization=True)
    prior.vae.save_pretrained(root / "vae", safe_serialization=True)
    DDPMScheduler(**SD).save_config(root / "scheduler")
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "prior" / "sd2_tiny.yaml").text_encoder)
    text_encoder = CLIPTextModel(CLIPTextConfig(**cfg))
    text_encoder.load_state_dict(text_encoder_state)
    text_encoder.save_pretrained(root / "text_encoder", safe_serialization=True)
    (root / "tok").mkdir()
    vocab = {chr(97 + k): k for k in range(26)} | {"<|startoftext|>": cfg["bos_token_id"], "<|endoftext|>": cfg["eos_token_id"]}
    (root / "tok" / "vocab.json").write_text(json.dumps(vocab))
    (root / "tok" / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(root / "tok" / "vocab.json"), str(root / "tok" / "merges.txt"),
                  model_max_length=77).save_pretrained(root / "tokenizer")


def test_folder_loads_caches_the_embedding_and_refuses_missing_files(tiny, tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = OmegaConf.load(CONF / "prior" / "sd2_tiny.yaml")
    with torch.random.fork_rng(devices=[]):  # the text encoder sd2_tiny built (same seed, same order)
        torch.manual_seed(0)
        from diffusers import AutoencoderKL, UNet2DConditionModel

        UNet2DConditionModel(**OmegaConf.to_container(cfg.unet))
        AutoencoderKL(**OmegaConf.to_container(cfg.vae))
        state = CLIPTextModel(CLIPTextConfig(**OmegaConf.to_container(cfg.text_encoder))).state_dict()
    root = tmp_path / "sd2"
    save_folder(tiny, root, state)
    cache = tmp_path / "cache" / "empty.safetensors"
    folder_cfg = OmegaConf.create({"name": "sd2_folder", "kind": "latent", "_target_": "dps_map.priors.latent.latent_prior",
                                   "source": "folder", "path": str(root),
                                   "embedding_cache": str(cache), "image_size": 32, "noise_schedule": "scaled_linear",
                                   "beta_start": 0.00085, "beta_end": 0.012, "diffusion_steps": 1000,
                                   "prediction_type": None})
    loaded = build_prior(folder_cfg)
    assert cache.is_file()
    torch.testing.assert_close(loaded.text_embedding, tiny.text_embedding)
    z = torch.randn(1, *tiny.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict(z, torch.tensor([500]))[0], tiny.predict(z, torch.tensor([500]))[0])
    np.testing.assert_allclose(loaded.betas, tiny.betas, rtol=1e-6)
    # with the embedding cached, the text encoder is no longer needed
    import shutil

    shutil.rmtree(root / "text_encoder")
    check_folder(root, cache)
    torch.testing.assert_close(build_prior(folder_cfg).text_embedding, tiny.text_embedding)
    with pytest.raises(MissingFileError, match="text_encoder/config.json"):  # needed while nothing is cached
        check_folder(root, None)
    # an incomplete folder names the missing file and the override
    (root / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(MissingFileError, match=r"vae/diffusion_pytorch_model\.safetensors.*paths\.sd2_base="):
        check_folder(root, cache)


# -- the ControlNet estimator ---------------------------------------------------------------------------
def test_controlnet_at_zero_init_is_the_prior_and_drives_the_adapter_samplers(tiny, tmp_path):
    from dps_map.priors.latent import LatentControlNetPrior, build_controlnet

    controlnet = build_controlnet(tiny)
    op = SuperResolution(4)
    y = op(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    conditional = LatentControlNetPrior(tiny, controlnet).condition(DecodedOperator(op, tiny), y)
    assert conditional.hint.shape == (1, 3, 32, 32)
    z = torch.randn(2, *tiny.sample_shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([900, 30])
    with torch.no_grad():
        bare = tiny.predict(z, t)[0]
        torch.testing.assert_close(conditional.predict(z, t)[0], bare, rtol=0, atol=1e-6)  # zero convs: no residual
        for block in controlnet.controlnet_down_blocks:  # a trained (non-zero) ControlNet changes eps
            block.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
        assert (conditional.predict(z, t)[0] - bare).abs().max() > 1e-4
    controlnet.save_pretrained(tmp_path / "controlnet", safe_serialization=True)
    for sampler, (forward, vjp) in {"adapter": (3, 0), "adapter_dps": (0, 3), "adapter_dmap": (3, 6),
                                    "adapter_dsg": (0, 3)}.items():
        out = tmp_path / sampler
        summary = run(config("prior=sd2_tiny", "task=sr4", f"sampler={sampler}", f"sampler.adapter={tmp_path / 'controlnet'}",
                             "data=demo", "data.per_photo=1", "+data.photos=[chelsea]", "sampler.respacing=3",
                             "metrics=fast"), out)
        rec = read_jsonl(out / "metrics.jsonl")[0]
        assert summary["n_samples"] == 1 and (rec["forward"], rec["vjp"], rec["decoder_vjp"]) == (forward, vjp, vjp)
        assert (out / "recon" / "chelsea_0_0.png").exists()
    # the adapter belongs to the prior: sampler=dps prior.adapter=FOLDER is adapter_dps, bit for bit
    common = ["prior=sd2_tiny", "task=sr4", "data=demo", "data.per_photo=1", "+data.photos=[chelsea]",
              "sampler.respacing=3", "metrics=fast"]
    zeta = config(*common, "sampler=adapter_dps").sampler.zeta
    run(config(*common, "sampler=dps", f"sampler.zeta={zeta}", f"prior.adapter={tmp_path / 'controlnet'}"), tmp_path / "dps")
    for name in ("metrics.jsonl", "recon/chelsea_0_0.png"):
        mine, preset = ((tmp_path / d / name).read_bytes() for d in ("dps", "adapter_dps"))
        if name.endswith(".jsonl"):
            mine, preset = ([{k: v for k, v in r.items() if k != "seconds"} for r in map(json.loads, b.splitlines())]
                            for b in (mine, preset))
        assert mine == preset, name


def test_train_adapter_trains_resumes_and_exports_a_controlnet(tmp_path):
    from dps_map.training.adapter import run as train_run
    from dps_map.training.latent_controlnet import augment

    def cfg(*extra):
        return compose("prior=sd2_tiny", "task=sr4", "device=cpu", "batch_size=2", "data.n_images=4", "warmup=0",
                       "lr=1e-3", "save_every=1", "progress_mininterval=60", f"out_dir={tmp_path / 'train'}",
                       f"export_path={tmp_path / 'sr4_sd2_tiny.pt'}", "augment.crop_scale=[0.5,1.0]",
                       "augment.jitter=0.2", *extra, config="train_adapter")

    card = train_run(cfg("steps=2"))
    assert card["training"]["steps"] == 2 and card["operator"]["class"] == "SuperResolution"
    card = train_run(cfg("steps=3"))  # resumes from out_dir/checkpoint.pt
    state = torch.load(tmp_path / "train" / "checkpoint.pt", weights_only=True)
    assert card["training"]["steps"] == 3 and len(state["losses"]) == 3
    folder = tmp_path / "sr4_sd2_tiny"  # the .pt suffix is dropped: a ControlNet is a folder
    assert (folder / "config.json").is_file() and (folder / "diffusion_pytorch_model.safetensors").is_file()
    # trained: the zero convolutions moved, so the conditional eps differs from the prior's
    from dps_map.priors.latent import load_controlnet

    controlnet, meta = load_controlnet(tmp_path / "sr4_sd2_tiny.pt")
    assert meta["operator"] == card["operator"]
    assert max(float(b.weight.abs().max()) for b in controlnet.controlnet_down_blocks) > 0
    # the sampler uses it (paths.adapter-style .pt path finds the folder); another task's operator is refused
    summary = run(config("prior=sd2_tiny", "task=sr4", "sampler=adapter_dps", f"sampler.adapter={tmp_path / 'sr4_sd2_tiny.pt'}",
                         "data=demo", "data.per_photo=1", "+data.photos=[chelsea]", "sampler.respacing=2"), tmp_path / "run")
    assert summary["n_samples"] == 1
    from dps_map.errors import ConfigError

    with pytest.raises(ConfigError, match="trained for operator"):
        run(config("prior=sd2_tiny", "task=gaussian_deblur", "sampler=adapter_dps", f"sampler.adapter={folder}",
                   "data=demo", "data.per_photo=1", "+data.photos=[chelsea]", "sampler.respacing=2"), tmp_path / "run2")
    # augmentation: identity when off; crops/jitter stay images in [-1, 1]
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    g = torch.Generator().manual_seed(1)
    assert torch.equal(augment(x, g, (1.0, 1.0), False, 0.0), x)
    out = augment(x, g, (0.5, 1.0), True, 0.3)
    assert out.shape == x.shape and float(out.abs().max()) <= 1 and not torch.allclose(out, x)


# -- +experiment=paper_sd2 --------------------------------------------------------------------------------
def test_paper_sd2_preset_validates_every_job_and_runs_scaled_down(tmp_path):

    from dps_map.run import check_command_line

    root = tmp_path / "sd2"  # a folder with every file the loader checks (validate() does not build the prior)
    for rel in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("{}")
    ckpt = tmp_path / "ckpt"
    (ckpt / "sd2_base_empty_prompt.safetensors").parent.mkdir()
    (ckpt / "sd2_base_empty_prompt.safetensors").write_text("")
    for task in ("sr8", "gaussian_deblur", "motion_deblur"):
        (ckpt / "adapters" / f"{task}_sd2_base").mkdir(parents=True)
        (ckpt / "adapters" / f"{task}_sd2_base" / "config.json").write_text("{}")
    val = tmp_path / "val"
    val.mkdir()
    for k in range(2):
        Image.fromarray((np.random.default_rng(k).random((40, 40, 3)) * 255).astype(np.uint8)).save(val / f"v{k}.png")
    paths = [f"paths.sd2_base={root}", f"paths.checkpoints={ckpt}", f"paths.imagenet_val={val}"]
    # the two sweeps of `make reproduce-paper-sd2`
    sr = check_command_line(["+experiment=paper_sd2", "task=sr8", "sampler=dps,psld,freedom,dsg,adapter_dps",
                             *paths], multirun=True)
    deblur = check_command_line(["+experiment=paper_sd2", "task=gaussian_deblur,motion_deblur",
                                 "sampler=dps,psld,freedom,dsg,adapter_dps", *paths],
                                multirun=True)
    assert len(sr) == 5 and len(deblur) == 10
    for job in sr + deblur:
        cfg = job.cfg
        assert (cfg.prior.name, cfg.prior.image_size, cfg.sampler.respacing, cfg.task.sigma_y) == ("sd2_base", 512, "500", 0.0)
        assert cfg.data.max_images == 1000 and "fid" in cfg.metrics.names
        assert cfg.sampler.guidance_units == "euler"  # the authors' units (tests/test_sd2_faithful.py)
        if cfg.sampler.name in ("dps", "psld", "freedom", "adapter_dps"):
            assert cfg.sampler.zeta == (4.8 if cfg.task.name == "sr8" else 0.6)
    # scaled down: the tiny latent prior on 2 images, 2 steps
    summary = run(config("+experiment=paper_sd2", "prior=sd2_tiny", "task=sr8", "sampler=psld", "sampler.respacing=2",
                         "metrics=fast", *paths), tmp_path / "run")
    assert summary["n_samples"] == 2 and summary["metrics"]["misfit"]["mean"] is not None


def test_preflight_trial_runs_on_the_latent_prior():
    from dps_map.preflight import trial

    t = trial(config("prior=sd2_tiny", "task=sr4", "sampler=psld", "data=demo", "data.per_photo=1",
                     "+data.photos=[chelsea]", "sampler.respacing=5"), steps=2)
    assert (t["forward_per_step"], t["vjp_per_step"]) == (0, 1) and t["seconds_per_step"] > 0


def test_perf_knobs_gradient_checkpointing_keeps_the_gradient_and_bf16_stays_close(tiny):
    op, noise = DecodedOperator(SuperResolution(4), tiny), GaussianNoise(0.05)
    y = op.operator(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    z = torch.randn(1, *tiny.sample_shape, generator=torch.Generator().manual_seed(1))
    sampler = built_sampler({"name": "dps", "method": "dps", "respacing": "4", "zeta": 1.0})
    diffusion = sampler.diffusion(tiny)
    plain = sampler.measurement_gradient(tiny, diffusion, op, noise, y, z, 2).grad
    try:
        tiny.configure_perf(grad_checkpoint=True)
        assert tiny.unet.is_gradient_checkpointing and tiny.vae.is_gradient_checkpointing
        torch.testing.assert_close(sampler.measurement_gradient(tiny, diffusion, op, noise, y, z, 2).grad, plain,
                                   rtol=1e-5, atol=1e-6)
        tiny.configure_perf(precision="bf16")
        assert not tiny.unet.is_gradient_checkpointing
        with torch.no_grad():
            low, full = tiny.predict(z, torch.tensor([500]))[0], None
        tiny.configure_perf()
        with torch.no_grad():
            full = tiny.predict(z, torch.tensor([500]))[0]
        assert low.dtype == torch.float32 and (low - full).norm() / full.norm() < 0.05 and not torch.equal(low, full)
    finally:
        tiny.configure_perf()
