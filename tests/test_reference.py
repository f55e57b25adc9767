"""The tiny-scale reference conditional model (conf/prior/tiny_sr4_reference.yaml, dps_map/train_reference.py):
the trainer resumes and exports a loadable float16 file, the runner binds each measurement to a conditional
prior, impossible configs are refused, and the shipped file matches its card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dps_map import ASSETS
from dps_map.config import validate
from dps_map.config.targets import build_noise, build_prior, build_sampler
from dps_map.errors import ConfigError
from dps_map.io import save_png, sha256_file
from dps_map.runner import generator, item_seed, load_items, measure, run

from support import compose

SMALL = ["prior.unet.attention_resolutions='8'"]


def _compose(name, overrides):
    return compose(*overrides, config=name)


def _train_cfg(out_dir, *overrides):
    return _compose("train_reference", [f"out_dir={out_dir}", "batch_size=2", "warmup=1", "save_every=2",
                                        "log_every=1", "threads=1", "progress_mininterval=60", *SMALL, *overrides])


def test_trainer_resumes_and_exports_a_loadable_reference(tmp_path):
    from dps_map.training.reference import run as train_and_export
    from dps_map.training.reference import train

    state = train(_train_cfg(tmp_path, "steps=2"))
    assert state["step"] == 2 and len(state["losses"]) == 2
    export = tmp_path / "out" / "ref.pt"
    card = train_and_export(_train_cfg(tmp_path, "steps=3", f"export_path={export}"))
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 3 and saved["losses"][:2] == state["losses"]  # resumed, not restarted
    assert card["file"]["sha256"] == sha256_file(export)
    assert json.loads(export.with_suffix(".json").read_text())["training"]["steps"] == 3
    weights = torch.load(export, weights_only=True)
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    cfg = _compose("config", ["task=sr4", "prior=tiny_sr4_reference", "sampler=ddpm", f"paths.tiny_sr4_reference={export}",
                              *SMALL])
    ref = build_prior(cfg.prior)
    for name, p in ref.model.state_dict().items():  # the fp32 model holds the EMA weights up to fp16 rounding
        assert torch.allclose(p, saved["ema"][name].float(), rtol=1e-3, atol=1e-3), name
    with pytest.raises(ConfigError, match="another task"):
        train(_train_cfg(tmp_path, "steps=4", "task.sigma_y=0.1"))
    with pytest.raises(ConfigError, match="SR x4 task"):
        train(_train_cfg(tmp_path / "sr8", "steps=1", "task=sr8"))


def test_runner_binds_the_measurement_to_a_conditional_prior(tmp_path):
    """prior=tiny_sr4_reference sampler=ddpm samples eps(x_t, t | y) with each item's own y: the runner's
    output equals the DDPM sampler run by hand on prior.condition(operator, y)."""
    path = tmp_path / "ref.pt"
    over = ["task=sr4", "prior=tiny_sr4_reference", "sampler=ddpm", "sampler.respacing=4", "data.per_photo=1",
            "progress=false", "metrics=fast", f"paths.tiny_sr4_reference={path}", *SMALL]
    cfg = _compose("config", [*over, "prior.random_init=true"])
    torch.manual_seed(0)
    model = build_prior(cfg.prior).model
    with torch.no_grad():  # guided_diffusion zero-initialises the output layer: make eps depend on y
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(model.state_dict(), path)
    cfg = _compose("config", over)
    validate(cfg)
    run(cfg, tmp_path / "run")

    prior, sampler, noise = build_prior(cfg.prior), build_sampler(cfg.sampler), build_noise(cfg.task)
    item = load_items(cfg.data, 64)[0]
    _, operator, _, y = measure(cfg, item, 64, noise, torch.device("cpu"))
    gen = generator(torch.device("cpu"), item_seed(cfg.seed, f"{item.id}/samples0"))
    x = sampler.sample(prior.condition(operator, y), operator, noise, y, (1, 3, 64, 64), gen)
    save_png(x[0], tmp_path / "direct.png")
    got = np.asarray(Image.open(tmp_path / "run" / "recon" / f"{item.id}_0.png"))
    assert np.array_equal(got, np.asarray(Image.open(tmp_path / "direct.png")))
    other = sampler.sample(prior.condition(operator, -y), operator, noise, -y, (1, 3, 64, 64),
                           generator(torch.device("cpu"), item_seed(cfg.seed, f"{item.id}/samples0")))
    assert (other - x).abs().max() > 1e-3  # the measurement is what conditions the sample


@pytest.mark.parametrize("overrides, match", [
    (["task=inpaint_box", "sampler=ddpm"], "SR x4 model"),
    (["task=sr8", "sampler=ddpm"], "SR x4 model"),
    (["task=sr4", "sampler=adapter_dmap"], "already conditional"),
])
def test_conditional_prior_refuses_other_tasks_and_adapters(overrides, match):
    cfg = _compose("config", ["prior=tiny_sr4_reference", "prior.random_init=true", *overrides])
    with pytest.raises(ConfigError, match=match):
        validate(cfg)


def test_shipped_reference_matches_its_card():
    card = json.loads((ASSETS / "tiny_sr4_reference.json").read_text())
    assert sha256_file(ASSETS / "tiny_sr4_reference.pt") == card["file"]["sha256"]
    cfg = _compose("config", ["task=sr4", "prior=tiny_sr4_reference", "sampler=ddpm"])
    assert card["architecture"]["unet"] == dict(cfg.prior.unet)
    assert card["parameters"] == sum(p.numel() for p in build_prior(cfg.prior).model.parameters())
