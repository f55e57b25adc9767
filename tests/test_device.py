"""What a GPU run relies on, checked on this CPU: the problems are drawn on the CPU whatever the device (and run
on "cuda" under torch's FakeTensorMode, which makes cuda tensors without a GPU and raises on device mixing),
one resolved precision per run (recorded, contradictions refused), the backend switches, the SD2 VAE in fp32,
the operators' deterministic backward paths, and batch_size capping stacked measurements."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from dps_map.config import perf_record, prepare_perf, resolve_precision, validate
from dps_map.config.targets import build_noise
from dps_map.errors import ConfigError
from dps_map.operators import SuperResolution
from dps_map.operators.blur import Blur, gaussian_kernel, reflect_index
from dps_map.runner import draw_measurement, load_items, measure, run
from dps_map.runner.execute import to_device
from dps_map.runner.rundir import claim_run_dir

from support import compose, shipped_prior

IMAGE_TASKS = ["sr4", "sr8", "inpaint_box", "inpaint_random", "gaussian_deblur", "motion_deblur"]


@pytest.fixture(autouse=True)
def _restore_backends():
    yield
    prepare_perf({}, "cpu")  # the switches are process-wide: leave them as every other test expects


# -- the measurement on a cuda device ----------------------------------------------------------------------
@pytest.mark.parametrize("task", IMAGE_TASKS)
def test_every_image_task_measures_on_cuda_without_a_cuda_generator(task):
    """measure(device=cuda) draws the mask, kernel and noise on the CPU and moves them: no CUDA generator (this
    machine cannot make one), and every tensor the samplers touch is on cuda (FakeTensorMode raises on a
    cpu/cuda mix). The cuda problem is the CPU problem: same y, same mask or kernel."""
    cfg = compose("prior=tiny", f"task={task}", "data=demo", "data.per_photo=1")
    item = load_items(cfg.data, 64)[0]
    noise = build_noise(cfg.task)
    drawn = draw_measurement(cfg, item, 64, noise)  # for real: a fake tensor has no numbers to read back
    _, op_cpu, x0_cpu, y_cpu = drawn
    _, _, x0_m, y_m = measure(cfg, item, 64, noise, torch.device("cpu"))
    assert torch.equal(x0_m, x0_cpu) and torch.equal(y_m, y_cpu)
    cpu_parts = {k: v.clone() for k, v in vars(op_cpu).items() if isinstance(v, torch.Tensor)}
    with FakeTensorMode(allow_non_fake_inputs=True):
        gen, operator, x0, y = to_device(drawn, torch.device("cuda"))  # (moves the operator in place)
        assert gen.device.type == "cpu"
        for tensor in (x0, y, *(v for v in vars(operator).values() if isinstance(v, torch.Tensor))):
            assert tensor.device.type == "cuda"
        x = torch.zeros_like(x0).expand(2, -1, -1, -1)
        ax = operator(x)  # FakeTensorDeviceMismatchError on a cpu tensor left inside
        assert ax.device.type == "cuda" and noise.misfit(y.expand_as(ax), ax).device.type == "cuda"
        for method in ("naive", "restrict", "transpose"):  # (autograd's engine, the VJPs, needs a real GPU)
            assert getattr(operator, method)(y.expand_as(ax)).device.type == "cuda"
    _, op_again, _, y_again = draw_measurement(cfg, item, 64, noise)
    assert torch.equal(y_again, y_cpu)  # the draw depends on (seed, id) only
    for name, value in cpu_parts.items():
        assert torch.equal(value, vars(op_again)[name])


# -- one precision per run -------------------------------------------------------------------------------
def test_precision_auto_is_fp16_on_cuda_and_fp32_elsewhere():
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision(None, "cpu") == "fp32"
    assert perf_record({"precision": "bf16", "tf32": True}, "cpu") == \
        {"precision": "bf16", "tf32": True, "cudnn_benchmark": False, "deterministic": False}
    with pytest.raises(ConfigError, match="perf.precision must be one of"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("overrides,message", [
    (["prior.unet.use_fp16=true"], "contradicts perf.precision=fp32"),
    (["prior.unet.use_fp16=true", "perf.precision=auto"], "contradicts perf.precision=auto"),
    (["perf.deterministic=true", "perf.cudnn_benchmark=true"], "contradicts perf.cudnn_benchmark"),
    (["+perf.autocast=bf16"], "perf.autocast is now perf.precision"),
    (["perf.precision=fp8"], "perf.precision"),
])
def test_contradictory_precision_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose("prior=tiny", *overrides))


def test_backend_switches_are_set_and_reset_for_every_run():
    prepare_perf({"tf32": True, "cudnn_benchmark": True}, "cpu")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32 and torch.backends.cudnn.benchmark
    prepare_perf({"deterministic": True}, "cpu")
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert not torch.backends.cudnn.benchmark
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")  # NVIDIA's two reproducible settings
    prepare_perf({}, "cpu")
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.allow_tf32


def test_sd2_vae_decodes_in_fp32_under_a_low_precision_unet():
    """perf.precision=bf16 puts the UNet under autocast; the VAE decodes (and encodes) in fp32 as diffusers
    upcasts it: the decoded image is bit for bit the fp32 one, while the UNet's eps is not."""
    tiny = shipped_prior("sd2_tiny")
    z = torch.randn(1, *tiny.sample_shape, generator=torch.Generator().manual_seed(0))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ref_image, ref_latent, ref_eps = tiny.decode(z), tiny.encode(x), tiny.predict(z, torch.tensor([500]))[0]
        tiny.configure_perf(precision="bf16")
        image, latent, eps = tiny.decode(z), tiny.encode(x), tiny.predict(z, torch.tensor([500]))[0]
    tiny.configure_perf()
    assert torch.equal(image, ref_image) and torch.equal(latent, ref_latent)
    assert not torch.equal(eps, ref_eps) and eps.dtype == torch.float32


def test_run_records_device_and_precision_and_refuses_to_mix_precisions(tmp_path):
    out = tmp_path / "run"
    summary = run(compose("prior=tiny", "data=demo", "data.per_photo=1", "task=sr4",
                          "sampler=dps", "sampler.respacing=2", "progress=false", "perf.precision=auto"), out)
    assert (summary["precision"], summary["device"], summary["device_type"]) == ("fp32", "cpu", "cpu")
    assert summary["device_name"] and not summary["tf32"] and not summary["deterministic"]
    compute = json.loads((out / "run.json").read_text())["compute"]
    assert compute["precision"] == "fp32" and compute["device_name"] == summary["device_name"]
    digest = json.loads((out / "run.json").read_text())["digest"]
    on_a_gpu = {**compute, "device": "cuda:0", "device_type": "cuda", "device_name": "NVIDIA H100", "precision": "fp16"}
    with pytest.raises(ConfigError, match="holds samples computed in fp32"):
        claim_run_dir(out, digest, False, None, on_a_gpu)  # auto resumed on a GPU would compute fp16
    claim_run_dir(out, digest, False, None, {**compute, "device_name": "another CPU"})  # same precision: resumes


# -- the operators' backward passes have deterministic kernels --------------------------------------------
def test_bicubic_sr_as_matrices_is_torch_antialiased_resize():
    """y = W x W^T with W read off torch's resize of the identity equals F.interpolate(antialias=True) (float64:
    1e-15), whose CUDA backward has no deterministic kernel; a matmul's has."""
    x = torch.rand(2, 3, 64, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for factor in (2, 4, 8):
        ref = F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True, align_corners=False)
        torch.testing.assert_close(SuperResolution(factor)(x), ref, rtol=0, atol=1e-15)


def test_blur_padding_gathers_exactly_what_reflect_padding_gives():
    x = torch.randn(2, 3, 20, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for pad in (1, 7, 16):
        ref = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        assert torch.equal(x[..., reflect_index(20, pad), :][..., reflect_index(17, pad)], ref)
    blur = Blur(gaussian_kernel(9, 2.0).double())
    ref = F.conv2d(F.pad(x, (4, 4, 4, 4), mode="reflect"), blur.kernel[None, None].expand(3, 1, 9, 9), groups=3)
    assert torch.equal(blur(x), ref)


# -- batch_size caps stacked measurements -----------------------------------------------------------------
def test_batch_size_caps_the_rows_of_stacked_measurements(tmp_path, monkeypatch):
    """measurement_batch=4 with 2 samples each would stack 8 rows; batch_size=4 caps a sampler call at 4."""
    from dps_map.samplers.dps import DPSSampler

    rows = []
    real = DPSSampler.run

    def counted(self, prior, operator, noise, y, shape, *args, **kwargs):
        rows.append(shape[0])
        return real(self, prior, operator, noise, y, shape, *args, **kwargs)

    monkeypatch.setattr(DPSSampler, "run", counted)
    summary = run(compose("prior=tiny", "data=demo", "data.per_photo=2", "+data.photos=[coffee,chelsea]",
                          "task=sr4", "sampler=dps", "sampler.respacing=2", "progress=false", "num_samples=2",
                          "batch_size=4", "measurement_batch=4"), tmp_path / "run")
    assert summary["n_samples"] == 8
    assert rows == [4, 4]


def test_an_op_without_a_deterministic_kernel_is_one_line_not_a_traceback(monkeypatch):
    """Under perf.deterministic=true torch raises RuntimeError for an op with no deterministic kernel on the
    device; the run turns it into a ConfigError (one line, exit 2) that says what to do."""
    import dps_map.runner.execute as execute

    class NoKernel:
        def run(self, *args, **kwargs):
            raise RuntimeError("upsample_bicubic2d_aa_backward_out_cuda does not have a deterministic "
                               "implementation, but you set 'torch.use_deterministic_algorithms(True)'")

    prior = shipped_prior("gmm")
    unit = execute.MeasurementUnit(None, SuperResolution(2), None, torch.zeros(1, 2), None, None, None, prior, [0],
                                   [0], torch.Generator())
    with pytest.raises(ConfigError, match="perf.deterministic=true: upsample_bicubic2d_aa_backward_out_cuda"):
        execute.sample_units(prior, NoKernel(), None, [unit])
