"""LPIPS (Zhang et al. 2018) through the `lpips` package, built so that nothing can be downloaded.

d(x, y) = sum_l mean_{h,w} || w_l * (f_l(x) - f_l(y)) ||^2, with f_l the unit-normalised (over channels)
backbone activations at layer l and w_l the learned v0.1 linear weights.

`lpips.LPIPS(pnet_rand=True, pretrained=False)` builds the architecture with a random backbone and
random linear layers (no torchvision weight download); the backbone (torchvision ImageNet
alexnet/vgg16 file) and the linear weights are then loaded here with torch.load(weights_only=True).
"""

from __future__ import annotations

import warnings

import lpips as _lpips_pkg  # the pip package (absolute import, not this module)
import torch
from torch import nn

from dps_map.errors import UserError
from dps_map.metrics.weight_files import lpips_backbone_path, lpips_linear_path


def _load_file(path, what: str) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated / corrupt / not a state dict
        raise UserError(f"cannot read {what} '{path}' ({type(e).__name__}: {e}); replace the file") from None
    if not isinstance(sd, dict):
        raise UserError(f"{what} '{path}' is not a state dict")
    return sd


def _backbone_state(model: "_lpips_pkg.LPIPS", tv_state: dict, path) -> dict:
    """Map torchvision keys 'features.<i>.<p>' to lpips keys 'net.slice<k>.<i>.<p>'."""
    index_to_slice = {}
    for slice_name, sl in model.net.named_children():
        for idx, _ in sl.named_children():
            index_to_slice[idx] = slice_name
    out = {}
    for k, v in tv_state.items():
        parts = k.split(".")
        if parts[0] != "features" or len(parts) != 3:
            continue  # classifier weights are not used by LPIPS
        if parts[1] in index_to_slice:
            out[f"{index_to_slice[parts[1]]}.{parts[1]}.{parts[2]}"] = v
    expected = set(model.net.state_dict().keys())
    if set(out) != expected:
        missing = sorted(expected - set(out))
        raise UserError(f"LPIPS backbone file '{path}' does not match the {model.pnet_type} architecture (missing {missing[:3]})")
    return out


class LPIPS(nn.Module):
    """Learned perceptual distance, per sample. Inputs in [-1, 1], (B, 3, H, W) (1-channel is repeated).

    net: "alex" (the paper's choice) or "vgg". weights_path: the v0.1 linear-layer file (default: the one
    shipped in the lpips package). backbone_path: torchvision's alexnet-owt-7be5be79.pth /
    vgg16-397923af.pth (default: env DPS_MAP_LPIPS_BACKBONE, then torch hub cache); missing ->
    MissingFileError. random_backbone=True (tests only) keeps a randomly initialised backbone.
    The module follows its inputs' device; parameters are frozen, gradients flow to the inputs.
    """

    def __init__(
        self,
        net: str = "alex",
        weights_path=None,
        backbone_path=None,
        random_backbone: bool = False,
        device=None,
    ):
        super().__init__()
        lin_path = lpips_linear_path(net, weights_path)
        bb_path = None if random_backbone else lpips_backbone_path(net, backbone_path)
        with warnings.catch_warnings():  # torchvision's deprecation warning for pretrained=False
            warnings.simplefilter("ignore", UserWarning)
            model = _lpips_pkg.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
        lin_state = _load_file(lin_path, "LPIPS linear weights")
        lin_keys = {k for k in model.state_dict() if k.startswith("lin") and not k.startswith("lins.")}
        if set(lin_state) != lin_keys:
            raise UserError(f"LPIPS linear weights '{lin_path}' do not match net={net!r}")
        model.load_state_dict(lin_state, strict=False)
        if bb_path is not None:
            model.net.load_state_dict(_backbone_state(model, _load_file(bb_path, "LPIPS backbone"), bb_path))
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self.net_name = net
        self.random_backbone = random_backbone
        self.backbone_path, self.weights_path = bb_path, lin_path
        if device is not None:
            self.to(device)

    def train(self, mode: bool = True):  # always eval: dropout off
        return super().train(False)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Per-sample LPIPS distance, shape (B,)."""
        if x.shape != ref.shape or x.dim() != 4:
            raise ValueError(f"expected two (B, C, H, W) tensors of equal shape, got {tuple(x.shape)} and {tuple(ref.shape)}")
        if x.shape[1] == 1:
            x, ref = x.repeat(1, 3, 1, 1), ref.repeat(1, 3, 1, 1)
        dev = next(self.model.parameters()).device
        if dev != x.device:
            self.to(x.device)
        d = self.model(x.float(), ref.to(x.device).float())
        return d.flatten()
