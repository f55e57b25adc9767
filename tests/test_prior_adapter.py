"""prior.adapter=FILE: the adapter belongs to the prior. Any prior with an adapter is the conditional prior
(priors.conditional.with_adapter), bound by the runner to each measurement, so every guided sampler runs on it;
the sampler=adapter* names are presets (the base method + the adapter), which sample bit for bit the same."""

import json
from pathlib import Path

import pytest

from dps_map import ASSETS
from dps_map.config import config_digest
from dps_map.errors import ConfigError, MissingFileError
from dps_map.io import read_jsonl
from dps_map.runner import run

from support import compose

SR4_TINY = ASSETS / "adapters" / "sr4_tiny.pt"
SMALL = ["prior=tiny", "task=sr4", "data=demo", "data.per_photo=2", "+data.photos=[chelsea]", "sampler.respacing=6",
         "metrics=fast", "progress=false"]


def outputs(out: Path) -> tuple[list, dict]:
    """(metrics.jsonl records without their timings, the recon PNGs' bytes)."""
    records = [{k: v for k, v in r.items() if k not in ("seconds",)} for r in read_jsonl(out / "metrics.jsonl")]
    return records, {p.name: p.read_bytes() for p in sorted((out / "recon").glob("*.png"))}


@pytest.mark.parametrize("base, knobs", [("dps", ["sampler.zeta=10"]), ("dmap", ["sampler.zeta=10", "sampler.num_inner=2"])])
def test_base_sampler_with_prior_adapter_is_the_adapter_preset_bit_for_bit(base, knobs, tmp_path):
    """`sampler=dps prior.adapter=FILE` gives adapter_dps's samples (records with every metric to the last bit, and
    the PNGs) for the same seed, on the tiny prior with the shipped sr4 adapter; without the adapter dps samples
    otherwise. The same for dmap, a guided sampler with inner steps."""
    preset = run(compose(*SMALL, f"sampler=adapter_{base}", f"sampler.adapter={SR4_TINY}", *knobs), tmp_path / "preset")
    mine = run(compose(*SMALL, f"sampler={base}", f"prior.adapter={SR4_TINY}", *knobs), tmp_path / "prior")
    run(compose(*SMALL, f"sampler={base}", *knobs), tmp_path / "plain")
    assert preset["n_new_samples"] == mine["n_new_samples"] == 2
    records, pngs = outputs(tmp_path / "preset")
    assert outputs(tmp_path / "prior") == (records, pngs)
    plain_records, plain_pngs = outputs(tmp_path / "plain")
    assert [r["psnr"] for r in plain_records] != [r["psnr"] for r in records] and plain_pngs != pngs
    weights = [json.loads((tmp_path / d / "run.json").read_text())["weights"]["adapter"] for d in ("preset", "prior")]
    assert weights[0] == weights[1] is not None  # the adapter's content, wherever it is named


def test_prior_adapter_digest_says_whether_one_is_set():
    """The digest keeps prior.adapter's presence (a dps run dir is not resumed with an adapter) but not its path
    (run.json's weights identify the file); configs without one keep the digests they had."""
    plain = config_digest(compose(*SMALL, "sampler=dps"))
    with_one = config_digest(compose(*SMALL, "sampler=dps", f"prior.adapter={SR4_TINY}"))
    elsewhere = config_digest(compose(*SMALL, "sampler=dps", "prior.adapter=/moved/sr4_tiny.pt"))
    assert plain != with_one == elsewhere


def test_prior_adapter_start_up_checks(tmp_path):
    """A missing file is one line naming it, how to train it and prior.adapter=; an adapter for another operator
    stops before any sample; a prior that is already conditional refuses one."""
    from dps_map.config import validate

    with pytest.raises(MissingFileError, match=r"missing.pt.*train_adapter task=sr4 prior=tiny.*prior.adapter="):
        validate(compose(*SMALL, "sampler=dps", f"prior.adapter={tmp_path / 'missing.pt'}"))
    with pytest.raises(ConfigError, match="trained for operator"):
        run(compose(*SMALL, "task=gaussian_deblur", "sampler=dsg", f"prior.adapter={SR4_TINY}"), tmp_path / "deblur")
    with pytest.raises(ConfigError, match="already conditional"):
        validate(compose(*SMALL, "prior=tiny_sr4_reference", "sampler=dps", f"prior.adapter={SR4_TINY}"))
