"""The Python API: a prior, an image and a metric in a few lines, without Hydra (README "Use it from Python").

    prior = dps_map.load_prior("tiny")
    x = dps_map.example_image("coffee", size=64)
    x_hat = DMAPSampler(respacing="50", zeta=10.0).sample(prior, operator, noise, y, x.shape, generator)

Operators (dps_map.operators) and samplers (dps_map.samplers) are plain classes; this module adds what
otherwise needs a config: a prior built from its YAML (with the checkpoint paths the YAML names).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .errors import ConfigError


def load_prior(prior: str | Path = "tiny", device: str | torch.device = "cpu", **overrides):
    """A prior, frozen, on `device`:

    - a name of conf/prior/ ("tiny", "adm512", "gmm", "sd2_base", ...), composed as
      ``python -m dps_map.run prior=NAME`` would (so ``paths.*`` and the DPS_MAP_* variables apply);
    - a prior YAML of your own (``_target_`` and its arguments; it may use ``${paths.*}``);
    - an ADM checkpoint ``.pt`` with its card ``.json`` beside it (the ``architecture.unet`` flags, as
      dps_map/assets/tiny_prior.json).

    `overrides` set keys of the prior config, e.g. ``load_prior("adm512", checkpoint="/data/512x512.pt",
    class_label=207)``."""
    from .config import compose
    from .config.checks import check_prior_checkpoint
    from .config.targets import build_prior

    path = Path(prior)
    if path.suffix == ".pt":
        card = path.with_suffix(".json")
        if not card.is_file():
            raise ConfigError(f"load_prior('{path}'): no card {card} with the architecture.unet flags beside it; "
                              "pass a prior YAML instead")
        info = json.loads(card.read_text())
        schedule = info.get("schedule", {})
        node = OmegaConf.create({"name": path.stem, "kind": "adm", "_target_": "dps_map.priors.adm.adm_prior",
                                 "checkpoint": str(path.resolve()), "unet": info["architecture"]["unet"],
                                 "noise_schedule": schedule.get("noise_schedule", "linear"),
                                 "diffusion_steps": schedule.get("diffusion_steps", 1000)})
    elif path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"load_prior: no prior YAML '{path}'")
        root = OmegaConf.create({"paths": compose().paths, "prior": OmegaConf.load(path)})
        node = OmegaConf.create(OmegaConf.to_container(root.prior, resolve=True))  # its ${paths.*} resolved
    else:
        node = compose(f"prior={prior}").prior
    node = OmegaConf.merge(node, overrides)
    check_prior_checkpoint(node)  # a missing file: one error naming it, where to get it, what to set
    return build_prior(node, device)


def example_image(name: str = "coffee", size: int = 64) -> torch.Tensor:
    """A photograph bundled with scikit-image (dps_map.data.PHOTOS: "coffee", "chelsea", "astronaut", ...),
    centre-cropped and resized to size x size: a (1, 3, size, size) tensor in [-1, 1]. "chelsea" and
    "coffee" are the held-out photographs the tiny prior never saw."""
    from PIL import Image

    from .data import load_photo
    from .io import pil_to_tensor

    return pil_to_tensor(Image.fromarray(load_photo(name)), size)[0][None]


def save_image(x: torch.Tensor, path) -> None:
    """Save images in [-1, 1] as one PNG: a (C, H, W) image, or a (B, C, H, W) batch side by side."""
    from .io import save_png

    if x.dim() == 4:
        x = torch.cat(list(x), dim=-1)
    save_png(x, path)


def psnr(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR per image in dB, of images in [-1, 1] (dps_map.metrics.image.psnr)."""
    from .metrics.image import psnr as _psnr

    return _psnr(x, reference)
