"""Conditional adapters: the light-weight conditional score estimator (controlnet.py) and its
training (dps_map/train_adapter.py)."""

from .controlnet import Adapter, adapter_checkpoint, controlled_forward, load_adapter, measurement_hint

__all__ = ["Adapter", "adapter_checkpoint", "controlled_forward", "load_adapter", "measurement_hint"]
