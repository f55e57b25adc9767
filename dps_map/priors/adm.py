"""The openai ADM UNet (Dhariwal & Nichol 2021) as a prior, built through `guided_diffusion`.

The network comes from ``guided_diffusion.script_util.create_model`` with the flags of the official
checkpoints (conf/prior/adm512.yaml, adm256_uncond.yaml) or of our small prior (tiny.yaml). With
``learn_sigma`` the network outputs 2C channels: the first C are eps, the rest ADM's variance
interpolation values (usable by the DDPM step, never for guidance).
"""

from __future__ import annotations

import inspect
import logging

import numpy as np
import torch
from guided_diffusion.script_util import create_model

from ..diffusion import make_betas
from ..errors import ConfigError
from ..io import load_checkpoint
from .base import Prior

log = logging.getLogger(__name__)

#: flags accepted by guided_diffusion.script_util.create_model
UNET_FLAGS = tuple(inspect.signature(create_model).parameters)
NUM_CLASSES = 1000


def build_unet(flags: dict) -> torch.nn.Module:
    """Build an ADM UNetModel from create_model flags (unknown flags are an error)."""
    flags = dict(flags)
    unknown = sorted(set(flags) - set(UNET_FLAGS))
    if unknown:
        raise ConfigError(f"unknown ADM flags {unknown}; create_model accepts {list(UNET_FLAGS)}")
    for key in ("attention_resolutions", "channel_mult"):
        if key in flags and not isinstance(flags[key], str):
            flags[key] = ",".join(str(v) for v in flags[key])
    return create_model(**flags)


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

    def labels_for(self, x_t: torch.Tensor) -> torch.Tensor:
        """The class labels of a class-conditional model for the batch x_t."""
        if self._labels is None:
            raise ConfigError("class-conditional ADM needs a class label: set prior.class_label")
        labels = self._labels.to(x_t.device)
        return labels.expand(x_t.shape[0]) if labels.numel() == 1 else labels

    def split_output(self, out: torch.Tensor):
        """(eps, learned-variance values or None) from the UNet's output channels."""
        if self.learn_sigma:
            eps, var_values = out.split(self.in_channels, dim=1)
            return eps, var_values
        return out, None

    def predict(self, x_t, t):
        kwargs = {"y": self.labels_for(x_t)} if self.class_cond else {}
        return self.split_output(self.model(x_t, t, **kwargs))


def build_adm_prior(cfg, checkpoint: str | None) -> ADMPrior:
    """Build the UNet from ``cfg.unet`` flags and load ``checkpoint`` (weights_only=True).

    ``cfg.random_init: true`` skips the checkpoint (tests and benchmarks only; logged loudly).
    """
    flags = dict(cfg.unet)
    model = build_unet(flags)
    if cfg.get("random_init", False):
        log.warning("prior %s: RANDOM weights (random_init=true); samples are meaningless", cfg.name)
    else:
        state = load_checkpoint(checkpoint, what=cfg.what, where=cfg.url, override=cfg.override)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ConfigError(
                f"checkpoint '{checkpoint}' does not match the flags of prior={cfg.name}: "
                f"{str(err).splitlines()[0]} ... (check conf/prior/{cfg.name}.yaml)") from err
    if flags.get("use_fp16", False):
        model.convert_to_fp16()
    class_cond = bool(flags.get("class_cond", False))
    label = cfg.get("class_label", None)
    return ADMPrior(model, make_betas(cfg.noise_schedule, cfg.diffusion_steps),
                    learn_sigma=bool(flags.get("learn_sigma", False)), class_cond=class_cond,
                    class_label=label if isinstance(label, int) else None)
