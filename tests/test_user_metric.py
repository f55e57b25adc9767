"""A user's own per-sample metric (tests/user_metric.py), joined with one config entry
`+metrics.extra.NAME._target_=pkg.Class`: it lands in metrics.jsonl, summary.json, the sweep aggregate and wandb,
with values checked against numpy on the saved PNGs; a bad entry is one line at start-up."""

import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from dps_map.config import validate
from dps_map.errors import ConfigError
from dps_map.io import read_jsonl
from dps_map.runner import run

from support import compose, run_with_guard

TESTS = Path(__file__).resolve().parent
# tiny sizes: 4 demo crops (2 per shard), random-init tiny prior, 3 DPS steps, 2 samples per crop
SMALL = ["sampler=dps", "sampler.respacing=3", "prior.random_init=true", "data.per_photo=2", "num_samples=2",
         "progress=false", "data.num_shards=2"]
MAE = "+metrics.extra.mae._target_=user_metric.MeanAbsoluteError"


def png(path) -> np.ndarray:
    """A saved 8-bit image in [-1, 1] (the PNG's own rounding), channels last."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 127.5 - 1


class FakeWandb(types.ModuleType):
    """Stands in for the wandb module: records what dps_map.runner.loggers.WandbLogger logs."""

    def __init__(self):
        super().__init__("wandb")
        self.history, self.summary = [], {}

    def init(self, **kwargs):
        return types.SimpleNamespace(log=lambda values, step=None: self.history.append(values),
                                     summary=self.summary, finish=lambda: None)

    def Image(self, path):  # noqa: N802 - wandb's name
        return path


def test_user_metric_lands_in_records_summary_aggregate_and_wandb(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    sweep, summaries = tmp_path / "sweep", []
    for shard in (0, 1):
        cfg = compose(*SMALL, f"data.shard={shard}", MAE, "logger=wandb")
        out = sweep / f"shard{shard}"
        summaries.append(run(cfg, out))
        (out / ".hydra").mkdir()
        OmegaConf.save(cfg, out / ".hydra" / "config.yaml")  # as a Hydra job directory holds it (the aggregate)
    records = []
    for shard in (0, 1):
        out = sweep / f"shard{shard}"
        recs = read_jsonl(out / "metrics.jsonl")
        assert len(recs) == 4
        for r in recs:  # the MAE of the unrounded sample; the PNGs are rounded to 1/127.5, each by half a level
            expected = np.abs(png(out / "recon" / f"{r['id']}_{r['k']}.png") - png(out / "label" / f"{r['id']}.png"))
            assert abs(r["mae"] - expected.mean()) <= 1 / 127.5, r
            assert isinstance(r["naive_mae"], float)  # the no-prior baseline, as naive_psnr
        mean = float(np.mean([r["mae"] for r in recs]))
        on_disk = json.loads((out / "summary.json").read_text())
        assert on_disk["metrics"]["mae"]["mean"] == pytest.approx(mean, rel=1e-12)
        assert on_disk["metrics"]["mae"]["n"] == 4 and on_disk["metrics"]["mae"]["sem"] > 0
        assert on_disk["naive"]["mae"]["n"] == 2
        records += recs
    # wandb: every sample's score and the summary's mean
    logged = [h["sample/mae"] for h in fake.history if "sample/mae" in h]
    assert sorted(logged) == sorted(r["mae"] for r in records)
    assert fake.summary["metrics/mae/mean"] == pytest.approx(summaries[1]["metrics"]["mae"]["mean"])

    # the aggregate of the two shards: one group, the mean over all 8 samples, a column of the table
    from dps_map.runner.sweep_results import aggregate

    result = aggregate(sweep, random_weights=True)
    (group,) = result["groups"].values()
    assert group["complete"] and group["n_samples"] == 8 and group["extra_metrics"] == ["mae"]
    assert group["metrics"]["mae"]["mean"] == pytest.approx(np.mean([r["mae"] for r in records]), rel=1e-12)
    assert group["metrics"]["mae"]["n"] == 8
    header = (sweep / "aggregate.md").read_text().splitlines()[4]
    assert header.startswith("| config |") and "| kid | mae |" in header


def test_user_metric_changes_no_other_number(tmp_path):
    """The same run without the metric: the same digest (metrics are not part of it), the same samples and the
    same built-in scores, field for field."""
    with_mae = run(compose(*SMALL, "data.shard=0", MAE), tmp_path / "with")
    without = run(compose(*SMALL, "data.shard=0"), tmp_path / "without")
    assert with_mae["digest"] == without["digest"]
    timing = ("seconds", "mae", "naive_mae")
    strip = [{k: v for k, v in r.items() if k not in timing} for r in read_jsonl(tmp_path / "with" / "metrics.jsonl")]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"}
                     for r in read_jsonl(tmp_path / "without" / "metrics.jsonl")]
    assert {k: v for k, v in with_mae["metrics"].items() if k != "mae"} == without["metrics"]
    # re-scoring the run without it adds it from the PNGs (numpy on the same 8-bit images), and keeps the rest
    from dps_map.runner.scoring import rescore

    out = tmp_path / "without"
    assert rescore(out, [MAE])[str(out)].startswith("updated metrics.jsonl (mae, naive_mae)")
    recs = read_jsonl(out / "metrics.jsonl")
    for r in recs:
        expected = np.abs(png(out / "recon" / f"{r['id']}_{r['k']}.png") - png(out / "label" / f"{r['id']}.png"))
        assert r["mae"] == pytest.approx(expected.mean(), abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["mae"]["mean"] == pytest.approx(np.mean([r["mae"] for r in recs]), rel=1e-12)
    assert summary["metrics"]["psnr"] == without["metrics"]["psnr"]


@pytest.mark.parametrize("override,match", [
    ("+metrics.extra.psnr._target_=user_metric.MeanAbsoluteError", "'psnr' is already a built-in metric"),
    ("+metrics.extra.seconds._target_=user_metric.MeanAbsoluteError", "'seconds' is already a built-in metric or a "
                                                                      "field of metrics.jsonl"),
    ("+metrics.extra.fid._target_=user_metric.MeanAbsoluteError", "'fid' is already"),
    ("+metrics.extra.naive_mae._target_=user_metric.MeanAbsoluteError", "not starting with naive_"),
    ("+metrics.extra.MAE._target_=user_metric.MeanAbsoluteError", "lower-case letters"),
    ("+metrics.extra.mae._target_=user_metric.Nope", "metrics.extra.mae: _target_ 'user_metric.Nope': module "
                                                     "'user_metric' has no 'Nope'"),
    ("+metrics.extra.mae._target_=no_such_pkg.Metric", "cannot import _target_ 'no_such_pkg.Metric'"),
    ("+metrics.extra.mae.scale=2", "metrics.extra.mae: needs _target_"),
])
def test_bad_user_metric_is_refused_at_start_up(override, match):
    with pytest.raises(ConfigError, match=match):
        validate(compose(*SMALL, "data.shard=0", override))


def test_unknown_argument_of_a_user_metric_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"metrics.extra.mae: unknown key scael \(known: scale\)"):
        validate(compose(*SMALL, "data.shard=0", MAE, "+metrics.extra.mae.scael=2"))


def cli(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return run_with_guard([sys.executable, "-m", "dps_map.run", *SMALL, "data.shard=0", *args,
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, cpu_limit=300,
                          env=env)


def test_cli_prints_one_line_for_an_unimportable_metric_and_for_a_batch_mean(tmp_path):
    bad = cli(tmp_path, "+metrics.extra.mae._target_=user_metric.Nope")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "metrics.extra.mae" in bad.stderr and "user_metric.Nope" in bad.stderr
    # one number per batch: caught at the first score (the no-prior baseline, before any sampling)
    mean = cli(tmp_path, "+metrics.extra.mae._target_=user_metric.BatchMean")
    assert mean.returncode == 2 and len(mean.stderr.strip().splitlines()) == 1, mean.stderr
    assert "metric 'mae' returned values of shape () for a batch of 1 images" in mean.stderr
    assert not (tmp_path / "run" / "recon").exists()


def test_registry_and_weight_table_agree():
    """The weight files a built-in per-sample metric needs: the registry and dps_map.metrics.weight_files say the same."""
    from dps_map.config.metrics import BUILTIN
    from dps_map.metrics.weight_files import METRIC_WEIGHTS

    assert {m.name: m.weights for m in BUILTIN.values() if m.weights} == \
        {name: METRIC_WEIGHTS[name] for name in BUILTIN if name in METRIC_WEIGHTS}


def test_record_validation_knows_the_user_metric_fields():
    from dps_map.runner.summary import record_problem

    record = {"id": "a", "k": 0, "psnr": 20.0, "mae": 0.1, "naive_mae": 0.2}
    assert record_problem(record, ["mae"]) is None
    assert record_problem(dict(record, mae="0.1"), ["mae"]) == "'mae' is '0.1', not a number"
    assert record_problem(dict(record, naive_mae=True), ["mae"]) == "'naive_mae' is True, not a number"
