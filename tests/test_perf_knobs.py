"""GPU knobs of the ADM prior, checked for equivalence on the CPU, and the lean step loop.

torch.compile is tested for its wiring with the 'eager' backend (dynamo traces the network, no code
generation): inductor compiles C++ for minutes on a CPU, too slow for a unit test."""

import logging

import pytest
import torch
from omegaconf import OmegaConf

from dps_map.config import prepare_perf
from dps_map.diffusion import Diffusion, make_betas
from dps_map.errors import ConfigError
from dps_map.operators import GaussianNoise, SuperResolution
from dps_map.priors.adm import ADMPrior, build_unet
from dps_map.samplers import DDPMSampler, DMAPSampler, DPSSampler, DSGSampler

from support import shipped_prior

SMALL = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
             num_head_channels=32, learn_sigma=True, class_cond=True, use_scale_shift_norm=True,
             resblock_updown=True)


def small_unet(**over):
    """A small ADM UNet whose zero-initialised layers (ADM's zero_module) get random weights, so the
    output depends on every block (a zero output would hide any difference)."""
    torch.manual_seed(0)
    model = build_unet(SMALL | over)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def make_prior(**over):
    return ADMPrior(small_unet(**over), make_betas(), learn_sigma=True, class_cond=True, class_label=3)


@pytest.fixture()
def prior():
    return make_prior()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(2)
    return torch.randn(2, 3, 16, 16, generator=g), torch.tensor([10, 700]), torch.randn(2, 3, 16, 16, generator=g)


def vjp(prior, x, t, v):
    x_in = x.clone().requires_grad_(True)
    eps, _ = prior.predict(x_in, t)
    return eps.detach(), torch.autograd.grad(eps, x_in, v)[0]


def test_network_call_equals_guided_diffusion_forward(prior, inputs):
    """The device-cached time embedding reproduces UNetModel.forward bit for bit."""
    x, t, _ = inputs
    with torch.no_grad():
        ref = prior.model(x, t, y=torch.tensor([3, 3]))
        eps, var = prior.predict(x, t)
    assert float(ref[:, :3].abs().max()) > 0.1  # a network that actually computes something
    assert torch.equal(eps, ref[:, :3]) and torch.equal(var, ref[:, 3:])


def test_class_labels_cached_on_device_follow_set_class_labels(prior, inputs):
    x, t, _ = inputs
    with torch.no_grad():
        first = prior.predict(x, t)[0]
        prior.set_class_labels(5)
        second = prior.predict(x, t)[0]
        ref = prior.model(x, t, y=torch.tensor([5, 5]))[:, :3]
    assert not torch.equal(first, second)
    assert torch.equal(second, ref)


def test_channels_last_is_numerically_the_same(prior, inputs):
    x, t, v = inputs
    eps0, g0 = vjp(prior, x, t, v)
    prior.configure_perf(channels_last=True)
    conv = prior.model.input_blocks[0][0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    eps1, g1 = vjp(prior, x, t, v)
    assert eps1.stride() == eps0.stride()  # the samplers get ordinary (NCHW) tensors back
    torch.testing.assert_close(eps1, eps0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-4)  # summation order differs in NHWC
    prior.configure_perf()
    assert conv.weight.is_contiguous() and torch.equal(vjp(prior, x, t, v)[0], eps0)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_low_precision_is_close_and_returns_fp32(prior, inputs, dtype):
    x, t, v = inputs
    eps0, g0 = vjp(prior, x, t, v)
    prior.configure_perf(precision=dtype)
    eps1, g1 = vjp(prior, x, t, v)
    assert eps1.dtype == g1.dtype == torch.float32
    assert not torch.equal(eps1, eps0)  # the network really ran in low precision
    rel = float((eps1 - eps0).norm() / eps0.norm())
    rel_g = float((g1 - g0).norm() / g0.norm())
    tol = 0.03 if dtype == "bf16" else 0.005  # bf16 has an 8-bit mantissa, fp16 11 bits
    assert rel < tol and rel_g < 2 * tol, (rel, rel_g)


def count_saved(prior, x, t):
    n = [0]

    def pack(tensor):
        n[0] += 1
        return tensor

    x_in = x.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        prior.predict(x_in, t)
    return n[0]


def test_grad_checkpoint_gives_equal_gradients_and_stores_less(prior, inputs):
    x, t, v = inputs
    eps0, g0 = vjp(prior, x, t, v)
    stored = count_saved(prior, x, t)
    prior.configure_perf(grad_checkpoint=True)
    eps1, g1 = vjp(prior, x, t, v)
    assert torch.equal(eps1, eps0)
    torch.testing.assert_close(g1, g0, rtol=0, atol=0)
    assert count_saved(prior, x, t) < stored / 2  # activations are recomputed, not kept
    prior.configure_perf()
    assert count_saved(prior, x, t) == stored


def test_unet_use_checkpoint_flag_runs_torch_checkpoint(inputs):
    """prior.unet.use_checkpoint=true: guided_diffusion's CheckpointFunction is bypassed for
    torch.utils.checkpoint; the gradient equals the plain network's."""
    x, t, v = inputs
    plain = make_prior()
    ckpt = make_prior(use_checkpoint=True)
    ckpt.model.load_state_dict(plain.model.state_dict())
    assert ckpt.perf["grad_checkpoint"] is True
    assert not any(getattr(m, "use_checkpoint", False) for m in ckpt.model.modules() if hasattr(m, "_forward"))
    assert count_saved(ckpt, x, t) < count_saved(plain, x, t) / 2
    e0, g0 = vjp(plain, x, t, v)
    e1, g1 = vjp(ckpt, x, t, v)
    assert torch.equal(e0, e1) and torch.equal(g0, g1)


def test_compile_wiring_with_eager_backend(prior, inputs):
    x, t, v = inputs
    eps0, g0 = vjp(prior, x, t, v)
    prior.configure_perf(compile=True, compile_backend="eager")
    assert prior.perf["compile"] and prior._network is not prior._unet_forward
    eps1, g1 = vjp(prior, x, t, v)
    torch.testing.assert_close(eps1, eps0, rtol=0, atol=0)
    torch.testing.assert_close(g1, g0, rtol=1e-6, atol=1e-7)
    prior.configure_perf()
    assert prior._network == prior._unet_forward


def test_default_perf_config_is_the_plain_network(prior, inputs):
    x, t, _ = inputs
    with torch.no_grad():
        ref = prior.predict(x, t)[0]
        prepare_perf(OmegaConf.to_container(OmegaConf.load("conf/perf/default.yaml")), "cpu", prior)
        assert torch.equal(prior.predict(x, t)[0], ref)
    assert prior.perf == {"precision": "fp32", "channels_last": False, "compile": False, "grad_checkpoint": False}


def test_bad_perf_settings_are_config_errors(prior):
    with pytest.raises(ConfigError, match="precision"):
        prior.configure_perf(precision="int8")
    with pytest.raises(ConfigError, match="perf.autocast is now perf.precision"):
        prepare_perf({"autocast": "bf16"}, "cpu", prior)
    with pytest.raises(ConfigError, match="unknown perf keys"):
        prior.configure_perf(channel_last=True)


def test_gmm_prior_ignores_knobs_with_a_warning(caplog):
    gmm = shipped_prior("gmm")
    with caplog.at_level(logging.WARNING):
        assert gmm.configure_perf(precision="bf16", channels_last=False) is gmm
    assert "precision" in caplog.text


# -- the step loop ------------------------------------------------------------------------------------
SAMPLERS = [DDPMSampler(respacing="4"), DPSSampler(zeta=0.5, respacing="4"), DSGSampler(w=0.3, respacing="4"),
            DMAPSampler(zeta=0.3, num_inner=2, respacing="4"), DMAPSampler(zeta=0.3, project=False, respacing="4")]


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    op, noise = SuperResolution(4), GaussianNoise(0.05)
    y = noise.sample(op(torch.rand(1, 3, 16, 16, generator=g) * 2 - 1), g)
    return make_prior(), op, noise, y.expand(3, -1, -1, -1)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: f"{s.name}")
def test_step_loop_has_no_host_sync_and_no_host_copies(problem, sampler, monkeypatch):
    """Nothing in the loop reads a tensor back to Python (.item(), bool(), int(), float(), tolist():
    each a device sync on CUDA) or copies the timestep index from the host at each step."""
    prior, op, noise, y = problem

    def forbidden(*args, **kwargs):
        raise AssertionError("host-device sync or per-step host copy inside the step loop")

    for name in ("item", "__bool__", "__int__", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    monkeypatch.setattr(Diffusion, "model_t", forbidden)
    x = sampler.sample(prior, op, noise, y, (3, 3, 16, 16), torch.Generator().manual_seed(0))
    monkeypatch.undo()
    assert x.shape == (3, 3, 16, 16) and torch.isfinite(x).all()
    copies = [key for key in sampler.diffusion(prior)._cache if key[0] == "timesteps"]
    assert copies == [("timesteps", x.device)]  # one copy of the timesteps for the whole run


@pytest.mark.parametrize("sampler", SAMPLERS[1:], ids=lambda s: f"{s.name}")
def test_no_graph_survives_a_step(problem, sampler):
    prior, op, noise, y = problem
    seen = []
    x = sampler.sample(prior, op, noise, y, (3, 3, 16, 16), torch.Generator().manual_seed(0),
                       hooks=[seen.append])
    assert x.grad_fn is None and not x.requires_grad
    for step in seen:
        for tensor in (step.x_t, step.x0_hat, step.eps, step.mean, step.x_prev, step.grad):
            assert tensor is None or (tensor.grad_fn is None and not tensor.requires_grad)


def test_samples_are_one_batch(problem):
    """num_samples are drawn as one batch: the network sees the whole batch at every call."""
    prior, op, noise, y = problem
    blocks = []
    handle = prior.model.input_blocks[0].register_forward_pre_hook(lambda m, args: blocks.append(args[0].shape[0]))
    try:
        DPSSampler(zeta=0.5, respacing="3").sample(prior, op, noise, y, (3, 3, 16, 16),
                                                   torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert blocks == [3, 3, 3]


def test_the_runner_times_a_sampler_call_between_two_device_syncs(problem, monkeypatch):
    """Samplers keep no clock (runner/timing.py times them): sample_units reads the clock around sampler.run,
    each read after the device's queued work is waited for (an unsynchronised CUDA clock times the launch)."""
    from types import SimpleNamespace

    from dps_map.runner import MeasurementUnit, sample_units, timing

    prior, op, noise, y = problem
    events, clock = [], iter([10.0, 12.5])

    def read_clock():
        events.append("clock")
        return next(clock)

    class Counted(DPSSampler):
        def step(self, *args):
            events.append("step")
            return super().step(*args)

    monkeypatch.setattr(timing, "sync", lambda device: events.append("sync"))
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=read_clock))
    unit = MeasurementUnit(None, op, None, y[:1], None, None, None, prior, [0, 1], [0, 1], torch.Generator())
    sampled = sample_units(prior, Counted(zeta=0.5, respacing="4"), noise, [unit])
    assert events == ["sync", "clock", *["step"] * 4, "sync", "clock"]
    assert sampled.seconds == 2.5 and "seconds" not in sampled.result.stats
    assert sampled.result.stats["steps"] == 4 and sampled.x.shape == (2, 3, 16, 16)


def test_divergence_check_syncs_once_every_check_every_steps(problem, monkeypatch):
    """The only host read in the loop: whether the whole batch has diverged, every CHECK_EVERY steps."""
    prior, op, noise, y = problem
    sampler = DPSSampler(zeta=0.3, respacing="25")
    calls = []
    real = torch.Tensor.__bool__

    def counted(self):
        calls.append(self.shape)
        return real(self)

    monkeypatch.setattr(torch.Tensor, "__bool__", counted)
    result = sampler.run(prior, op, noise, y, (3, 3, 16, 16), torch.Generator().manual_seed(0))
    monkeypatch.undo()
    assert torch.isfinite(result.x0).all() and result.stats["steps"] == 25
    assert calls == [torch.Size([])] * (24 // sampler.CHECK_EVERY)  # at steps 10 and 20, never at the last


def test_compile_makes_one_graph_per_kind_of_call_with_a_dynamic_batch(prior):
    """A DMAP chain at batch 2, 2, 1, 4: the no-grad forward and the VJP each compile once for batch 1 and once
    for any other batch (dynamo specialises size 1), never per step or per batch size: at most 4 graphs, so
    dynamo's recompile limit (after which it would run uncompiled, silently) is never reached."""
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()  # a dynamo backend that counts the graphs it is handed, then runs them eagerly
    prior.configure_perf(compile=True, compile_backend=counter)
    sampler = DMAPSampler(zeta=0.3, num_inner=2, respacing="3")
    op, noise = SuperResolution(4), GaussianNoise(0.05)
    try:
        for batch in (2, 2, 1, 4):
            y = torch.zeros(batch, 3, 4, 4)
            x = sampler.sample(prior, op, noise, y, (batch, 3, 16, 16), torch.Generator().manual_seed(batch))
            assert torch.isfinite(x).all()
    finally:
        torch._dynamo.reset()
    assert counter.frame_count <= 4, counter.frame_count
    assert counter.frame_count >= 2  # the forward and the VJP were compiled at all
