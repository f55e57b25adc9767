"""Tuned step sizes live in conf/tuned/: looked up per (prior, task, sampler), else the sampler's default."""

import logging

from dps_map.config import resolved, tuned

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
    with caplog.at_level(logging.INFO, logger="dps_map.config.tuned"):
        for _ in range(3):
            assert sampler_of("prior=sd2_tiny", "task=sr4", "sampler=dps")["zeta"] == 1.0
    notes = [r for r in caplog.records if "not a value tuned for this prior" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in notes] == [(logging.WARNING, (
        "sampler=dps, task=sr4, prior=sd2_tiny: zeta=1.0 is the default of the sampler's YAML (dps.yaml), not a value "
        "tuned for this prior (none under tuned.priors.sd2_tiny in conf/tuned/default.yaml); tune it on "
        "validation images and set sampler.zeta"))]


def test_no_task_file_holds_a_step_size():
    for path in (CONF / "task").glob("*.yaml"):
        text = path.read_text()
        assert "zeta" not in text and "\nw:" not in text, path
