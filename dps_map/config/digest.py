"""The config digest: the identity of a run's samples, written to run.json and summary.json.

Two runs with one digest (and the same weight files, compared by content through run.json's "weights")
produce the same samples; a run directory refuses outputs of another digest. The digest hashes the resolved
config minus :data:`dps_map.config.keys.DIGEST_EXCLUDED`: settings that do not change the samples, keys
whose value is counted elsewhere, and help text.
"""

from __future__ import annotations

import hashlib

from omegaconf import DictConfig, OmegaConf

from .checks import resolved
from .keys import DIGEST_EXCLUDED

#: run.json's "schema": 2 is this digest; run directories of schema 1 (dps-map 0.1) are refused until migrated
#: with `python -m dps_map.migrate DIR`
SCHEMA = 2


def without_keys(plain: dict, dotted) -> dict:
    """A copy of a nested dict without the given dotted keys (absent ones are ignored)."""
    out = dict(plain)
    for key in dotted:
        head, _, rest = key.partition(".")
        if head not in out:
            continue
        if rest:
            if isinstance(out[head], dict):
                out[head] = without_keys(out[head], [rest])
        else:
            del out[head]
    return out


def adapter_flag(plain: dict) -> dict:
    """prior.adapter as the digest sees it: whether the prior has an adapter (true), or nothing when it has none
    (so configs without one keep their digests). Its file is a weight (run.json's "weights": "adapter")."""
    prior = plain.get("prior")
    if not isinstance(prior, dict) or "adapter" not in prior:
        return plain
    prior = {k: v for k, v in prior.items() if k != "adapter"}
    return {**plain, "prior": {**prior, "adapter": True} if plain["prior"]["adapter"] else prior}


def digest_of(plain: dict) -> str:
    """sha256 (first 16 hex) of a resolved config's YAML with sorted keys, after leaving out DIGEST_EXCLUDED
    (prior.adapter: only whether one is set, :func:`adapter_flag`)."""
    blob = OmegaConf.to_yaml(OmegaConf.create(without_keys(adapter_flag(plain), DIGEST_EXCLUDED)), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_digest(cfg: DictConfig) -> str:
    """The digest of a composed config (every interpolation resolved first)."""
    return digest_of(resolved(cfg))
