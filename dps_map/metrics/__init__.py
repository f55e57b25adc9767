"""Image-quality, distribution and diversity metrics. Images: float tensors in [-1, 1], (B, C, H, W).

Depends only on torch/numpy/scipy, lpips, pytorch_fid, skimage and dps_map.errors. Nothing downloads:
weight files are resolved by dps_map.metrics.weight_files (explicit path > env var > torch hub cache).
"""

from dps_map.metrics.diversity import pairwise_l2, pairwise_lpips, pixel_std
from dps_map.metrics.fid import (
    InceptionFeatures,
    feature_stats,
    fid_from_features,
    frechet_distance,
    kid,
    load_stats,
    save_stats,
)
from dps_map.metrics.image import psnr, ssim
from dps_map.metrics.lpips import LPIPS
from dps_map.metrics.score import score_error, score_mean
from dps_map.metrics.weight_files import (
    METRIC_WEIGHTS,
    WEIGHT_FILES,
    check_weights,
    fid_inception_path,
    lpips_backbone_path,
    lpips_linear_path,
    resolve_weights,
)

__all__ = [
    "psnr",
    "score_error",
    "score_mean",
    "ssim",
    "LPIPS",
    "frechet_distance",
    "kid",
    "feature_stats",
    "fid_from_features",
    "InceptionFeatures",
    "save_stats",
    "load_stats",
    "pixel_std",
    "pairwise_l2",
    "pairwise_lpips",
    "WEIGHT_FILES",
    "METRIC_WEIGHTS",
    "check_weights",
    "resolve_weights",
    "fid_inception_path",
    "lpips_backbone_path",
    "lpips_linear_path",
]
