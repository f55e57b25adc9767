"""The tiny prior: its training script (train, resume, export) and the shipped asset files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dps_map import ASSETS
from dps_map.data import HELDOUT_PHOTOS, PHOTOS, TRAIN_PHOTOS
from dps_map.errors import ConfigError
from dps_map.priors.adm import build_unet
from dps_map.training.common import CropSampler, loss_summary, training_photos
from dps_map.training.prior import CARD, REFERENCE, REFERENCE_T, SAMPLES, WEIGHTS, export, train
from dps_map.training.trainer import CHECKPOINT, lr_at

from support import CONF, compose


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cfg(out_dir, *overrides):
    """conf/train_prior.yaml with a very small UNet and run (seconds on a CPU)."""
    small = [f"out_dir={out_dir}", "batch_size=2", "warmup=2", "save_every=2", "log_every=1",
             "prior.unet.image_size=32", "threads=1",
             "data.min_side=32", "progress_mininterval=60"]
    return compose(*small, *overrides, config="train_prior")


# -- data hygiene -------------------------------------------------------------------------------
def test_heldout_photos_never_trained_on():
    assert set(TRAIN_PHOTOS).isdisjoint(HELDOUT_PHOTOS)
    assert set(TRAIN_PHOTOS) | set(HELDOUT_PHOTOS) == set(PHOTOS)
    assert training_photos(OmegaConf.create({"photos": None})) == TRAIN_PHOTOS
    for name in HELDOUT_PHOTOS:
        with pytest.raises(ConfigError, match="held-out"):
            training_photos(OmegaConf.create({"photos": ["astronaut", name]}))
    card = json.loads((ASSETS / CARD).read_text())
    assert set(card["data"]["train_photos"]).isdisjoint(HELDOUT_PHOTOS)
    assert sorted(card["data"]["heldout_photos"]) == sorted(HELDOUT_PHOTOS)


def test_crops_are_in_range_and_seeded():
    a = CropSampler(["astronaut", "rocket"], 32, 0.125, 0.5, 32, True, seed=3).batch(4)
    b = CropSampler(["astronaut", "rocket"], 32, 0.125, 0.5, 32, True, seed=3).batch(4)
    assert a.shape == (4, 3, 32, 32) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1 and a.std() > 0.05
    assert torch.equal(a, b)


def test_lr_schedule_and_loss_summary():
    cfg = OmegaConf.create({"lr": 1e-3, "warmup": 10, "steps": 110, "lr_schedule": "cosine", "lr_final_frac": 0.1})
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(110, cfg) == pytest.approx(1e-4)
    summary = loss_summary(list(range(100)))
    assert len(summary) == 10 and summary[0] == {"steps": [0, 10], "mean": 4.5}


# -- training, resume, export -------------------------------------------------------------------
def test_train_resumes_bit_for_bit_and_exports(tmp_path):
    straight = train(_cfg(tmp_path / "a", "steps=4"))
    train(_cfg(tmp_path / "b", "steps=2"))
    resumed = train(_cfg(tmp_path / "b", "steps=4"))  # resume=true: continues from b/checkpoint.pt at step 2
    assert straight["step"] == resumed["step"] == 4
    assert straight["losses"] == resumed["losses"]
    assert all(0 < v < 10 for v in straight["losses"])
    for key, value in straight["ema"].items():
        assert torch.equal(value, resumed["ema"][key]), key
    on_disk = torch.load(tmp_path / "b" / CHECKPOINT, map_location="cpu", weights_only=True)
    assert on_disk["step"] == 4 and len(on_disk["losses"]) == 4

    cfg = _cfg(tmp_path / "b", "steps=4", f"asset_dir={tmp_path / 'assets'}", "sample.num=4",
               "sample.respacing=5")
    card = export(cfg)
    assets = tmp_path / "assets"
    assert card["files"][WEIGHTS]["sha256"] == _sha256(assets / WEIGHTS)
    assert json.loads((assets / CARD).read_text())["training"]["steps"] == 4
    assert (assets / SAMPLES).stat().st_size > 0
    model = build_unet(OmegaConf.to_container(cfg.prior.unet))
    model.load_state_dict(torch.load(assets / WEIGHTS, weights_only=True), strict=True)


def test_held_out_photo_in_config_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="held-out"):
        train(_cfg(tmp_path, "steps=1", "data.photos=[astronaut,chelsea]"))


# -- the shipped asset --------------------------------------------------------------------------
def test_shipped_weights_match_card():
    card = json.loads((ASSETS / CARD).read_text())
    weights = ASSETS / WEIGHTS
    assert weights.stat().st_size < 20 * 2**20
    assert card["files"][WEIGHTS]["sha256"] == _sha256(weights)
    assert card["files"][REFERENCE]["sha256"] == _sha256(ASSETS / REFERENCE)
    assert card["files"][SAMPLES]["sha256"] == _sha256(ASSETS / SAMPLES)
    flags = OmegaConf.to_container(OmegaConf.load(CONF / "prior" / "tiny.yaml").unet)
    assert card["architecture"]["unet"] == flags
    assert card["training"]["steps"] > 0


@torch.no_grad()
def test_shipped_weights_reproduce_reference_eps():
    flags = OmegaConf.to_container(OmegaConf.load(CONF / "prior" / "tiny.yaml").unet)
    model = build_unet(flags)
    state = torch.load(ASSETS / WEIGHTS, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    model.load_state_dict(state, strict=True)
    model.eval()
    ref = torch.load(ASSETS / REFERENCE, map_location="cpu", weights_only=True)
    assert ref["t"].tolist() == list(REFERENCE_T) and ref["x"].shape == (len(REFERENCE_T), 3, 64, 64)
    eps = model(ref["x"], ref["t"])
    torch.testing.assert_close(eps, ref["eps"], atol=1e-5, rtol=0)
    # a trained eps model is far from the identity and from zero: catches an untrained/random export
    assert 0.1 < eps.std() < 2.0
