"""Every wrongly typed or out-of-range scalar value is refused at start-up with one line (ConfigError,
exit 2 on the command line) before any model is built, or is listed in ACCEPTED below as valid.

The walk: the composed config of every option of every group (task, prior, sampler, data, metrics,
logger; perf and the top-level keys on the default config); for every scalar key of that group, each
bad value of the table BAD for the key's type (strings for numbers, negative, zero, NaN, inf, huge),
parsed as Hydra parses a command-line value, goes through run.checked_sampler (what a run does before
building anything)."""

import copy
import sys

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from dps_map.config import resolved
from dps_map.config.types import Bool, Choice, Float, Int, IntList, Respacing, Str, scalar_items, spec_for
from dps_map.errors import UserError
from dps_map.runner import checked_sampler

from support import CONF, compose, run_with_guard

GMM = {"task": "gmm_linear", "prior": "gmm", "data": "gmm", "sampler": ("exact", "oracle")}
BAD = {
    Int: ["abc", "1.5", "-1", "0", "nan", "true", "null", "99999999999999999999"],
    Float: ["abc", "-1", "0", "nan", "inf", "1e300", "true", "null"],
    Bool: ["abc", "2", "null"],
    Choice: ["abc", "1", "null"],
    Str: ["1", "null", "true"],
    Respacing: ["abc", "-1", "0", "1.5", "ddim0", "99999", "null"],
    IntList: ["abc", "-1", "1.5", "null", "true"],
}
#: (key, value) cases that pass the start-up checks, and why they are valid
#: the tuned table is walked on one task (every task's entries have the same types: those of sampler.*)
ZETAS = [f"tuned.priors.tiny.sr4.{m}.zeta" for m in ("dps", "dmap", "dmap_adam", "adapter_dps", "adapter_dmap")]
WS = ["tuned.priors.tiny.sr4.dsg.w"]
ACCEPTED = {
    **{(k, "0"): "0 is a valid seed / first shard / class / no inner step" for k in
       ("seed", "data.shard", "sampler.num_inner", "prior.instance_seed", "prior.class_label", "prior.seed")},
    **{(k, "0"): "0 means noiseless / no guidance / no blur / deterministic" for k in
       ("task.sigma_y", "sampler.zeta", *ZETAS, *WS, "task.intensity", "sampler.eta", "task.min_weight",
        "prior.unet.dropout", "sampler.w", "task.drop_ratio", "sampler.gamma", "sampler.travel_start")},
    **{(k, "-1"): "ADM's 'use num_heads' marker" for k in ("prior.unet.num_head_channels",
                                                           "prior.unet.num_heads_upsample")},
    **{(k, "1e300"): "any finite value >= 0; a sample that diverges is recorded as a failure" for k in
       ("task.sigma_y", "sampler.zeta", *ZETAS, "task.blur_sigma", "prior.grid_scale", "prior.cov_std",
        "sampler.gamma")},
    **{(k, "null"): "null is allowed (all samples at once / no cap / labels from the folder layout / default / no adapter)" for k in
       ("batch_size", "data.max_images", "data.labels", "logger.entity", "logger.group",
        "perf.compile_mode", "prior.checkpoint", "prior.prediction_type", "prior.adapter")},
}


def _compose(overrides):
    return compose(*overrides)


def configs():
    """(group, overrides, config) for the defaults and every option of every group."""
    out = [(None, [], _compose([]))]
    for group in ("task", "prior", "sampler", "data", "metrics", "logger"):
        # sd2_base: its keys are sd2_tiny's plus a diffusers folder, which validate checks like a checkpoint file
        for option in sorted(p.stem for p in (CONF / group).glob("*.yaml") if p.stem != "sd2_base"):
            gmm = GMM.get(group) in (option,) or option in (GMM.get(group) or ())
            overrides = ["task=gmm_linear"] * gmm + ([] if gmm and group == "task" else [f"{group}={option}"])
            overrides += [f"data.path={CONF}"] * (option in ("folder", "imagenet_val"))  # any existing folder
            overrides += ["prior.random_init=true"] * (group == "prior" and option not in ("gmm", "tiny")
                                                        and not option.startswith("sd2"))
            overrides += ["prior.class_label=random"] * (option in ("adm512", "adm128_512_upsampler"))  # demo data
            out.append((group, overrides, _compose(overrides)))
    return out


def parse(key: str, text: str):
    return OverridesParser.create().parse_override(f"{key}={text}").value()


def walk():
    """Try every bad value on every scalar key (in the first option of its group that has it); returns
    (keys, refused cases, accepted cases, crashed cases)."""
    accepted, refused, crashed, keys = set(), [], [], set()
    for group, overrides, cfg in configs():
        base = resolved(cfg)
        checked_sampler(OmegaConf.create(base))  # the option itself is valid (else every case below would be refused)
        for key, _ in scalar_items(base):
            top = key.split(".")[0]
            if (group is None and top in {"task", "prior", "sampler", "data", "metrics", "logger"}) or \
                    (group is not None and top != group):
                continue
            if key.startswith("tuned.priors.") and not key.startswith("tuned.priors.tiny.sr4."):
                continue
            kind = spec_for(key)
            assert kind is not None, f"{key} (in {overrides}) has no type in dps_map/config/types.SPEC"
            if key in keys:  # tried in an earlier option of its group (the checks do not depend on it)
                continue
            keys.add(key)
            for text in BAD[type(kind)]:
                plain = copy.deepcopy(base)  # interpolations resolved once (fast), then the one bad value
                *parents, leaf = key.split(".")
                node = plain
                for part in parents:
                    node = node[part]
                node[leaf] = parse(key, text)
                bad = OmegaConf.create(plain)
                try:
                    checked_sampler(bad)
                except UserError as err:
                    refused.append((key, text, str(err)))
                except Exception as err:  # noqa: BLE001 - a traceback for the user: the bug this test hunts
                    crashed.append((overrides, key, text, f"{type(err).__name__}: {err}"))
                else:
                    accepted.add((key, text))
    return keys, refused, accepted, crashed


def test_every_bad_scalar_value_is_refused_in_one_line_or_documented_valid(monkeypatch):
    monkeypatch.setattr("dps_map.runner.execute.build_prior", lambda *a, **k: pytest.fail("a model was built"))
    keys, refused, accepted, crashed = walk()
    assert not crashed, crashed[:10]
    assert all("\n" not in msg for _, _, msg in refused)
    assert accepted == set(ACCEPTED), (sorted(accepted - set(ACCEPTED)), sorted(set(ACCEPTED) - accepted))
    assert len(keys) >= 90 and len(refused) + len(accepted) >= 500  # the scale of the walk
    print(f"{len(keys)} keys, {len(refused) + len(accepted)} cases: {len(refused)} refused, "
          f"{len(accepted)} accepted (documented)")


@pytest.mark.parametrize("args,expected", [
    (["seed=abc"], "dps-map: error: seed='abc': expected an integer >= 0"),
    (["sampler.respacing=abc"], "dps-map: error: sampler.respacing='abc': expected a respacing"),
    (["-m", "task.sigma_y=0.05,nan"], "task.sigma_y=nan: expected a finite number >= 0"),  # every job checked
])
def test_bad_values_on_the_command_line_are_one_line_exit_2(args, expected, tmp_path):
    proc = run_with_guard([sys.executable, "-m", "dps_map.run", *args, f"hydra.run.dir={tmp_path / 'run'}",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"], capture_output=True, text=True, cpu_limit=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("dps-map: error: ") and expected in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()
