"""Tuned step sizes live in dps_map/conf/tuned/: looked up per (prior, task, sampler), else the sampler's default."""

import logging

from dps_map import tuned
from dps_map.config import resolved

from support import CONF, compose


def sampler_of(*overrides):
    return resolved(compose(*overrides))["sampler"]


def test_lookup_order_prior_and_task_then_prior_then_sampler_default(caplog, monkeypatch):
    monkeypatch.setattr(tuned, "_logged", set())
    assert sampler_of("task=sr4", "sampler=dps")["zeta"] == 10.0
    assert sampler_of("task=gaussian_deblur", "sampler=dmap")["zeta"] == 10.0
    assert sampler_of("task=inpaint_box", "sampler=dps")["zeta"] == 3.0
    assert sampler_of("task=gmm_linear", "sampler=dsg")["w"] == 0.3
    # another prior never takes the tiny prior's values: adm512 has its own for every task, with or without
    # the paper preset (the tiny prior's 50-step zeta 10 would be far too large at 1000 steps)
    for adm in (["prior=adm512", "prior.random_init=true"], ["+experiment=paper", "prior.random_init=true"]):
        assert sampler_of(*adm, "task=sr4", "sampler=dmap")["zeta"] == 1.0
        assert sampler_of(*adm, "task=sr4", "sampler=dps")["zeta"] == 1.0
        assert sampler_of(*adm, "task=sr4", "sampler=dmap_adam")["zeta"] == 0.05
    assert sampler_of("prior=adm512", "task=sr4", "sampler=dps", "+tuned.priors.adm512.sr4.dps.zeta=2.5")["zeta"] == 2.5
    # a variant borrows the tuned value of the sampler it names until it has its own (YAML: ${dps_map_tuned:zeta,1.0,dps})
    variant = ["sampler=dps", "sampler.name=dps_variant", "sampler.zeta=${dps_map_tuned:zeta,1.0,dps}"]
    assert sampler_of("task=gaussian_deblur", *variant)["zeta"] == 10.0
    assert sampler_of("task=gmm_linear", *variant)["zeta"] == 0.1
    # the command line beats the table
    assert sampler_of("task=sr4", "sampler=dps", "sampler.zeta=4")["zeta"] == 4
    # no entry for this prior: the sampler YAML's default, with one warning naming the value and where it came
    # from, however often the config is resolved
    with caplog.at_level(logging.INFO, logger="dps_map.tuned"):
        for _ in range(3):
            assert sampler_of("prior=sd2_tiny", "task=sr4", "sampler=dps")["zeta"] == 1.0
    notes = [r for r in caplog.records if "not a value tuned for this prior" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in notes] == [(logging.WARNING, (
        "sampler=dps, task=sr4, prior=sd2_tiny: zeta=1.0 is the default of the sampler's YAML (dps.yaml), not a value "
        "tuned for this prior (none under tuned.priors.sd2_tiny in dps_map/conf/tuned/default.yaml); tune it on "
        "validation images and set sampler.zeta"))]


def test_no_task_file_holds_a_step_size():
    for path in (CONF / "task").glob("*.yaml"):
        text = path.read_text()
        assert "zeta" not in text and "\nw:" not in text, path


def test_config_digests_of_existing_configurations_are_unchanged():
    """The digest of a config is the one the same config had when task files held the step sizes and
    YAMLs had no _target_ (run directories written then are still resumed, not refused)."""
    from omegaconf import OmegaConf

    from dps_map.config import config_digest

    old_zeta = {"dps": 10.0, "dmap": 3.0, "dmap_adam": 0.05, "adapter_dps": 10.0, "adapter_dmap": 3.0}
    for overrides, zeta, w in ((["task=sr4", "sampler=dps"], dict(old_zeta, dmap=10.0, dmap_adam=0.01, adapter_dmap=10.0),
                                0.08),
                               (["task=gaussian_deblur", "sampler=dmap"], dict(old_zeta, dps=10.0, dmap=10.0,
                                                                                adapter_dmap=10.0), 0.08),
                               (["+experiment=paper", "task=sr8", "sampler=dsg"],
                                dict.fromkeys(old_zeta, 1.0) | {"dmap_adam": 0.05}, 0.08)):
        cfg = compose(*overrides)
        old = OmegaConf.create(resolved(cfg))  # as the old YAMLs composed: no tuned group, no _target_,
        del old["tuned"]                       # the task's step sizes in the task
        del old.task["_target_"], old.sampler["_target_"]
        old.task.zeta, old.task.w = zeta, {"dsg": w}
        assert config_digest(cfg) == config_digest(old), overrides
        changed = OmegaConf.merge(old, {"task": {"zeta": {"dps": 11.0}}})
        assert config_digest(changed) != config_digest(old)
