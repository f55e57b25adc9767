"""Reference FID/KID statistics from a folder of ground-truth images.

    python -m dps_map.fid_stats FOLDER OUT.npz [--image-size N] [--batch-size B]
                                        [--inception PATH] [--device auto] [--limit K]

Images (all files with an image extension under FOLDER, recursively, in sorted path order) are
centre-cropped to a square on their short side, resized to N x N (PIL bicubic with antialiasing),
mapped to [-1, 1] and passed through pytorch-fid's Inception (InceptionFeatures). Writes OUT.npz with
mu, sigma (float64) and feats (float32, for KID). A user error (missing weights, empty folder) prints
one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from dps_map.config import resolve_device
from dps_map.errors import UserError
from dps_map.io import load_image as io_load_image

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def list_images(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder '{folder}' does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under '{folder}'")
    return files


def load_image(path, image_size: int) -> torch.Tensor:
    """A (3, N, N) image in [-1, 1], loaded exactly as a run loads its ground truths (dps_map.io.load_image:
    centre crop, PIL bicubic resize, transparency on white); an unreadable file is a one-line error."""
    return io_load_image(path, image_size)[0]


def compute_folder_features(files, image_size: int, batch_size: int, model, device, progress: bool = True) -> np.ndarray:
    from tqdm import tqdm

    feats = []
    for b in tqdm(range(0, len(files), batch_size), desc="inception features", unit="batch", disable=not progress):
        x = torch.stack([load_image(f, image_size) for f in files[b : b + batch_size]]).to(device)
        feats.append(model(x).cpu().numpy().astype(np.float64))
    return np.concatenate(feats, 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dps_map.fid_stats", description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--image-size", type=int, default=256, help="square size after centre crop (default 256)")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--inception", default=None, help="path to pt_inception-2015-12-05-6726825d.pth")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--limit", type=int, default=None, help="use only the first K images (sorted order)")
    ap.add_argument("--random-weights", action="store_true", help=argparse.SUPPRESS)  # tests only
    args = ap.parse_args(argv)
    try:
        from dps_map.metrics.fid import InceptionFeatures, feature_stats, save_stats

        # Resolve the weights before touching the images: fail fast.
        model = InceptionFeatures(weights_path=args.inception, random_weights=args.random_weights)
        files = list_images(args.folder)
        if args.limit is not None:
            files = files[: args.limit]
        if len(files) < 2:
            raise UserError(f"need at least 2 images for statistics, found {len(files)} under '{args.folder}'")
        device = resolve_device(args.device)
        model.to(device)
        feats = compute_folder_features(files, args.image_size, args.batch_size, model, device)
        mu, sigma = feature_stats(feats)
        save_stats(args.out, mu, sigma, feats)
    except UserError as e:
        hint = " (for this command: --inception PATH)" if "paths.fid_inception" in str(e) else ""
        print(f"error: {e}{hint}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    print(f"wrote {args.out}: {len(files)} images, {feats.shape[1]}-d features", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
