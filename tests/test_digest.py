"""The config digest (a run's identity) and the run directories written before it changed."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from dps_map.config import config_digest
from dps_map.config.keys import DIRNAME_EXCLUDED
from dps_map.errors import ConfigError
from dps_map.migrate import v1_digest
from dps_map.runner.rundir import claim_run_dir

from support import CONF, compose, run_with_guard

#: absolute install paths pinned, so the 0.1 digests below do not depend on where the checkout lives
FIXED_PATHS = ("paths.tiny_prior=/p/tiny_prior.pt", "paths.adapter=/p/adapter.pt", "paths.tiny_sr4_reference=/p/ref.pt")
#: digests dps-map 0.1 (commit 14d23b4, dps_map/config.py) gave these configs, computed with that code
V1_DIGESTS = {("prior=tiny", "task=sr4", "sampler=dps"): "d009fda2cc3d2e2b",
              ("prior=tiny", "task=inpaint_box", "sampler=dsg", "seed=3"): "fbaad6266df73238",
              ("task=gmm_linear", "sampler=dmap"): "bd2c89250015a59a",
              ("+experiment=paper", "task=sr8", "sampler=dmap", "prior.random_init=true"): "75cb49248cdaa774"}


#: the perf node every dps-map 0.1 and 0.2 config had (perf.precision and the backend switches came later)
V1_PERF = {"autocast": None, "channels_last": False, "compile": False, "compile_mode": None,
           "compile_backend": "inductor", "grad_checkpoint": False}


def as_saved_by_0_1(overrides):
    """The .hydra/config.yaml dps-map 0.1 saved for these overrides: today's config with 0.1's perf node, and the
    paper preset's ADM fp16 UNet (now perf.precision=auto)."""
    cfg = compose(*overrides, *FIXED_PATHS)
    cfg.perf = V1_PERF
    if "+experiment=paper" in overrides:
        cfg.prior.unet.use_fp16 = True
    return cfg


@pytest.mark.parametrize("overrides", list(V1_DIGESTS))
def test_migrate_recomputes_the_digests_of_dps_map_0_1(overrides):
    assert v1_digest(as_saved_by_0_1(overrides)) == V1_DIGESTS[overrides]


def test_help_text_paths_and_tuned_table_do_not_change_the_digest():
    base = ("prior=tiny", "task=sr4", "sampler=dps")
    digest = config_digest(compose(*base))
    for same in ("prior.what=reworded", "prior.url=elsewhere", "prior.override=another", "paths.fid_stats=/x.npz",
                 "paths.checkpoints=/elsewhere", "paths.tiny_prior=/moved/tiny_prior.pt", "metrics=fast",
                 "device=cpu", "measurement_batch=4", "data.shard=1", "data.num_shards=2", "progress=false",
                 "overwrite=true", "logger=wandb", "tuned.priors.tiny.sr4.dmap.zeta=3"):  # dmap's: not this sampler
        assert config_digest(compose(*base, same)) == digest, same
    for other in ("sampler.zeta=3", "tuned.priors.tiny.sr4.dps.zeta=3", "seed=1", "task.sigma_y=0.1",
                  "prior.respacing=20", "num_samples=2", "perf.channels_last=true", "data.per_photo=2",
                  "+data.photos=[rocket]", "prior.unet.num_channels=48", "task=sr8", "sampler=dmap"):
        assert config_digest(compose(*base, other)) != digest, other


def test_dirname_exclusions_are_the_one_list():
    """conf/config.yaml cannot import Python: its override_dirname.exclude_keys is held equal to the list."""
    text = yaml.safe_load((CONF / "config.yaml").read_text())
    assert tuple(text["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]) == DIRNAME_EXCLUDED


def test_old_run_json_is_refused_in_one_line(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"digest": "0123456789abcdef", "version": "0.1.0"}))
    with pytest.raises(ConfigError) as err:
        claim_run_dir(tmp_path, "fedcba9876543210", overwrite=False)
    assert "\n" not in str(err.value) and f"python -m dps_map.migrate {tmp_path}" in str(err.value)
    claim_run_dir(tmp_path, "fedcba9876543210", overwrite=True)  # overwrite=true replaces it
    assert json.loads((tmp_path / "run.json").read_text())["schema"] == 2


def _run(out: Path, *extra):
    return run_with_guard([sys.executable, "-m", "dps_map.run", "task=gmm_linear", "prior=gmm", "data=gmm",
                           "sampler=exact", "num_samples=20", "progress=false", f"hydra.run.dir={out}", *extra],
                          capture_output=True, text=True, cpu_limit=300)


def test_a_run_dir_of_dps_map_0_1_is_refused_then_migrated(tmp_path):
    out = tmp_path / "run"
    assert _run(out).returncode == 0
    samples = (out / "samples.npy").read_bytes()
    saved = yaml.safe_load((out / ".hydra" / "config.yaml").read_text())
    from omegaconf import OmegaConf

    old = v1_digest(OmegaConf.create(saved))
    marker = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({"digest": old, "version": "0.1.0", "weights": marker.get("weights", {})}))

    refused = _run(out)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "dps-map 0.1" in lines[0] and f"python -m dps_map.migrate {out}" in lines[0]
    assert (out / "samples.npy").read_bytes() == samples  # nothing lost

    tampered = tmp_path / "tampered"
    assert _run(tampered, "seed=5").returncode == 0
    (tampered / "run.json").write_text(json.dumps({"digest": "0123456789abcdef", "version": "0.1.0"}))
    migrate = run_with_guard([sys.executable, "-m", "dps_map.migrate", str(tmp_path)], capture_output=True,
                             text=True, cpu_limit=120)
    assert migrate.returncode == 1, migrate.stderr  # the tampered one is reported and left alone
    assert f"{out}: migrated {old} -> " in migrate.stdout and f"{tampered}: NOT migrated" in migrate.stdout
    assert "schema" not in json.loads((tampered / "run.json").read_text())
    new = json.loads((out / "run.json").read_text())
    assert new["schema"] == 2 and new["digest"] == json.loads((out / "summary.json").read_text())["digest"]

    again = _run(out)
    assert again.returncode == 0, again.stderr
    assert (out / "samples.npy").read_bytes() == samples
