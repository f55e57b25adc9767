"""openai's ADM super-resolution diffusion model (``SuperResModel``, e.g. 128 -> 512, Dhariwal & Nichol
2021) as a conditional prior: the paper's kind of reference conditional score for SR x4 at 512x512
(experiments/score_diagnostics.py). Built with ``guided_diffusion.script_util.sr_create_model``.

``condition(operator, y)`` binds the low-resolution measurement (SR operators only, with the model's
factor); ``predict(x_t, t)`` is then eps(x_t, t | y) with the same contract as every prior.
"""

from __future__ import annotations

import inspect

import torch
from guided_diffusion.script_util import sr_create_model

from ..diffusion import make_betas
from ..errors import ConfigError
from ..io import load_checkpoint
from ..operators import SuperResolution
from .adm import ADMPrior, comma_lists, random_network

SR_FLAGS = tuple(inspect.signature(sr_create_model).parameters)


def build_sr_unet(flags: dict) -> torch.nn.Module:
    """sr_create_model from config flags (every flag it takes must be given; unknown ones are an error)."""
    flags = dict(flags)
    unknown, missing = sorted(set(flags) - set(SR_FLAGS)), sorted(set(SR_FLAGS) - set(flags))
    if unknown or missing:
        raise ConfigError(f"upsampler flags: unknown {unknown}, missing {missing} (sr_create_model takes {list(SR_FLAGS)})")
    return sr_create_model(**comma_lists(flags))


class UpsamplerPrior(ADMPrior):
    """eps(x_t, t | low_res = y) of an ADM SuperResModel (class labels as ADMPrior)."""

    needs_measurement = True

    def __init__(self, model, betas, learn_sigma: bool, small_size: int, class_cond: bool = False,
                 class_label: int | None = None, low_res: torch.Tensor | None = None):
        super().__init__(model, betas, learn_sigma, class_cond, class_label)
        self.in_channels = model.in_channels // 2  # SuperResModel stacks x_t and the upsampled y
        self.small_size, self.low_res = int(small_size), low_res

    def condition(self, operator, y: torch.Tensor) -> "UpsamplerPrior":
        """The same model bound to a low-resolution measurement y (batch 1 or one per sample)."""
        if not isinstance(operator, SuperResolution) or operator.factor != self.image_size // self.small_size:
            raise ConfigError(f"the upsampler reference conditions on SR x{self.image_size // self.small_size} "
                              f"measurements, not on {type(operator).__name__} {operator.describe()}")
        bound = UpsamplerPrior(self.model, self.betas, self.learn_sigma, self.small_size, self.class_cond,
                               low_res=y)
        bound._labels = self._labels
        return bound

    def predict(self, x_t, t):
        if self.low_res is None:
            raise ConfigError("the upsampler needs a measurement: call condition(operator, y) first")
        low = self.low_res.to(x_t.device, x_t.dtype)
        if low.shape[0] != x_t.shape[0]:
            low = low.expand(x_t.shape[0], *low.shape[1:])
        kwargs = {"y": self.labels_for(x_t)} if self.class_cond else {}
        with self.autocast(x_t.device):
            out = self.model(x_t, t, low_res=low, **kwargs)
        return self.split_output(out.to(x_t.dtype))


def upsampler_prior(unet: dict, checkpoint: str | None = None, random_init: bool = False,
                    noise_schedule: str = "linear", diffusion_steps: int = 1000, class_label: int | str | None = None,
                    name: str = "adm_upsampler", what: str = "ADM upsampler checkpoint",
                    url: str = "openai/guided-diffusion's README",
                    override: str = "prior.checkpoint=/path/to/checkpoint.pt") -> UpsamplerPrior:
    """An ADM super-resolution prior (``kind: adm_upsampler``): the network from the ``unet`` flags of
    ``sr_create_model``, loaded from ``checkpoint`` (weights_only=True; as :func:`adm.adm_prior`)."""
    from ..io import absolute_path

    flags = dict(unet)
    if random_init:
        model = random_network(build_sr_unet, flags)
    else:
        model = build_sr_unet(flags)
        checkpoint = absolute_path(checkpoint)
        state = load_checkpoint(checkpoint, what=what, where=url, override=override)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ConfigError(f"checkpoint '{checkpoint}' does not match the flags of prior={name}: "
                              f"{str(err).splitlines()[0]} ...") from err
    if flags.get("use_fp16", False):
        model.convert_to_fp16()
    return UpsamplerPrior(model, make_betas(noise_schedule, diffusion_steps), bool(flags["learn_sigma"]),
                          flags["small_size"], bool(flags["class_cond"]),
                          class_label if isinstance(class_label, int) else None)
