"""The class label a class-conditional prior is given is visible: run.json, summary.json, the aggregate,
the restoration table and the preflight's jobs name the policy ("data": the image's own ImageNet class, which
neither the authors' SD2 prior nor DPS2022's unconditional prior is told; "random"; "fixed:N"; none for an
unconditional prior). The class-conditional toy ADM and the image folder are those of tests/test_paper_scale.py."""

import json

import pytest
from test_paper_scale import TOY, compose, imagefolder  # noqa: F401  (imagefolder: the fixture)

from dps_map.preflight import main as preflight_main
from dps_map.runner import run
from dps_map.runner.rundir import class_label_policy
from dps_map.runner.sweep_results import aggregate
from experiments.restoration_table import table_rows, write

BASE = [*TOY, "task=sr4", "sampler=ddpm", "sampler.respacing=2", "data=folder", "data.max_images=2"]


@pytest.mark.parametrize("extra, expected", [([], "data"), (["prior.class_label=random"], "random"),
                                             (["prior.class_label=7"], "fixed:7"), (["prior=tiny"], None)])
def test_policy_of_a_config(extra, expected):
    assert class_label_policy(compose(*TOY, "task=sr4", *extra).prior) == expected


def test_run_json_summary_aggregate_and_table_name_the_policy(imagefolder, tmp_path):  # noqa: F811
    sweep = tmp_path / "sweep"
    for name, extra in (("data", []), ("random", ["prior.class_label=random"]), ("fixed", ["prior.class_label=7"])):
        summary = run(compose(*BASE, f"data.path={imagefolder}", *extra), sweep / name)
        marker = json.loads((sweep / name / "run.json").read_text())
        expected = {"data": "data", "random": "random", "fixed": "fixed:7"}[name]
        assert summary["class_label_policy"] == expected
        assert json.loads((sweep / name / "summary.json").read_text())["class_label_policy"] == expected
        assert marker["class_label_policy"] == expected
    result = aggregate(sweep)
    assert sorted(g["class_label_policy"] for g in result["groups"].values()) == ["data", "fixed:7", "random"]
    md = (sweep / "aggregate.md").read_text()
    assert "`class_label_policy`" in md and "`data` (1 config)" in md and "`fixed:7` (1 config)" in md
    rows = table_rows(sweep)
    assert sorted(r["class_label_policy"] for r in rows) == ["data", "fixed:7", "random"]
    write(rows, tmp_path, "table", "toy")
    table = (tmp_path / "table.md").read_text()
    assert "`data`: each image's own ImageNet class" in table and "`random`: a class drawn at random" in table
    assert "`fixed:7`: class 7 for every image" in table
    assert "class_label_policy" in (tmp_path / "table.csv").read_text().splitlines()[0]


def test_an_unconditional_run_says_none(tmp_path):
    summary = run(compose("task=gmm_linear", "progress=false", "sampler=dps", "sampler.respacing=5",
                          "num_samples=8"), tmp_path / "gmm")
    assert summary["class_label_policy"] is None
    assert "class_label_policy" not in json.loads((tmp_path / "gmm" / "run.json").read_text())
    group, = aggregate(tmp_path)["groups"].values()
    assert group["class_label_policy"] is None
    assert "class_label_policy" not in (tmp_path / "aggregate.md").read_text()


def test_preflight_of_the_paper_preset_with_random_classes(imagefolder, tmp_path, capsys):  # noqa: F811
    """`+experiment=paper prior.class_label=random` (docs/paper.md): valid, priced, its jobs carry the policy."""
    small = [o for o in TOY if not o.startswith(("prior=", "metrics="))]
    common = ["--steps", "1", "-m", "+experiment=paper", *small, "task=sr4", "sampler=dps", "sampler.respacing=2",
              f"paths.imagenet_val={imagefolder}", "metrics.random_weights=true"]
    for policy in ("random", "data"):
        with pytest.raises(SystemExit) as stop:
            preflight_main(["--out", str(tmp_path / policy), *common, f"prior.class_label={policy}"])
        assert stop.value.code == 0, capsys.readouterr().err
        job, = json.loads((tmp_path / policy / "preflight.json").read_text())["jobs"]
        assert job["class_label_policy"] == policy and job["problems"] == []
        assert job["measured_hours"] > 0
