"""Start-up checks, sweep expansion and the tuned-value lookup of dps_map/config, each on the boundary where a
wrong check would let an impossible config through or expand a command line into the wrong jobs. Every case
composes configs only (no model is built): fast."""

from __future__ import annotations

import re

import pytest

from dps_map.config import resolved, tuned, validate
from dps_map.config.sweep import MAX_SUBDIR, expand_jobs, job_subdir
from dps_map.errors import ConfigError

from support import compose


def refused(*overrides) -> str:
    """validate's one-line message for an impossible config."""
    with pytest.raises(ConfigError) as err:
        validate(compose(*overrides))
    message = str(err.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("bad,good,match", [
    # SR: the factor must divide the prior's image size (36 = 4 x 9 is not a multiple of 8)
    (["task=sr8", "prior.unet.image_size=36"], ["task=sr4", "prior.unet.image_size=36"], "does not divide"),
    # blur: a kernel of half-width >= the image size cannot be reflected; half-width 31 < 32 can
    (["task=gaussian_deblur", "prior.unet.image_size=32", "task.kernel_size=65"],
     ["task=gaussian_deblur", "prior.unet.image_size=32", "task.kernel_size=63"], "kernel is too large"),
    # box inpainting: a box that rounds to 0 pixels (0.007 x 64 = 0.45) hides nothing; 0.01 x 64 rounds to 1
    (["task=inpaint_box", "task.box_fraction=0.007"], ["task=inpaint_box", "task.box_fraction=0.01"], "does not fit"),
    # shards: shard k of n must lie in [0, n)
    (["data.shard=2", "data.num_shards=2"], ["data.shard=1", "data.num_shards=2"], r"data.shard=2 must lie in \[0"),
    # learned_range reads the variance channels only a learn_sigma prior has (the tiny prior has none)
    (["sampler.variance=learned_range"], ["sampler.variance=fixed_small"], "learn_sigma"),
    # the Gaussian-mixture problem is task, prior and data together
    (["task=gmm_linear", "prior=gmm", "data=demo"], ["task=gmm_linear", "prior=gmm", "data=gmm"], "do not fit together"),
    (["task=gmm_linear", "prior=tiny", "data=gmm"], ["task=gmm_linear", "prior=gmm", "data=gmm"], "do not fit together"),
    # the exact posterior exists for the Gaussian mixture only
    (["sampler=oracle"], ["task=gmm_linear", "prior=gmm", "data=gmm", "sampler=oracle"], "exact posterior"),
], ids=["sr_factor", "blur_kernel", "box_size", "shard", "learned_range", "gmm_data", "gmm_prior", "exact_posterior"])
def test_an_impossible_config_is_refused_in_one_line_and_its_valid_neighbour_passes(bad, good, match):
    message = refused("prior=tiny", *bad)
    assert re.search(match, message), message
    validate(compose("prior=tiny", *good))


def test_a_multirun_expands_into_the_cartesian_product_each_in_its_own_directory():
    jobs = expand_jobs(["task=sr4,sr8", "sampler=dps,dmap", "seed=range(0,2)", "data.per_photo=1"])
    combos = {(j.cfg.task.name, j.cfg.sampler.name, j.cfg.seed) for j in jobs}
    assert len(jobs) == 8 and combos == {(t, s, k) for t in ("sr4", "sr8") for s in ("dps", "dmap") for k in (0, 1)}
    assert all(j.cfg.data.per_photo == 1 for j in jobs)
    assert all(set(j.overrides) >= {"data.per_photo=1"} and len(j.overrides) == 4 for j in jobs)
    dirs = {j.run_dir for j in jobs}
    assert len(dirs) == 8 and len({d.parent for d in dirs}) == 1  # one sweep dir, one subdir per job
    for job in jobs:
        assert f"task={job.cfg.task.name}" in job.run_dir.name and f"seed={job.cfg.seed}" in job.run_dir.name
    with pytest.raises(ConfigError, match="add -m"):
        expand_jobs(["task=sr4,sr8"], multirun=False)
    (single,) = expand_jobs(["task=sr8"], multirun=False)
    assert single.cfg.task.name == "sr8"


def test_long_job_directory_names_stay_unique_and_stable():
    """Past MAX_SUBDIR bytes the name is cut: two jobs whose overrides differ only at the end must still get two
    directories (a hash of the whole), the same overrides the same one (resume), task/sampler first."""
    long = ",".join(f"prior.unet.flag{k}=value{k}" for k in range(12))
    a, b = f"{long},seed=1,task=sr4", f"{long},seed=2,task=sr4"
    assert len(a.encode()) > MAX_SUBDIR
    assert job_subdir(a) != job_subdir(b) and job_subdir(a) == job_subdir(a)
    assert all(len(job_subdir(x).encode()) <= MAX_SUBDIR for x in (a, b))
    assert job_subdir(a).startswith("task=sr4,")
    assert job_subdir("seed=1,task=sr4") == "seed=1,task=sr4"  # short names are the overrides as they are


def test_tuned_lookup_prefers_the_task_entry_then_all_tasks_then_the_named_sampler(monkeypatch):
    """On a prior with no table of its own (sd2_tiny), entries added on the command line: this task's value beats
    the all-tasks value; a variant (LIKE) takes its own value before the sampler it names; no entry: the YAML's."""
    monkeypatch.setattr(tuned, "_logged", set())
    table = ["prior=sd2_tiny", "+tuned.priors.sd2_tiny.sr4.dps.zeta=3", "+tuned.priors.sd2_tiny.all_tasks.dps.zeta=7"]

    def zeta(*overrides):
        return resolved(compose(*table, "sampler=dps", *overrides))["sampler"]["zeta"]

    assert zeta("task=sr4") == 3
    assert zeta("task=inpaint_box") == 7
    variant = ["sampler.name=dps_v", "sampler.zeta=${dps_map_tuned:zeta,1.5,dps}"]
    assert zeta("task=sr4", *variant) == 3  # borrowed from dps
    assert zeta("task=sr4", *variant, "+tuned.priors.sd2_tiny.all_tasks.dps_v.zeta=5") == 5  # its own first
    assert zeta("task=sr4", "sampler.name=dps_w", "sampler.zeta=${dps_map_tuned:zeta,1.5}") == 1.5  # no entry
    assert resolved(compose("prior=sd2_tiny", "task=sr4", "sampler=dps"))["sampler"]["zeta"] == 1.0  # YAML default
