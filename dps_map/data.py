"""Measurement data: image folders, the bundled demo crops (scikit-image photographs), sharding.

A dataset is a list of :class:`Item` (id, image tensor in [-1, 1] of shape (3, S, S), info, ImageNet
class label or None). Ids are stable strings (file stems, or ``<photo>_<k>`` for demo crops) so
outputs and resume are keyed by them, and sharding splits the sorted ids deterministically.

Class labels (for class-conditional priors, ``prior.class_label: data``) come from an ImageFolder
layout ``<root>/<wnid>/<file>`` or from a labels file (``data.labels``): the ILSVRC-2012 validation
solution CSV (``ImageId,PredictionString``, first token the wnid) or plain ``file_stem,index`` lines.
A wnid's index is its position in the sorted list of the 1000 ILSVRC-2012 wnids, the order ADM and
torchvision's ImageFolder use (the list comes from timm, which ships it).
"""

from __future__ import annotations

import csv
import functools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import ConfigError, MissingFileError, UserError
from .io import absolute_path, load_image, pil_to_tensor

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


KAGGLE = "https://www.kaggle.com/c/imagenet-object-localization-challenge"
#: where to get the ImageNet files (login needed: never downloaded); the start-up checks (config/checks.py) and
#: python -m dps_map.weights name it
IMAGENET_WHERE = ("https://image-net.org/download-images.php (the ILSVRC-2012 validation images, 50000 JPEGs; login "
                  f"needed) or ILSVRC/Data/CLS-LOC/val/ of Kaggle's imagenet-object-localization-challenge ({KAGGLE}), "
                  "flat or in <wnid>/ folders")
LABELS_WHERE = (f"LOC_val_solution.csv of Kaggle's imagenet-object-localization-challenge ({KAGGLE}; login needed), "
                "or lay the images out as <wnid>/<file>")

WNID = re.compile(r"^n\d{8}$")


@dataclass
class Item:
    id: str
    image: torch.Tensor
    info: dict = field(default_factory=dict)
    label: int | None = None   # ImageNet class index, where the data gives one


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


def folder_files(path) -> list[tuple[str, Path]]:
    """(id, file) of the images under `path` (recursively), in the order a folder dataset takes them,
    without reading them.

    Files are ordered by file name (then path), so ``max_images=N`` on an ImageFolder layout of ImageNet
    val still takes ILSVRC2012_val_00000001 ... N, the images a flat folder would give. The id is the
    path below the root without extension, '/' replaced by '__'. Listing only: unreadable files are
    found (and skipped) by :func:`folder_items`, which may then take files past the first N.
    """
    root = Path(path)
    if not root.is_dir():
        raise MissingFileError(path, "image folder", "your dataset (any folder of images)",
                               "data.path=/path/to/images")
    files = sorted((p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                   key=lambda p: (p.name, str(p)))
    if not files:
        raise UserError(f"image folder '{root}' contains no images ({', '.join(IMAGE_EXTENSIONS)})")
    out, seen = [], set()
    for p in files:
        ident = str(p.relative_to(root).with_suffix("")).replace("/", "__")
        if ident in seen:
            raise UserError(f"two images map to the same id '{ident}' in '{root}' (same stem, other extension)")
        seen.add(ident)
        out.append((ident, p))
    return out


def folder_items(path, size: int, max_images: int | None = None, labels: str | None = None) -> list[Item]:
    """The first `max_images` readable images of :func:`folder_files`, centre-cropped and resized to
    size x size, each with its class label where the layout or the labels file gives one.

    Unreadable files are skipped with a warning naming them; an empty folder is an error.
    """
    files = folder_files(path)
    class_of = folder_labels(path, files, labels)
    items = []
    for ident, p in files:
        if max_images is not None and len(items) >= max_images:
            break
        try:
            image, info = load_image(p, size)
        except UserError as err:
            log.warning("skipping %s", err)
            continue
        info["file"] = str(p)
        items.append(Item(ident, image, info, class_of.get(ident)))
    if not items:
        raise UserError(f"no readable image in '{path}'")
    return items


# -- ImageNet class labels ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 wnids in class-index order (sorted; ADM's and torchvision's order).

    Read from the list timm ships (timm/data/_info/imagenet_synsets.txt, what timm.data.ImageNetInfo
    reads), located without importing timm (its import takes seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the ImageNet class list comes from the package timm: pip install 'timm>=1.0,<1.1'")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "_info" / "imagenet_synsets.txt"
    wnids = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(wnids) != 1000 or list(wnids) != sorted(wnids):
        raise UserError(f"'{path}' does not hold the 1000 sorted ILSVRC-2012 wnids (timm version?)")
    return wnids


@functools.lru_cache(maxsize=1)
def wnid_indices() -> dict[str, int]:
    """wnid -> ImageNet class index."""
    return {w: i for i, w in enumerate(imagenet_wnids())}


def wnid_index(wnid: str, where: str) -> int:
    """The class index of an ILSVRC-2012 wnid (ConfigError naming `where` for an unknown one)."""
    if wnid not in wnid_indices():
        raise ConfigError(f"{where}: '{wnid}' is not one of the 1000 ILSVRC-2012 classes (wnids like n01440764)")
    return wnid_indices()[wnid]


def read_labels_file(path) -> dict[str, int]:
    """file stem -> class index, from the ILSVRC-2012 val solution CSV (``ImageId,PredictionString``: the
    first token of PredictionString is the wnid) or from plain ``file_stem,index`` lines (a header line
    and blank lines are allowed; the index may also be a wnid)."""
    file = Path(absolute_path(path))
    if not file.is_file():
        raise MissingFileError(file, "class labels file", f"the ILSVRC-2012 val solution CSV ({LABELS_WHERE}) "
                               "or your own 'file_stem,index' lines", "data.labels=/path/to/labels.csv")
    index = wnid_indices()
    labels = {}
    with open(file, newline="") as fh:
        for n, row in enumerate(csv.reader(fh), start=1):
            if not row or not row[0].strip() or (n == 1 and row[0].strip() in ("ImageId", "file", "stem", "id")):
                continue
            if len(row) < 2 or not row[1].split():
                raise ConfigError(f"labels file '{file}' line {n}: expected 'file_stem,index' or "
                                  f"'ImageId,PredictionString', got {','.join(row)!r}")
            stem, value = Path(row[0].strip()).stem, row[1].split()[0]
            if WNID.match(value):
                if value not in index:
                    raise ConfigError(f"labels file '{file}' line {n}: '{value}' is not an ILSVRC-2012 wnid")
                labels[stem] = index[value]
            elif value.isdigit() and int(value) < 1000:
                labels[stem] = int(value)
            else:
                raise ConfigError(f"labels file '{file}' line {n}: the label must be a class index in [0, 1000) "
                                  f"or a wnid, got '{value}'")
    if not labels:
        raise ConfigError(f"labels file '{file}' holds no labels")
    return labels


def folder_labels(root, files: list[tuple[str, Path]], labels_file=None) -> dict[str, int]:
    """id -> class index for the files that have one: from the labels file (by file stem) when given,
    else from the ImageFolder layout (the file's parent folder is a wnid)."""
    if labels_file:
        by_stem = read_labels_file(labels_file)
        return {ident: by_stem[p.stem] for ident, p in files if p.stem in by_stem}
    out = {}
    for ident, p in files:
        parent = p.parent.name if p.parent != Path(root) else ""
        if WNID.match(parent):
            out[ident] = wnid_index(parent, f"image folder '{p.parent}'")
    return out


def check_class_labels(data_cfg) -> None:
    """``prior.class_label: data``: every image the run takes must have a class label (ConfigError
    naming the first ones that do not, and how to give them)."""
    if data_cfg.kind != "folder":
        raise ConfigError(f"prior.class_label=data reads ImageNet class labels from the data, but data={data_cfg.name} "
                          "has none: use a folder dataset, or set prior.class_label to an int or 'random'")
    files = folder_files(absolute_path(data_cfg.path))
    files = files[:data_cfg.get("max_images") or len(files)]
    have = folder_labels(absolute_path(data_cfg.path), files, data_cfg.get("labels"))
    missing = [ident for ident, _ in files if ident not in have]
    if missing:
        source = f"labels file '{data_cfg.labels}'" if data_cfg.get("labels") else \
            "the folder layout (no <root>/<wnid>/<file>)"
        raise ConfigError(f"prior.class_label=data: {len(missing)} of {len(files)} images have no class label in "
                          f"{source}, e.g. {missing[:3]}; lay images out as <root>/<wnid>/<file>, pass "
                          "data.labels=FILE (ILSVRC-2012 val solution CSV or 'file_stem,index' lines), or set "
                          "prior.class_label to an int or 'random'")


def shard(items: list, num_shards: int, index: int) -> list:
    """Deterministic split by sorted id: shard k gets ids k, k + n, k + 2n, ... (covers every id once)."""
    if num_shards < 1 or not 0 <= index < num_shards:
        raise ConfigError(f"data.shard={index} must lie in [0, data.num_shards={num_shards})")
    ordered = sorted(items, key=lambda it: it.id)
    return ordered[index::num_shards]
