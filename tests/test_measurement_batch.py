"""measurement_batch: measurements stacked into one sampler call give the samples they give alone. Each row
keeps its own operator parameters, y and random stream."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dps_map.errors import ConfigError
from dps_map.io import read_jsonl
from dps_map.operators import Blur, Inpainting, StackedOperator, SuperResolution, box_mask, gaussian_kernel
from dps_map.runner import run
from dps_map.samplers.base import GeneratorStack, randn

from support import compose

SMALL = ["prior=tiny", "data=demo", "data.per_photo=3", "+data.photos=[chelsea]", "sampler.respacing=10", "metrics=fast", "progress=false"]


def config(*overrides):
    return compose(*SMALL, *overrides)


def pixels(out: Path) -> dict:
    return {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in sorted((out / "recon").glob("*.png"))}


def test_generator_stack_draws_each_rows_from_its_own_stream():
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    stacked = randn((5, 3, 4, 4), GeneratorStack([(gens[0], 2), (gens[1], 1), (gens[2], 2)]), torch.float32, "cpu")
    alone = [torch.randn((n, 3, 4, 4), generator=torch.Generator().manual_seed(s)) for s, n in ((1, 2), (2, 1), (3, 2))]
    assert torch.equal(stacked, torch.cat(alone))
    with pytest.raises(ValueError):
        randn((4, 3), GeneratorStack([(torch.Generator(), 2)]), torch.float32, "cpu")


def test_stacked_operator_applies_each_measurements_parameters():
    gen = torch.Generator().manual_seed(0)
    masks = [Inpainting(box_mask(16, 0.5, "random", gen)) for _ in range(2)]
    assert not torch.equal(masks[0].mask, masks[1].mask)
    x = torch.randn(3, 3, 16, 16, generator=gen)
    for ops in (masks, [Blur(gaussian_kernel(5, 1.0)), Blur(gaussian_kernel(5, 2.0))],
                [SuperResolution(4), SuperResolution(4)]):
        stacked = StackedOperator([(ops[0], 1), (ops[1], 2)])
        y = stacked(x)
        assert torch.allclose(y, torch.cat([ops[0](x[:1]), ops[1](x[1:])]))
        assert torch.allclose(stacked.adjoint(y), torch.cat([ops[0].adjoint(y[:1]), ops[1].adjoint(y[1:])]), atol=1e-6)
        assert torch.allclose(stacked.naive(y), torch.cat([ops[0].naive(y[:1]), ops[1].naive(y[1:])]))
        assert torch.allclose(stacked.restrict(y), torch.cat([ops[0].restrict(y[:1]), ops[1].restrict(y[1:])]))


@pytest.mark.parametrize("task", ["sr4", "inpaint_box"])
def test_batched_recon_images_equal_unbatched(task, tmp_path):
    """3 crops: measurement_batch=2 stacks 2 measurements (their own masks for inpaint_box, location=random)
    and then runs the last one alone; the PNGs agree with measurement_batch=1 within 1/255."""
    one = run(config(f"task={task}", "sampler=dps", "measurement_batch=1"), tmp_path / "one")
    two = run(config(f"task={task}", "sampler=dps", "measurement_batch=2"), tmp_path / "two")
    a, b = pixels(tmp_path / "one"), pixels(tmp_path / "two")
    assert len(a) == 3 and a.keys() == b.keys()
    assert max(int(np.abs(a[k] - b[k]).max()) for k in a) <= 1
    assert one["digest"] == two["digest"]  # the batching is not part of what a run computes
    assert one["cost"]["nfe_per_sample"] == two["cost"]["nfe_per_sample"] == 10
    assert {r.get("measurement_batch") for r in read_jsonl(tmp_path / "two" / "metrics.jsonl")} == {2, None}


def test_batched_dmap_psnr_agrees_and_resume_mixes_batchings(tmp_path):
    """DMAP amplifies float reduction order: per-image PSNR within 0.05 dB. A run dir finished by a batched
    rerun (after an unbatched run wrote one sample) holds each sample once."""
    psnr = {}
    for name, mb in (("one", 1), ("batched", 3)):
        run(config("task=sr4", "sampler=dmap", "sampler.num_inner=2", f"measurement_batch={mb}"), tmp_path / name)
        psnr[name] = {r["id"]: r["psnr"] for r in read_jsonl(tmp_path / name / "metrics.jsonl")}
    assert len(psnr["one"]) == 3 and psnr["one"].keys() == psnr["batched"].keys()
    assert max(abs(psnr["one"][i] - psnr["batched"][i]) for i in psnr["one"]) <= 0.05
    # resume: keep one sample of the unbatched run, let a batched rerun (same digest) redo the other two
    out = tmp_path / "mixed"
    shutil.copytree(tmp_path / "one", out)
    keep = read_jsonl(out / "metrics.jsonl")[0]
    (out / "metrics.jsonl").write_text(json.dumps(keep) + "\n")
    for png in (out / "recon").glob("*.png"):
        if png.stem != f"{keep['id']}_0":
            png.unlink()
    summary = run(config("task=sr4", "sampler=dmap", "sampler.num_inner=2", "measurement_batch=2"), out)
    assert summary["n_new_samples"] == 2 and summary["n_samples"] == 3 and summary["n_duplicate_records"] == 0
    mixed = {r["id"]: r["psnr"] for r in read_jsonl(out / "metrics.jsonl")}
    assert max(abs(mixed[i] - psnr["one"][i]) for i in mixed) <= 0.05


def test_measurement_batch_refused_where_a_model_is_bound_to_one_measurement(tmp_path):
    with pytest.raises(ConfigError, match="measurement_batch=2: sampler=ddpm on prior=tiny_sr4_reference is conditioned"):
        run(config("prior=tiny_sr4_reference", "task=sr4", "sampler=ddpm", "measurement_batch=2"), tmp_path / "a")
    with pytest.raises(ConfigError, match="measurement_batch=2: sampler=adapter_dps on prior=tiny with its adapter"):
        run(config("task=sr4", "sampler=adapter_dps", "measurement_batch=2"), tmp_path / "b")
    with pytest.raises(ConfigError, match="measurement_batch"):
        run(config("measurement_batch=0"), tmp_path / "c")


def test_stacked_units_bind_one_class_label_per_row():
    """ADM class-conditional priors: a batch of stacked measurements gets a labels tensor with each row's label."""
    from dps_map.operators import GaussianNoise, Identity
    from dps_map.runner import MeasurementUnit, sample_units
    from dps_map.samplers.ddpm import DDPMSampler

    class LabelledPrior:  # eps = 0 with the labels recorded at every call; enough for the runner's path
        kind, learn_sigma, needs_measurement, class_cond = "image", False, False, True
        sample_shape = (1, 2, 2)
        betas = np.linspace(1e-4, 0.02, 10)

        def set_class_labels(self, labels):
            self.labels = torch.as_tensor(labels).reshape(-1)

        def predict(self, x, t):
            assert len(self.labels) in (1, x.shape[0])
            return torch.zeros_like(x), None

        def sampling_operator(self, op):
            return op

        def decode(self, x):
            return x

    prior = LabelledPrior()
    units = [MeasurementUnit(None, Identity(), None, torch.zeros(1, 1, 2, 2), label, None, None, prior, ks, ks,
                   torch.Generator().manual_seed(i)) for i, (label, ks) in enumerate(((7, [0, 1]), (3, [0])))]
    sampled = sample_units(prior, DDPMSampler(respacing="5"), GaussianNoise(0.05), units)
    x = sampled.x
    assert prior.labels.tolist() == [7, 7, 3] and x.shape == (3, 1, 2, 2) and not sampled.result.failures()
    assert sampled.seconds > 0 and sampled.result.stats["forward"] == 5
    alone = sample_units(prior, DDPMSampler(respacing="5"), GaussianNoise(0.05),
                         [MeasurementUnit(None, Identity(), None, torch.zeros(1, 1, 2, 2), 3, None, None, prior, [0], [0],
                                          torch.Generator().manual_seed(1))]).x
    assert prior.labels.tolist() == [3] and torch.allclose(alone, x[2:])  # the row equals its unit run alone


def test_batched_latent_prior_recon_equals_unbatched(tmp_path):
    """The latent path (prior=sd2_tiny: random weights, nothing loaded; PSLD): the samplers see
    A(D(z)) with A a StackedOperator of each crop's own random box, and the runner decodes the stacked z.
    measurement_batch=2 over 3 crops (2 stacked, then 1 alone) writes the PNGs of measurement_batch=1."""
    over = ("prior=sd2_tiny", "task=inpaint_box", "sampler=psld", "sampler.respacing=5")
    one = run(config(*over, "measurement_batch=1"), tmp_path / "one")
    two = run(config(*over, "measurement_batch=2"), tmp_path / "two")
    a, b = pixels(tmp_path / "one"), pixels(tmp_path / "two")
    assert len(a) == 3 and a.keys() == b.keys() and next(iter(a.values())).shape == (32, 32, 3)
    assert max(int(np.abs(a[k] - b[k]).max()) for k in a) <= 1
    # the crops' samples differ (a row given another crop's y, box or stream would show)
    first, second = list(a.values())[:2]
    assert int(np.abs(first - second).max()) > 50
    recs = {name: {r["id"]: r for r in read_jsonl(tmp_path / name / "metrics.jsonl")} for name in ("one", "two")}
    assert [recs["two"][i].get("measurement_batch") for i in sorted(recs["two"])] == [2, 2, None]
    for i, r in recs["one"].items():
        assert recs["two"][i]["misfit"] == pytest.approx(r["misfit"], rel=1e-4)
        assert recs["two"][i]["decoder_vjp"] == r["decoder_vjp"] == 5  # one VJP through D per step, per row
    assert one["digest"] == two["digest"]


@pytest.mark.parametrize("mb, num_samples, batch_size", [(1, 1, 64), (2, 1, 64), (8, 1, 64), (2, 2, 1)])
def test_preflight_prices_the_stacked_calls(mb, num_samples, batch_size, tmp_path, monkeypatch, capsys):
    """preflight (dps_map/preflight.py) with measurement_batch: 3 crops x ceil(num_samples / batch) chains,
    stacked mb at a time (at most all of them), give ceil(chains / mb) sampler calls; the trial runs the
    network at the batch of one call (mb x chain samples, seen by the network itself) and the hours are
    calls x steps x s/step. The forwards and VJPs per step stay those of one call (DPS: 1 VJP)."""
    import dps_map.runner.execute
    from dps_map.preflight import main as preflight_main

    seen = []
    build = dps_map.runner.execute.make_prior

    def spying_prior(cfg, device):  # records the batch of every network call of the trial
        prior = build(cfg, device)
        predict = prior.predict
        prior.predict = lambda x, *a, **k: (seen.append(x.shape[0]), predict(x, *a, **k))[1]
        return prior

    monkeypatch.setattr(dps_map.runner, "make_prior", spying_prior)  # where preflight looks it up
    with pytest.raises(SystemExit) as stop:
        preflight_main(["--steps", "1", "--out", str(tmp_path / "pf"), *SMALL, "task=sr4", "sampler=dps",
                        f"measurement_batch={mb}", f"num_samples={num_samples}", f"batch_size={batch_size}"])
    assert stop.value.code == 0, capsys.readouterr().err
    (job,) = json.loads((tmp_path / "pf" / "preflight.json").read_text())["jobs"]
    chain = min(num_samples, batch_size)
    chains = 3 * -(-num_samples // chain)  # 3 crops
    units = min(mb, chains)
    calls = -(-chains // units)
    assert (job["n_images"], job["measurement_batch"], job["batch"], job["sampler_calls"]) == \
        (3, units, units * chain, calls)
    assert seen and set(seen) == {units * chain}  # the trial's network calls ran at that batch
    assert (job["forward_per_step"], job["vjp_per_step"], job["steps"]) == (0, 1, 10)
    assert job["measured_hours"] == pytest.approx(calls * 10 * job["seconds_per_step"] / 3600)
    assert job["projected_hours"] is None  # CPU time: no GPU-hours without --calibration


def test_preflight_trial_refuses_measurement_batch_where_the_run_does(tmp_path, capsys):
    from dps_map.preflight import main as preflight_main

    with pytest.raises(SystemExit) as stop:
        preflight_main(["--steps", "1", "--out", str(tmp_path / "pf"), *SMALL, "task=sr4", "sampler=adapter_dps",
                        "measurement_batch=2"])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "trial failed: measurement_batch=2: sampler=adapter_dps" in err
