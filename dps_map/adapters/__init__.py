"""Conditional adapters: the light-weight conditional score estimator on an ADM UNet (adm_controlnet.py) and its
training (dps_map/train_adapter.py)."""

from .adm_controlnet import Adapter, adapter_checkpoint, controlled_forward, load_adapter, measurement_hint

__all__ = ["Adapter", "adapter_checkpoint", "controlled_forward", "load_adapter", "measurement_hint"]
