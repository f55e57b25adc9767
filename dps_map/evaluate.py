"""Evaluation of a run's samples: per-sample scores (PSNR, SSIM, LPIPS) while sampling, and
run-level scores (FID, KID, diversity) computed from the images on disk, so resumed and sharded
runs are scored exactly like uninterrupted ones."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .io import load_image

log = logging.getLogger(__name__)


class Evaluator:
    """Holds the metric networks a config asks for (built once; weights resolved via paths.*)."""

    def __init__(self, mcfg, paths, device):
        from .metrics import InceptionFeatures, LPIPS, check_weights

        self.names = set(mcfg.names)
        self.device = device
        self.kid_subsets, self.kid_subset_size = mcfg.get("kid_subsets", 100), mcfg.get("kid_subset_size", 10)
        random = bool(mcfg.get("random_weights", False))
        if random:
            log.warning("metrics.random_weights=true: LPIPS/FID/KID use random networks (tests only)")
        else:
            check_weights(list(mcfg.names), dict(paths), mcfg.get("lpips_net", "alex"))  # config order
        self.lpips = None
        if "lpips" in self.names:  # also gives diversity its pairwise LPIPS
            self.lpips = LPIPS(mcfg.get("lpips_net", "alex"), backbone_path=paths.get("lpips_backbone"),
                               random_backbone=random, device=device)
        self.inception = None
        if {"fid", "kid"} & self.names:
            self.inception = InceptionFeatures(weights_path=paths.get("fid_inception"), random_weights=random,
                                               device=device)

    def per_sample(self, x: torch.Tensor, ref: torch.Tensor) -> dict[str, list[float]]:
        """Scores of each sample in x against its ground truth ref (same shape)."""
        from .metrics import psnr, ssim

        x = torch.nan_to_num(x).clamp(-1, 1)
        out = {"psnr": [float(v) for v in psnr(x, ref)], "ssim": [float(v) for v in ssim(x, ref)]}
        if self.lpips is not None and "lpips" in self.names:
            with torch.no_grad():
                out["lpips"] = [float(v) for v in self.lpips(x, ref)]
        return out

    def per_run(self, out: Path, ids: list[str], size: int) -> dict:
        """FID/KID of all reconstructions against all ground truths, and diversity per measurement."""
        from .metrics import fid_from_features, kid, pairwise_l2, pairwise_lpips, pixel_std

        recon = {i: sorted((out / "recon").glob(f"{i}_*.png")) for i in ids}
        result = {}
        if self.inception is not None:
            fake = self._features([p for i in ids for p in recon[i]], size)
            real = self._features([out / "label" / f"{i}.png" for i in ids], size)
            if len(fake) >= 2 and len(real) >= 2:
                if "fid" in self.names:
                    result["fid"] = fid_from_features(fake, real)
                if "kid" in self.names:
                    mean, std = kid(fake, real, subsets=self.kid_subsets,
                                    subset_size=min(self.kid_subset_size, len(fake), len(real)),
                                    generator=np.random.default_rng(0))
                    result["kid"] = {"mean": float(mean), "std": float(std)}
            else:
                log.warning("FID/KID need at least 2 images on each side; skipped")
        if "diversity" in self.names:
            per_id = []
            for i in ids:
                if len(recon[i]) < 2:
                    continue
                samples = torch.stack([load_image(p, size)[0] for p in recon[i]]).to(self.device)
                row = {"pixel_std": pixel_std(samples), "pairwise_l2": pairwise_l2(samples)}
                if self.lpips is not None:
                    row["pairwise_lpips"] = pairwise_lpips(samples, self.lpips)
                per_id.append(row)
            if per_id:
                result["diversity"] = {k: float(np.mean([r[k] for r in per_id])) for k in per_id[0]}
                result["diversity"]["n_measurements"] = len(per_id)
        return result

    def _features(self, files, size: int) -> np.ndarray:
        feats = []
        for start in range(0, len(files), 16):
            batch = torch.stack([load_image(p, size)[0] for p in files[start:start + 16]]).to(self.device)
            with torch.no_grad():
                feats.append(self.inception(batch).cpu().numpy())
        return np.concatenate(feats) if feats else np.zeros((0, 2048))
