"""Where the metric weight files come from, and how they are found. Nothing here downloads:
``python -m dps_map.weights metrics --download`` (dps_map/weights.py) fetches them from this table's URLs.

Resolution order for every file: explicit path (config ``paths.*``) > environment variable >
torch hub cache (``torch.hub.get_dir()/checkpoints/<file name>``, i.e. ``$TORCH_HOME/hub/checkpoints``,
by default ``~/.cache/torch/hub/checkpoints``). An explicit path or env var that does not exist is an
error (no silent fall-back). An explicit path may also be a directory that holds the file.

The LPIPS linear-layer weights ship with the ``lpips`` pip package (``lpips/weights/v0.1/<net>.pth``);
they are resolved the same way, with the package directory in place of the hub cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch

from dps_map.errors import MissingFileError, UserError
from dps_map.io import sha256_file


@dataclass(frozen=True)
class WeightFile:
    key: str
    filename: str
    what: str
    url: str  # where a user gets it (an exact URL: `python -m dps_map.weights --download` fetches it)
    size: int | None  # size in bytes, exact to within size_tolerance
    size_tolerance: int  # bytes (0: exact)
    sha256: str | None  # full digest if known (we cannot download, so mostly unknown)
    sha256_prefix: str | None  # torch hub naming convention: <name>-<first 8 hex of sha256>.pth
    env: str | None  # environment variable that may point to the file
    override: str  # config override a user sets


# The single table of weight files used by dps_map.metrics.
WEIGHT_FILES: dict[str, WeightFile] = {
    "lpips_backbone_alex": WeightFile(
        key="lpips_backbone_alex",
        filename="alexnet-owt-7be5be79.pth",
        what="LPIPS AlexNet backbone (torchvision ImageNet weights)",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        size=244_409_434,  # torchvision metadata: 233.087 MiB (3 decimals, hence the tolerance)
        size_tolerance=600,
        sha256=None,
        sha256_prefix="7be5be79",
        env="DPS_MAP_LPIPS_BACKBONE",
        override="paths.lpips_backbone",
    ),
    "lpips_backbone_vgg": WeightFile(
        key="lpips_backbone_vgg",
        filename="vgg16-397923af.pth",
        what="LPIPS VGG16 backbone (torchvision ImageNet weights)",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        size=553_434_218,  # torchvision metadata: 527.796 MiB
        size_tolerance=600,
        sha256=None,
        sha256_prefix="397923af",
        env="DPS_MAP_LPIPS_BACKBONE",
        override="paths.lpips_backbone",
    ),
    "fid_inception": WeightFile(
        key="fid_inception",
        filename="pt_inception-2015-12-05-6726825d.pth",
        what="FID Inception-v3 weights (pytorch-fid)",
        url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        size=95_600_000,  # approximate: 23.9 M float32 parameters (not published)
        size_tolerance=1_000_000,
        sha256=None,
        sha256_prefix="6726825d",
        env="DPS_MAP_FID_INCEPTION",
        override="paths.fid_inception",
    ),
    # Shipped inside the lpips 0.1.4 wheel; sizes and digests measured on the installed files.
    "lpips_linear_alex": WeightFile(
        key="lpips_linear_alex",
        filename="alex.pth",
        what="LPIPS linear-layer weights v0.1 (alex)",
        url="the lpips pip package (lpips/weights/v0.1/alex.pth; `pip install lpips==0.1.4`)",
        size=6009,
        size_tolerance=0,
        sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        sha256_prefix=None,
        env="DPS_MAP_LPIPS_LINEAR",
        override="paths.lpips_linear",
    ),
    "lpips_linear_vgg": WeightFile(
        key="lpips_linear_vgg",
        filename="vgg.pth",
        what="LPIPS linear-layer weights v0.1 (vgg)",
        url="the lpips pip package (lpips/weights/v0.1/vgg.pth; `pip install lpips==0.1.4`)",
        size=7289,
        size_tolerance=0,
        sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
        sha256_prefix=None,
        env="DPS_MAP_LPIPS_LINEAR",
        override="paths.lpips_linear",
    ),
}

# Which weight files each metric name needs. Names not listed (psnr, ssim, pixel_std, pairwise_l2,
# score diagnostics, ...) need no weight file. "diversity" includes the pairwise LPIPS. The per-sample entry
# (lpips) is also in the metric registry, dps_map/config/metrics.py, which this library layer cannot import;
# tests/test_user_metric.py holds the two equal.
METRIC_WEIGHTS: dict[str, tuple[str, ...]] = {
    "lpips": ("lpips_backbone", "lpips_linear"),
    "diversity": (),  # pixel std and pairwise L2; pairwise LPIPS too when "lpips" is also asked for
    "pairwise_lpips": ("lpips_backbone", "lpips_linear"),
    "fid": ("fid_inception",),
    "kid": ("fid_inception",),
}

_NETS = ("alex", "vgg")


def hub_checkpoint_dir() -> Path:
    """torch.hub.get_dir()/checkpoints (honours TORCH_HOME at call time)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


#: the command that fetches the metric weight files into the paths they are looked for at
DOWNLOAD_COMMAND = "python -m dps_map.weights metrics --download"


def _locate(entry: WeightFile, path, default_dir: Path) -> Path:
    """Where the file is looked for: explicit path (a file, or a directory holding it) > env var > default_dir."""
    if path not in (None, ""):
        p = Path(os.path.expanduser(str(path)))
    elif entry.env and os.environ.get(entry.env):
        p = Path(os.path.expanduser(os.environ[entry.env]))
    else:
        p = default_dir / entry.filename
    return p / entry.filename if p.is_dir() else p


def _resolve(entry: WeightFile, path, default_dir: Path) -> Path:
    p = _locate(entry, path, default_dir)
    if not p.is_file():
        where = entry.url
        if entry.url.startswith("http"):
            where += f" (or `{DOWNLOAD_COMMAND}` with the same paths.* overrides)"
        raise MissingFileError(
            p,
            entry.what,
            where,
            f"{entry.override}=/path/to/{entry.filename}" + (f" (or env {entry.env})" if entry.env else ""),
        )
    return p


def _default_dir(key: str) -> Path:
    if key.startswith("lpips_linear"):
        import lpips  # the pip package

        return Path(lpips.__file__).resolve().parent / "weights" / "v0.1"
    return hub_checkpoint_dir()


def weight_location(key: str, path=None) -> Path:
    """Where the file WEIGHT_FILES[key] is looked for (explicit path > env var > default location), present
    or not: the path the metrics read and ``python -m dps_map.weights`` downloads to."""
    return _locate(WEIGHT_FILES[key], path, _default_dir(key))


def _check_net(net: str) -> str:
    if net not in _NETS:
        raise ValueError(f"LPIPS net must be one of {_NETS}, got {net!r}")
    return net


def lpips_backbone_path(net: str = "alex", path=None) -> Path:
    """Resolve the torchvision backbone file for LPIPS (alexnet-owt-7be5be79.pth / vgg16-397923af.pth)."""
    key = f"lpips_backbone_{_check_net(net)}"
    return _resolve(WEIGHT_FILES[key], path, _default_dir(key))


def lpips_linear_path(net: str = "alex", path=None) -> Path:
    """Resolve the LPIPS v0.1 linear-layer weights (shipped in the lpips package)."""
    key = f"lpips_linear_{_check_net(net)}"
    return _resolve(WEIGHT_FILES[key], path, _default_dir(key))


def fid_inception_path(path=None) -> Path:
    """Resolve pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth)."""
    return _resolve(WEIGHT_FILES["fid_inception"], path, _default_dir("fid_inception"))


def verify_file(key: str, path) -> None:
    """Check a resolved file against the table's sha256 (or its 8-hex hub prefix). Reads the whole file."""
    entry = WEIGHT_FILES[key]
    if entry.sha256 is None and entry.sha256_prefix is None:
        return
    digest = sha256_file(path)
    ok = digest == entry.sha256 if entry.sha256 else digest.startswith(entry.sha256_prefix)
    if not ok:
        raise UserError(
            f"corrupt or wrong {entry.what}: '{path}' has sha256 {digest[:16]}..., expected "
            f"{(entry.sha256 or entry.sha256_prefix)[:16]}...; get it again from {entry.url}"
        )


def needed_weights(metric_names: Iterable[str], lpips_net: str = "alex") -> dict[str, str]:
    """The weight files the metrics need: {'lpips_backbone' | 'lpips_linear' | 'fid_inception': WEIGHT_FILES key}."""
    needed: dict[str, str] = {}
    for name in metric_names:
        for key in METRIC_WEIGHTS.get(str(name), ()):
            needed[key] = f"{key}_{_check_net(lpips_net)}" if key.startswith("lpips") else key
    return needed


def resolve_weights(
    metric_names: Iterable[str], paths: Mapping | None = None, lpips_net: str = "alex"
) -> dict[str, Path]:
    """Resolved path of every weight file the given metrics need, keyed by 'lpips_backbone',
    'lpips_linear', 'fid_inception'. ``paths`` holds the explicit overrides under those keys
    (missing or None = use env var / default location). Raises MissingFileError for the first missing file."""
    paths = dict(paths or {})
    lpips_net = paths.get("lpips_net") or lpips_net
    return {
        short: _resolve(WEIGHT_FILES[key], paths.get(short), _default_dir(key))
        for short, key in needed_weights(metric_names, lpips_net).items()
    }


def check_weights(
    metric_names: Iterable[str], paths: Mapping | None = None, lpips_net: str = "alex", verify: bool = False
) -> None:
    """Fail fast (before sampling): raise MissingFileError for the first weight file that the metrics
    ``metric_names`` need and that cannot be found. ``verify=True`` also checks sha256 (slow: reads files)."""
    resolved = resolve_weights(metric_names, paths, lpips_net)
    if verify:
        net = (dict(paths or {}).get("lpips_net") or lpips_net)
        for key, p in resolved.items():
            verify_file(f"{key}_{net}" if key.startswith("lpips") else key, p)
