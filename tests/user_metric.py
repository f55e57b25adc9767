"""A user's own per-sample metrics, as a module outside dps_map would hold them (tests/test_user_metric.py names
them with `+metrics.extra.NAME._target_=user_metric.CLASS`; pytest puts tests/ on sys.path)."""

import torch


class MeanAbsoluteError:
    """Mean absolute difference per sample over (C, H, W), in the units of the images ([-1, 1]) times `scale`."""

    higher_is_better = False

    def __init__(self, scale: float = 1.0):
        self.scale = float(scale)

    def __call__(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x_hat - x).abs().flatten(1).mean(1)


class BatchMean(MeanAbsoluteError):
    """The common mistake: one number for the whole batch instead of one per sample."""

    def __call__(self, x_hat, x):
        return super().__call__(x_hat, x).mean()
