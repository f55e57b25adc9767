"""The light-weight conditional score estimator (Xu et al., ICLR 2025, method 2): a ControlNet-style
adapter (Zhang et al., ICCV 2023) on a frozen openai ADM UNet.

The adapter is a trainable copy of the UNet's encoder (time embedding, input blocks, middle block),
initialised from the prior. It reads x_t plus a "hint": the measurement mapped back to image space
(``operator.naive(y)``: bicubic upsampling for SR, the masked image for inpainting, the blurred image
for deblurring) and the observation mask, through a small conv net whose last layer is zero. Each
encoder block's output goes through a zero-initialised 1x1 convolution and is added to the frozen
UNet's matching skip connection (and the middle block's output to the middle block's), so

    eps_cond(x_t, t, y) = UNet_decoder(h_k + Z_k(E_k(x_t, t, hint)),  k = 1..K,  mid + Z_mid(...))

and at initialisation eps_cond = eps exactly: the conditional prior starts as the unconditional one.
"""

from __future__ import annotations

import copy

import torch
from guided_diffusion.nn import timestep_embedding
from torch import nn

from ..errors import ConfigError, UserError
from ..io import load_checkpoint

FORMAT = "dps-map-adapter/1"


def _out_channels(block: nn.Module) -> int:
    """Output channels of a guided_diffusion TimestepEmbedSequential: those of its last child that
    declares out_channels (a conv, ResBlock or Downsample; attention keeps the width)."""
    channels = [c.out_channels for c in block.children() if isinstance(getattr(c, "out_channels", None), int)]
    if not channels:
        raise ConfigError(f"cannot tell the output channels of UNet block {block}")
    return channels[-1]


def zero_conv(channels_in: int, channels_out: int | None = None, kernel: int = 1) -> nn.Conv2d:
    """A convolution whose weights and bias start at zero (the adapter's only link to the frozen UNet)."""
    conv = nn.Conv2d(channels_in, channels_out or channels_in, kernel, padding=kernel // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def measurement_hint(operator, y: torch.Tensor) -> torch.Tensor:
    """The adapter's view of a measurement: [naive(y), mask] of shape (B, C + 1, H, W).

    naive(y) is the measurement resized to the image (operators/base.py); the mask is the inpainting
    mask (1 = observed), or ones for operators that observe every pixel."""
    image = operator.naive(operator.restrict(y))
    mask = getattr(operator, "mask", None)
    if mask is None:
        mask = torch.ones_like(image[:, :1])
    else:
        mask = mask.to(image).expand(image.shape[0], 1, *image.shape[-2:])
    return torch.cat([image, mask], dim=1)


def check_trained_operator(trained: dict | None, operator, path) -> None:
    """Refuse an operator other than the one the adapter at `path` was trained for (its hint would mean
    something else); `trained` is the operator its card records (None: not recorded, accepted)."""
    operator = getattr(operator, "operator", operator)  # a latent prior's DecodedOperator: its pixel operator
    here = {"class": type(operator).__name__, **operator.describe()}
    if trained is not None and trained != here:
        raise ConfigError(f"adapter '{path}' was trained for operator {trained}, "
                          f"not {here}: train one for this task (python -m dps_map.train_adapter task=...)")


class Adapter(nn.Module):
    """Trainable encoder copy + hint net + zero convolutions for a guided_diffusion UNetModel.

    Args:
        unet: the prior's UNet; its encoder is deep-copied (weights included) and made trainable.
        hint_channels: channels of :func:`measurement_hint` (image channels + 1).
        hint_width: width of the hint net's hidden layers.
    """

    def __init__(self, unet: nn.Module, hint_channels: int, hint_width: int = 32):
        super().__init__()
        self.model_channels = unet.model_channels
        self.hint_channels, self.hint_width = int(hint_channels), int(hint_width)
        self.time_embed = copy.deepcopy(unet.time_embed)
        self.label_emb = copy.deepcopy(unet.label_emb) if getattr(unet, "num_classes", None) else None
        self.input_blocks = copy.deepcopy(unet.input_blocks)
        self.middle_block = copy.deepcopy(unet.middle_block)
        self.float()  # a half-precision (use_fp16) prior still trains an fp32 adapter
        self.requires_grad_(True)
        w = self.hint_width
        self.hint = nn.Sequential(
            nn.Conv2d(self.hint_channels, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
            zero_conv(w, _out_channels(unet.input_blocks[0]), kernel=3),
        )
        self.zero_convs = nn.ModuleList(zero_conv(_out_channels(b)) for b in unet.input_blocks)
        self.middle_zero = zero_conv(_out_channels(unet.middle_block))

    def forward(self, x_t, t, hint, labels=None):
        """Residuals for the frozen UNet: ([one per input block], middle)."""
        emb = self.time_embed(timestep_embedding(t, self.model_channels))
        if self.label_emb is not None:
            emb = emb + self.label_emb(labels)
        h, residuals = x_t.float(), []
        for k, (block, zero) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb)
            if k == 0:
                h = h + self.hint(hint.float())
            residuals.append(zero(h))
        return residuals, self.middle_zero(self.middle_block(h, emb))

    def check_compatible(self, unet: nn.Module) -> None:
        """Refuse a UNet whose encoder differs from the one this adapter was copied from."""
        mine = {k: v.shape for k, v in self.input_blocks.state_dict().items()}
        mine.update({"mid." + k: v.shape for k, v in self.middle_block.state_dict().items()})
        theirs = {k: v.shape for k, v in unet.input_blocks.state_dict().items()}
        theirs.update({"mid." + k: v.shape for k, v in unet.middle_block.state_dict().items()})
        if mine != theirs or self.model_channels != unet.model_channels:
            raise ConfigError("the adapter was trained for another UNet architecture than this prior's "
                              "(compare the adapter card's 'unet' flags with conf/prior/<name>.yaml)")


def controlled_forward(unet: nn.Module, x_t, t, residuals, middle, labels=None):
    """guided_diffusion's UNetModel.forward with the adapter's residuals added to the skip
    connections and the middle block (ControlNet's injection). Runs the frozen UNet's own modules."""
    emb = unet.time_embed(timestep_embedding(t, unet.model_channels))
    if unet.num_classes is not None:
        emb = emb + unet.label_emb(labels)
    h, skips = x_t.type(unet.dtype), []
    for block, res in zip(unet.input_blocks, residuals):
        h = block(h, emb)
        skips.append(h + res.type(h.dtype))
    h = unet.middle_block(h, emb) + middle.type(unet.dtype)
    for block in unet.output_blocks:
        h = block(torch.cat([h, skips.pop()], dim=1), emb)
    return unet.out(h.type(x_t.dtype))


# -- checkpoints ---------------------------------------------------------------------------------
def adapter_checkpoint(adapter: Adapter, state_dict: dict | None = None, **meta) -> dict:
    """What an adapter file holds: format tag, hint sizes, metadata (task, prior, data) and weights.
    Plain containers and tensors only, so torch.load(weights_only=True) reads it."""
    return {"format": FORMAT, "hint_channels": adapter.hint_channels, "hint_width": adapter.hint_width,
            "meta": meta, "state_dict": state_dict if state_dict is not None else adapter.state_dict()}


def load_adapter(path, unet: nn.Module, what: str = "adapter checkpoint",
                 where: str = "`python -m dps_map.train_adapter` (docs/adapters.md)",
                 override: str = "prior.adapter=/path/to/adapter.pt") -> tuple[Adapter, dict]:
    """Build an adapter for ``unet`` and load ``path`` into it (weights_only=True; strict).
    Returns (adapter, meta)."""
    state = load_checkpoint(path, what=what, where=where, override=override)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"'{path}' is not a dps-map adapter checkpoint (expected format '{FORMAT}')")
    adapter = Adapter(unet, state["hint_channels"], state["hint_width"])
    try:
        adapter.load_state_dict(state["state_dict"], strict=True)
    except RuntimeError as err:
        raise ConfigError(f"adapter '{path}' was trained for another UNet architecture than this prior's "
                          f"({str(err).splitlines()[0]} ...); compare its card's prior.unet flags with "
                          "conf/prior/<name>.yaml") from err
    return adapter.eval().requires_grad_(False), dict(state.get("meta", {}))
