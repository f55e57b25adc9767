"""Measurement data: image folders, the bundled demo crops (scikit-image photographs), sharding.

A dataset is a list of :class:`Item` (id, image tensor in [-1, 1] of shape (3, S, S), info). Ids are
stable strings (file stems, or ``<photo>_<k>`` for demo crops) so outputs and resume are keyed by
them, and sharding splits the sorted ids deterministically.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import ConfigError, MissingFileError, UserError
from .io import load_image, pil_to_tensor

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")

#: scikit-image's bundled RGB photographs (no download needed). Stereo motorcycle gives two views.
PHOTOS = {
    "astronaut": lambda d: d.astronaut(),
    "chelsea": lambda d: d.chelsea(),
    "coffee": lambda d: d.coffee(),
    "hubble_deep_field": lambda d: d.hubble_deep_field(),
    "immunohistochemistry": lambda d: d.immunohistochemistry(),
    "motorcycle_left": lambda d: d.stereo_motorcycle()[0],
    "motorcycle_right": lambda d: d.stereo_motorcycle()[1],
    "retina": lambda d: d.retina(),
    "rocket": lambda d: d.rocket(),
}
#: never used for training the tiny prior or adapters: the demo and test images
HELDOUT_PHOTOS = ("chelsea", "coffee")
TRAIN_PHOTOS = tuple(name for name in PHOTOS if name not in HELDOUT_PHOTOS)


@dataclass
class Item:
    id: str
    image: torch.Tensor
    info: dict = field(default_factory=dict)


def load_photo(name: str) -> np.ndarray:
    """A bundled photograph as an (H, W, 3) uint8 array."""
    import skimage.data

    if name not in PHOTOS:
        raise ConfigError(f"unknown photograph '{name}'; bundled: {sorted(PHOTOS)}")
    return np.ascontiguousarray(PHOTOS[name](skimage.data))


def demo_photos(data_cfg) -> tuple[str, ...]:
    """The photographs data=demo crops: the held-out ones, or ``+data.photos=[...]`` (e.g. training
    photographs as a validation set for step sizes; the held-out ones are the test set)."""
    photos = data_cfg.get("photos") or HELDOUT_PHOTOS
    if isinstance(photos, str) or not all(isinstance(p, str) for p in photos):
        raise ConfigError(f"data.photos must be a list of photograph names, got {photos!r}")
    unknown = sorted(set(photos) - set(PHOTOS))
    if unknown:
        raise ConfigError(f"data.photos: unknown photograph(s) {unknown}; bundled: {sorted(PHOTOS)}")
    return tuple(photos)


def demo_crops(size: int, per_photo: int = 4, photos=HELDOUT_PHOTOS) -> list[Item]:
    """Fixed crops of the held-out photographs: per photo, squares of half the short side at evenly
    spread positions along the long side and the centre row, resized to size x size."""
    items = []
    for name in photos:
        arr = load_photo(name)
        h, w = arr.shape[:2]
        side = min(h, w) // 2
        lefts = np.linspace(0, w - side, per_photo).round().astype(int)
        tops = np.linspace(0, h - side, per_photo).round().astype(int)[::-1]
        for k, (top, left) in enumerate(zip(tops, lefts)):
            crop = Image.fromarray(arr[top:top + side, left:left + side])
            image, info = pil_to_tensor(crop, size)
            info.update(photo=name, box=[int(top), int(left), int(side)])
            items.append(Item(f"{name}_{k}", image, info))
    return items


def folder_items(path, size: int, max_images: int | None = None) -> list[Item]:
    """All images under `path` (recursively), centre-cropped and resized to size x size.

    Unreadable files are skipped with a warning naming them; an empty folder is an error.
    """
    root = Path(path)
    if not root.is_dir():
        raise MissingFileError(path, "image folder", "your dataset (any folder of images)",
                               "data.path=/path/to/images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise UserError(f"image folder '{root}' contains no images ({', '.join(IMAGE_EXTENSIONS)})")
    items, seen = [], set()
    for p in files:
        if max_images is not None and len(items) >= max_images:
            break
        ident = str(p.relative_to(root).with_suffix("")).replace("/", "__")
        if ident in seen:
            raise UserError(f"two images map to the same id '{ident}' in '{root}' (same stem, other extension)")
        try:
            image, info = load_image(p, size)
        except UserError as err:
            log.warning("skipping %s", err)
            continue
        seen.add(ident)
        info["file"] = str(p)
        items.append(Item(ident, image, info))
    if not items:
        raise UserError(f"no readable image in '{root}'")
    return items


def shard(items: list, num_shards: int, index: int) -> list:
    """Deterministic split by sorted id: shard k gets ids k, k + n, k + 2n, ... (covers every id once)."""
    if num_shards < 1 or not 0 <= index < num_shards:
        raise ConfigError(f"data.shard={index} must lie in [0, data.num_shards={num_shards})")
    ordered = sorted(items, key=lambda it: it.id)
    return ordered[index::num_shards]
