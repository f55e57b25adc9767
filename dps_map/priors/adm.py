"""The openai ADM UNet (Dhariwal & Nichol 2021) as a prior, built through `guided_diffusion`.

The network comes from ``guided_diffusion.script_util.create_model`` with the flags of the official
checkpoints (conf/prior/adm512.yaml, adm256_uncond.yaml) or of our small prior (tiny.yaml). With
``learn_sigma`` the network outputs 2C channels: the first C are eps, the rest ADM's variance
interpolation values (usable by the DDPM step, never for guidance).

Performance knobs (all off by default; conf/perf/default.yaml, docs/performance.md "GPU knobs"):
:meth:`ADMPrior.configure_perf` sets the precision (bf16/fp16: the network runs under torch.autocast, its
output and all the diffusion maths stay in the caller's dtype), channels_last memory
format, torch.compile of the network, and gradient checkpointing of the UNet's residual and attention
blocks (recomputed in the VJP's backward pass instead of stored; also what ``unet.use_checkpoint``
selects). The network call itself never synchronises host and device: the class labels and the
sinusoidal time-embedding frequencies are cached on the device (guided_diffusion rebuilds the
frequencies on the CPU and copies them at every call).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import types

import numpy as np
import torch
from guided_diffusion.script_util import create_model
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from ..diffusion import make_betas
from ..errors import ConfigError
from ..io import load_checkpoint
from .base import Prior

log = logging.getLogger(__name__)

#: flags accepted by guided_diffusion.script_util.create_model
UNET_FLAGS = tuple(inspect.signature(create_model).parameters)
NUM_CLASSES = 1000
#: the autocast dtype of each resolved precision (dps_map/config/device.py)
PRECISION_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def comma_lists(flags: dict) -> dict:
    """guided_diffusion wants "32,16,8" strings for list flags; YAML or the command line may give a list or,
    for one resolution, an int (attention_resolutions=8)."""
    def text(v):
        return v if isinstance(v, str) else str(v) if isinstance(v, int) else ",".join(str(x) for x in v)

    return {k: text(v) if k in ("attention_resolutions", "channel_mult") else v for k, v in flags.items()}


def build_unet(flags: dict) -> torch.nn.Module:
    """Build an ADM UNetModel from create_model flags (unknown flags are an error)."""
    flags = dict(flags)
    unknown = sorted(set(flags) - set(UNET_FLAGS))
    if unknown:
        raise ConfigError(f"unknown ADM flags {unknown}; create_model accepts {list(UNET_FLAGS)}")
    try:
        return create_model(**comma_lists(flags))
    except (ValueError, AssertionError, KeyError) as err:  # e.g. channels not divisible by GroupNorm's 32 groups
        raise ConfigError(f"ADM flags {flags} do not build a network: {err}") from err


class ADMPrior(Prior):
    """eps-prediction prior around an ADM UNet.

    Args:
        model: the UNet (frozen; eval mode).
        betas: training betas.
        class_label: for class-conditional models, the label used when none is set per measurement
            (an int, or None to require :meth:`set_class_labels`).
    """

    kind = "image"

    def __init__(self, model: torch.nn.Module, betas: np.ndarray, learn_sigma: bool,
                 class_cond: bool = False, class_label: int | None = None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.betas = np.asarray(betas, dtype=np.float64)
        self.learn_sigma = learn_sigma
        self.class_cond = class_cond
        self.in_channels = model.in_channels
        self.image_size = model.image_size
        self._labels = None if class_label is None else torch.tensor([int(class_label)])
        self._device_cache: dict = {}  # per-device copies of labels and time-embedding frequencies
        self.perf = {"precision": "fp16" if self.fp16_weights else "fp32", "channels_last": False, "compile": False,
                     "grad_checkpoint": False}
        self._autocast_dtype = None
        self._network = self._unet_forward
        if getattr(model, "use_checkpoint", False):  # unet.use_checkpoint: route through torch's checkpoint
            self._set_grad_checkpoint(True)
            self.perf["grad_checkpoint"] = True

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.image_size, self.image_size)

    def set_class_labels(self, labels: torch.Tensor | int | None) -> None:
        """Set the ImageNet class label(s) used by a class-conditional model (broadcast over the batch)."""
        if labels is None:
            self._labels = None
            return
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if ((labels < 0) | (labels >= NUM_CLASSES)).any():
            raise ConfigError(f"class labels must lie in [0, {NUM_CLASSES}), got {labels.tolist()}")
        self._labels = labels
        self._device_cache = {k: v for k, v in self._device_cache.items() if k[0] != "labels"}

    def labels_for(self, x_t: torch.Tensor) -> torch.Tensor:
        """The class labels of a class-conditional model for the batch x_t."""
        if self._labels is None:
            raise ConfigError("class-conditional ADM needs a class label: set prior.class_label")
        key = ("labels", x_t.device)
        labels = self._device_cache.get(key)
        if labels is None:  # copied once per device, not at every call (a copy would sync on CUDA)
            labels = self._device_cache[key] = self._labels.to(x_t.device)
        return labels.expand(x_t.shape[0]) if labels.numel() == 1 else labels

    def split_output(self, out: torch.Tensor):
        """(eps, learned-variance values or None) from the UNet's output channels."""
        if self.learn_sigma:
            eps, var_values = out.split(self.in_channels, dim=1)
            return eps, var_values
        return out, None

    def predict(self, x_t, t):
        labels = self.labels_for(x_t) if self.class_cond else None
        x_in = x_t.contiguous(memory_format=torch.channels_last) if self.perf["channels_last"] else x_t
        if self.perf["compile"]:
            # t is a view into the sampler's step table: a fresh tensor, so the compiled graph does not guard on
            # its storage offset (one graph per step otherwise)
            t = t.clone()
        with self.autocast(x_t.device):
            out = self._network(x_in, t, self._time_frequencies(t.device), labels)
        if out.dtype != x_t.dtype:
            out = out.to(x_t.dtype)
        if self.perf["channels_last"]:
            out = out.contiguous()
        return self.split_output(out)

    # -- the network call -------------------------------------------------------------------------
    def _time_frequencies(self, device) -> torch.Tensor:
        """guided_diffusion.nn.timestep_embedding's frequencies, computed identically, cached per device."""
        key = ("freqs", device)
        freqs = self._device_cache.get(key)
        if freqs is None:
            half = self.model.model_channels // 2
            freqs = torch.exp(-math.log(10000) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
            freqs = self._device_cache[key] = freqs.to(device)
        return freqs

    def _unet_forward(self, x, t, freqs, labels=None):
        """UNetModel.forward (guided_diffusion/unet.py) with the embedding frequencies given (cached on the
        device by the caller, outside any compiled graph)."""
        model = self.model
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if model.model_channels % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        emb = model.time_embed(emb)
        if model.num_classes is not None:
            emb = emb + model.label_emb(labels)
        h, hs = x.type(model.dtype), []
        for module in model.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = model.middle_block(h, emb)
        for module in model.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return model.out(h.type(x.dtype))

    # -- performance knobs ------------------------------------------------------------------------
    @property
    def fp16_weights(self) -> bool:
        """Built with ``unet.use_fp16``: guided_diffusion's fp16 UNet (its torso's weights are fp16)."""
        return getattr(self.model, "dtype", torch.float32) == torch.float16

    def autocast(self, device) -> contextlib.AbstractContextManager:
        """The mixed-precision context of the network call (a no-op in fp32 and for fp16 weights)."""
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self._autocast_dtype)

    def configure_perf(self, precision: str = "fp32", channels_last: bool = False, compile: bool = False,
                       compile_mode: str | None = None, compile_backend="inductor",
                       grad_checkpoint: bool = False, **unknown) -> "ADMPrior":
        """Switch the performance knobs (conf/perf/default.yaml). The defaults are the plain fp32 network.

        precision: 'fp32', 'bf16' or 'fp16' (resolved: dps_map.config.prepare_perf). bf16/fp16 run the UNet
            under torch.autocast, eps comes back in x_t's dtype; a network built with unet.use_fp16
            (guided_diffusion's fp16 weights) runs as it is and accepts only 'fp16'.
        channels_last: NHWC weights and inputs (faster convolutions on tensor-core GPUs).
        compile: torch.compile the network call with a dynamic batch: one graph per kind of call (no-grad
            forward, VJP) and per batch of 1 or more (compile_mode e.g. 'max-autotune', compile_backend e.g.
            'inductor' or 'eager'; the first call of each kind is slow while it compiles).
        grad_checkpoint: recompute the residual/attention blocks' activations in the backward pass
            (torch.utils.checkpoint), so a VJP keeps far fewer activations; also set by unet.use_checkpoint.
        """
        if unknown:
            raise ConfigError(f"unknown perf keys {sorted(unknown)} (precision, channels_last, compile, "
                              "compile_mode, compile_backend, grad_checkpoint)")
        if precision not in PRECISION_DTYPES:
            raise ConfigError(f"precision must be one of {', '.join(PRECISION_DTYPES)}, got '{precision}'")
        if self.fp16_weights and precision != "fp16":
            raise ConfigError(f"prior.unet.use_fp16=true (fp16 weights) contradicts perf.precision={precision}")
        self._autocast_dtype = None if self.fp16_weights else PRECISION_DTYPES[precision]
        self.model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        checkpointing = bool(grad_checkpoint) or bool(getattr(self.model, "use_checkpoint", False))
        self._set_grad_checkpoint(checkpointing)
        if compile:
            kwargs = {"backend": compile_backend, "dynamic": True} | ({"mode": compile_mode} if compile_mode else {})
            self._network = torch.compile(self._unet_forward, **kwargs)
        else:
            self._network = self._unet_forward
        self.perf = {"precision": precision, "channels_last": bool(channels_last), "compile": bool(compile),
                     "grad_checkpoint": checkpointing}
        return self

    def _set_grad_checkpoint(self, on: bool) -> None:
        """Checkpoint every ResBlock/AttentionBlock with torch.utils.checkpoint (non-reentrant).

        guided_diffusion's own CheckpointFunction is bypassed: torch's keeps the autocast state of the
        forward pass when it recomputes, on every device type, and needs no parameter gradients."""
        for module in self.model.modules():
            if hasattr(module, "_forward") and hasattr(module, "use_checkpoint"):
                module.use_checkpoint = False  # never guided_diffusion's CheckpointFunction
                if on:
                    module.forward = types.MethodType(_checkpointed_forward, module)
                elif "forward" in vars(module):
                    del module.forward


def _checkpointed_forward(module, *args):
    """A block's forward that stores only its inputs when a gradient is being recorded."""
    if torch.is_grad_enabled() and any(torch.is_tensor(a) and a.requires_grad for a in args):
        return torch_checkpoint(module._forward, *args, use_reentrant=False, preserve_rng_state=False)
    return module._forward(*args)


def random_network(build, flags: dict, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised ADM network (``prior.random_init: true``; tests and benchmarks only).

    Built under a fixed seed, so the same flags give the same network in every process and job (the
    shards of a sweep, a resumed run). guided_diffusion zero-initialises (``zero_module``) the last
    convolution of every residual block, every attention projection and the output layer, so a fresh
    network predicts eps = 0 whatever x_t, t or the class label, and a test on it would never see the
    network. Those layers are re-drawn with PyTorch's default initialisation (at 64x64 with the adm512
    flags: eps std ~0.3; changing t from 10 to 900 moves eps by ~10%, the class label by ~60%).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(flags)
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)) \
                    and not module.weight.detach().any():
                module.reset_parameters()
    return model


def adm_prior(unet: dict, checkpoint: str | None = None, random_init: bool = False, noise_schedule: str = "linear",
              diffusion_steps: int = 1000, class_label: int | str | None = None, name: str = "adm",
              what: str = "ADM checkpoint", url: str = "openai/guided-diffusion's README",
              override: str = "prior.checkpoint=/path/to/checkpoint.pt") -> ADMPrior:
    """An ADM prior (``kind: adm``; conf/prior/adm512.yaml, adm256_uncond.yaml, tiny.yaml): the UNet from the
    ``unet`` flags of ``guided_diffusion.script_util.create_model``, loaded from ``checkpoint``
    (weights_only=True; a missing file names ``what``, ``url`` and ``override``).

    ``random_init: true`` skips the checkpoint (tests and benchmarks only; logged loudly) and builds a seeded
    random network whose eps depends on x_t, t and the class label (:func:`random_network`). ``class_label``:
    an ImageNet index for every measurement, or 'data'/'random' (bound per measurement by the runner).
    """
    from ..io import absolute_path

    flags = dict(unet)
    if random_init:
        log.warning("prior %s: RANDOM weights (random_init=true); samples are meaningless", name)
        model = random_network(build_unet, flags)
    else:
        model = build_unet(flags)
        checkpoint = absolute_path(checkpoint)
        state = load_checkpoint(checkpoint, what=what, where=url, override=override)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ConfigError(
                f"checkpoint '{checkpoint}' does not match the flags of prior={name}: "
                f"{str(err).splitlines()[0]} ... (check conf/prior/{name}.yaml)") from err
    if flags.get("use_fp16", False):
        model.convert_to_fp16()
    return ADMPrior(model, make_betas(noise_schedule, diffusion_steps),
                    learn_sigma=bool(flags.get("learn_sigma", False)), class_cond=bool(flags.get("class_cond", False)),
                    class_label=class_label if isinstance(class_label, int) else None)
