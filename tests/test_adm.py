"""ADM priors built through guided_diffusion from the YAML flags."""

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from dps_map.config.targets import build_prior
from dps_map.errors import ConfigError, MissingFileError, UnsafeCheckpointError, UserError
from dps_map.io import load_checkpoint
from dps_map.priors import build_unet

from support import run_with_guard

SMALL = {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2,2",
         "attention_resolutions": "16,8", "num_head_channels": 32, "learn_sigma": True, "class_cond": True,
         "use_scale_shift_norm": True, "resblock_updown": True}


def small_cfg(**over):
    cfg = OmegaConf.create({"name": "small", "kind": "adm", "_target_": "dps_map.priors.adm.adm_prior", "checkpoint": None, "what": "test ADM",
                            "url": "nowhere", "override": "prior.checkpoint=...", "random_init": True,
                            "noise_schedule": "linear", "diffusion_steps": 1000, "class_label": 3,
                            "variance": "learned_range", "unet": SMALL})
    return OmegaConf.merge(cfg, over)


def test_adm512_flags_build_the_published_network():
    """conf/prior/adm512.yaml builds openai's 512x512 class-conditional model: ~559M parameters."""
    cfg = OmegaConf.load("conf/prior/adm512.yaml")
    model = build_unet(cfg.unet)
    n = sum(p.numel() for p in model.parameters())
    assert 558e6 < n < 560e6, n
    assert model.num_classes == 1000 and model.out_channels == 6
    del model


def test_state_dict_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    a = build_unet(SMALL)
    path = tmp_path / "ckpt.pt"
    torch.save(a.state_dict(), path)
    cfg = small_cfg(random_init=False, checkpoint=str(path))
    prior = build_prior(OmegaConf.merge(cfg, {"checkpoint": str(path)}))
    for (k, v), (k2, v2) in zip(a.state_dict().items(), prior.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 500])
    y = torch.tensor([3, 3])
    with torch.no_grad():
        expect = a.eval()(x, t, y=y)[:, :3]
    torch.testing.assert_close(prior.eps(x, t), expect, rtol=0, atol=0)


def test_learned_sigma_split_and_class_labels():
    prior = build_prior(small_cfg())
    eps, v = prior.predict(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))
    assert eps.shape == v.shape == (2, 3, 32, 32)
    prior.set_class_labels(None)
    with pytest.raises(ConfigError):
        prior.predict(torch.randn(1, 3, 32, 32), torch.tensor([1]))
    with pytest.raises(ConfigError):
        prior.set_class_labels(1000)


def test_missing_checkpoint_names_file_source_and_override(tmp_path):
    cfg = OmegaConf.load("conf/prior/adm512.yaml")
    missing = tmp_path / "512x512_diffusion.pt"
    with pytest.raises(MissingFileError) as err:
        build_prior(OmegaConf.merge(OmegaConf.merge(cfg, {"unet": SMALL | {"image_size": 32}}), {"checkpoint": str(missing)}))
    msg = str(err.value)
    assert str(missing) in msg and "paths.adm512=" in msg and "guided-diffusion" in msg


def test_pickle_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(1), "payload": subprocess.Popen}, path)  # needs pickle to load
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(path, "test checkpoint", "nowhere", "prior.checkpoint=...")


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as err:  # not UnsafeCheckpointError: nothing asks for code, the bytes are garbage
        load_checkpoint(path, "test checkpoint", "nowhere", "prior.checkpoint=...")
    assert type(err.value) is UserError
    msg = str(err.value)
    assert msg.startswith(f"unreadable test checkpoint '{path}' (not a valid torch checkpoint: ")
    assert msg.endswith("get a fresh copy from nowhere") and "\n" not in msg


def test_wrong_architecture_checkpoint_is_a_config_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(build_unet(SMALL | {"num_channels": 64}).state_dict(), path)
    with pytest.raises(ConfigError):
        build_prior(OmegaConf.merge(small_cfg(random_init=False), {"checkpoint": str(path)}))


def test_cli_missing_checkpoint_exits_2_without_traceback(tmp_path):
    proc = run_with_guard(
        [sys.executable, "-m", "dps_map.run", "task=sr4", "prior=adm512", "sampler=dps", "data=demo",
         f"paths.checkpoints={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}", "progress=false"],
        capture_output=True, text=True, cpu_limit=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "512x512_diffusion.pt" in proc.stderr and "paths.adm512=" in proc.stderr
    assert not (tmp_path / "run" / "recon").exists()
