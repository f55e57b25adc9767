"""Configs: composing them (Hydra), checking them, their digest, and building objects from `_target_`.

Importing this package registers the resolvers the shipped YAMLs use (dps_map/config/resolvers.py).
"""

from __future__ import annotations

from . import resolvers as _resolvers
from .checks import (
    PAPER_ADAPTER_TARGETS,
    adapter_training_command,
    check_adapter,
    check_class_label,
    check_data,
    check_keys,
    check_prior_checkpoint,
    prior_image_size,
    resolve_device,
    resolved,
    validate,
)
from .device import device_record, perf_record, prepare_perf, resolve_precision
from .digest import SCHEMA, config_digest
from .sweep import CONF_DIR, compose_job, without_hydra

_resolvers.register()

__all__ = ["CONF_DIR", "SCHEMA", "PAPER_ADAPTER_TARGETS", "adapter_training_command", "check_adapter",
           "check_class_label", "check_data", "check_keys", "check_prior_checkpoint", "compose", "config_digest",
           "device_record", "perf_record", "prepare_perf", "prior_image_size", "resolve_device", "resolve_precision", "resolved",
           "validate"]


def compose(*overrides: str):
    """The config `python -m dps_map.run OVERRIDES` composes, without Hydra's own node."""
    return without_hydra(compose_job(list(overrides)))
