"""Extending dps_map without editing it: a sampler, an operator, a noise model and a prior in a module of the user's own
(on PYTHONPATH), selected by YAMLs in the user's own config directory (hydra.searchpath) through
`_target_`. Runs `python -m dps_map.run` as a user would."""

import json
import os
import sys
import textwrap

import numpy as np
from PIL import Image

from support import run_with_guard

USER_MODULE = '''
import torch
import torch.nn.functional as F

from dps_map.diffusion import alphas_cumprod, make_betas
from dps_map.operators import Operator
from dps_map.priors import Prior
from dps_map.samplers import DPSSampler, Sampler, Transition
from dps_map.samplers.base import randn


class ScaledDPS(DPSSampler):
    """DPS with its step size multiplied by `scale` (scale=0: the prior alone, i.e. DDPM)."""

    name = "scaled_dps"

    def __init__(self, scale: float = 1.0, **kw):
        super().__init__(**kw)
        self.zeta *= float(scale)


class PlainDPS(Sampler):
    """x_{t-1} = mu_t + sigma_t z - zeta g (Chung et al. 2023, Alg. 1)."""

    name = "plain_dps"

    def __init__(self, zeta: float = 1.0, **kw):
        super().__init__(**kw)
        self.zeta = float(zeta)

    def step(self, prior, diffusion, operator, noise, y, x, i, generator):
        g = self.measurement_gradient(prior, diffusion, operator, noise, y, x, i)
        self.record_misfit(g.misfit)  # the last finite misfit is reported if a sample diverges
        z = randn(x.shape, generator, x.dtype, x.device)
        x_sampled, mean, std = diffusion.ddpm_step(g.x0_hat.clamp(-1, 1), x, i, z, g.var_values)
        return Transition(x_t=x, x0_hat=g.x0_hat, eps=g.eps, grad=g.grad, mean=mean, std=std,
                          x_prev=x_sampled - self.zeta * g.grad)


class Decimate(Operator):
    """Keep every `stride`-th pixel in both directions; naive: nearest-neighbour upsampling."""

    linear = True

    def __init__(self, stride: int = 2):
        self.stride = int(stride)

    def forward(self, x):
        return x[..., ::self.stride, ::self.stride]

    def naive(self, y):
        return F.interpolate(y, scale_factor=self.stride, mode="nearest")


class WhiteNoisePrior(Prior):
    """x_0 ~ N(mean, I) per pixel: then x_t ~ N(sqrt(abar_t) mean, I) and eps = sqrt(1 - abar_t) (x_t - sqrt(abar_t) mean)."""

    def __init__(self, image_size: int = 8, mean: float = 0.0, diffusion_steps: int = 1000):
        super().__init__()
        self.image_size, self.mean = int(image_size), float(mean)
        self.betas = make_betas("linear", diffusion_steps)
        self.register_buffer("abar", torch.tensor(alphas_cumprod(self.betas)))

    @property
    def sample_shape(self):
        return (3, self.image_size, self.image_size)

    def predict(self, x_t, t):
        abar = self.abar.to(x_t.dtype)[t].reshape(-1, 1, 1, 1)
        return (1 - abar).sqrt() * (x_t - abar.sqrt() * self.mean), None


class ScaledGaussianNoise:
    """y = A(x) + sigma n (n ~ N(0, I)), with the misfit multiplied by `scale`: DPS's step with step size zeta
    is then the built-in Gaussian model's step with step size scale x zeta."""

    def __init__(self, sigma: float = 0.05, scale: float = 1.0):
        self.sigma, self.scale = float(sigma), float(scale)

    def sample(self, Ax, generator):
        return Ax + self.sigma * torch.randn(Ax.shape, generator=generator, dtype=Ax.dtype, device=Ax.device)

    def misfit(self, y, Ax):
        return self.scale * (y - Ax).reshape(y.shape[0], -1).norm(dim=1)
'''

SAMPLER_YAML = '''
defaults:
  - dps        # the shipped DPS YAML, extended
  - _self_
name: scaled_dps
_target_: user_ext.ScaledDPS
scale: 0.0
'''

TASK_YAML = '''
name: decimate2
operator: decimate
_target_: user_ext.Decimate
stride: 2
noise: gaussian
sigma_y: 0.0
'''

NOISE_TASK_YAML = '''
defaults:
  - gmm_linear   # the shipped Gaussian-mixture task (y drawn with its sigma_y), extended
  - _self_
name: gmm_scaled
noise:
  _target_: user_ext.ScaledGaussianNoise
  sigma: 0.05
  scale: 2.0
'''

PRIOR_YAML = '''
name: white_noise
kind: image
_target_: user_ext.WhiteNoisePrior
image_size: 8
mean: 0.5
diffusion_steps: 1000
respacing: "20"
variance: fixed_small
'''


def user_setup(tmp_path):
    """The user's module and config directory, outside the repository; the environment to run with."""
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "user_ext.py").write_text(USER_MODULE)
    for group, name, text in (("sampler", "scaled_dps", SAMPLER_YAML), ("task", "decimate2", TASK_YAML),
                              ("task", "gmm_scaled", NOISE_TASK_YAML),
                              ("prior", "white_noise", PRIOR_YAML)):
        (tmp_path / "myconf" / group).mkdir(parents=True, exist_ok=True)
        (tmp_path / "myconf" / group / f"{name}.yaml").write_text(textwrap.dedent(text))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "mod"), os.environ.get("PYTHONPATH", "")]))
    return env, f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"


def cli(args, env, cpu_limit=300):
    return run_with_guard([sys.executable, "-m", "dps_map.run", "progress=false", *args], capture_output=True,
                          text=True, cpu_limit=cpu_limit, env=env)


def test_user_sampler_from_own_module_and_config_dir(tmp_path):
    env, searchpath = user_setup(tmp_path)
    gmm = ["task=gmm_linear", "prior=gmm", "data=gmm", "num_samples=64", "sampler.respacing=20", searchpath]
    mine = cli([*gmm, "sampler=scaled_dps", f"hydra.run.dir={tmp_path / 'mine'}"], env)
    assert mine.returncode == 0, mine.stderr
    ddpm = cli([*gmm, "sampler=ddpm", f"hydra.run.dir={tmp_path / 'ddpm'}"], env)
    assert ddpm.returncode == 0, ddpm.stderr
    summary = json.loads((tmp_path / "mine" / "summary.json").read_text())
    assert summary["sampler"] == "scaled_dps" and summary["config"]["_target_"] == "user_ext.ScaledDPS"
    # dps.yaml extended: no tuned zeta for this new sampler name, so its YAML default, logged once
    assert summary["config"]["scale"] == 0.0 and summary["config"]["zeta"] == 1.0
    log = (tmp_path / "mine" / "run.log").read_text() if (tmp_path / "mine" / "run.log").exists() else mine.stdout
    assert log.count("sampler=scaled_dps, task=gmm_linear, prior=gmm: zeta=1.0 is the default of the sampler's "
                     "YAML (scaled_dps.yaml), not a value tuned for this prior") == 1
    # DPS's code path ran: one VJP through the network per step, no plain forward (20 respaced steps) ...
    assert (summary["cost"]["vjp"], summary["cost"]["forward"], summary["cost"]["steps"]) == (20, 0, 20)
    # ... and with scale 0 it is the prior alone: the same draws as DDPM
    np.testing.assert_allclose(np.load(tmp_path / "mine" / "samples.npy"), np.load(tmp_path / "ddpm" / "samples.npy"),
                               atol=1e-4)
    # a typo in the user's key is refused at start-up with the keys its constructor takes
    typo = cli([*gmm, "sampler=scaled_dps", "+sampler.scael=1", f"hydra.run.dir={tmp_path / 'typo'}"], env)
    assert typo.returncode == 2 and "unknown key scael in sampler=scaled_dps" in typo.stderr
    assert "scale" in typo.stderr.split("known:")[1] and "zeta" in typo.stderr.split("known:")[1]
    assert not (tmp_path / "typo" / "summary.json").exists()
    # an unimportable class: one line naming it
    bad = cli([*gmm, "sampler=scaled_dps", "sampler._target_=user_ext.Nope", f"hydra.run.dir={tmp_path / 'bad'}"], env)
    assert bad.returncode == 2 and "user_ext.Nope" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_user_step_gets_the_base_class_loop_hooks_and_result():
    """docs/extending.md's PlainDPS: a step that returns a Transition and never calls a hook. run() gives its
    samples, calls and failures, the base class calls the hooks once per step, and the samples are DPS's
    (the same formula and draws: equal to the last bit)."""
    import torch

    from dps_map.operators import GaussianNoise

    user = {}
    exec(USER_MODULE, user)
    prior, op, noise = user["WhiteNoisePrior"](image_size=8, mean=0.5), user["Decimate"](2), GaussianNoise(0.05)
    y = op(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    steps = []
    mine = user["PlainDPS"](zeta=0.5, respacing="6").run(prior, op, noise, y, (2, 3, 8, 8),
                                                          torch.Generator().manual_seed(1), hooks=[steps.append])
    dps = user["DPSSampler"](zeta=0.5, respacing="6").run(prior, op, noise, y, (2, 3, 8, 8),
                                                          torch.Generator().manual_seed(1))
    assert torch.equal(mine.x0, dps.x0) and mine.stats == dps.stats == {"forward": 0, "vjp": 6, "nfe": 6, "steps": 6}
    assert mine.failures() == [] and torch.isfinite(mine.last_misfit).all()
    assert [(st.i, st.forward, st.vjp) for st in steps] == [(i, 0, 1) for i in range(5, -1, -1)]
    assert torch.equal(steps[-1].x_prev, mine.x0)


def test_user_operator_from_own_module_and_config_dir(tmp_path):
    env, searchpath = user_setup(tmp_path)
    out = tmp_path / "run"
    proc = cli(["task=decimate2", "prior=tiny", "sampler=dps", "sampler.respacing=3", "data.per_photo=1",
                searchpath, f"hydra.run.dir={out}"], env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "decimate2" and summary["n_samples"] == 2
    for label in sorted((out / "label").glob("*.png")):  # y = x0[::2, ::2] exactly (sigma_y = 0)
        x0 = np.asarray(Image.open(label))
        y = np.asarray(Image.open(out / "input" / label.name))
        assert x0.shape[:2] == (64, 64) and y.shape[:2] == (32, 32)
        np.testing.assert_array_equal(y, x0[::2, ::2])
    typo = cli(["task=decimate2", "prior=tiny", "sampler=dps", "+task.strde=3", searchpath,
                f"hydra.run.dir={tmp_path / 'typo'}"], env)
    assert typo.returncode == 2 and "unknown key strde in task=decimate2" in typo.stderr
    assert "stride" in typo.stderr.split("known:")[1]


def test_user_prior_from_own_module_and_config_dir(tmp_path):
    env, searchpath = user_setup(tmp_path)
    out = tmp_path / "run"
    proc = cli(["task=sr4", "prior=white_noise", "sampler=ddpm", "data.per_photo=1", "num_samples=8", searchpath,
                f"hydra.run.dir={out}"], env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prior"] == "white_noise" and summary["n_samples"] == 16 and summary["cost"]["steps"] == 20
    assert summary["preprocessing"]["image_size"] == 8
    # the prior's own samples: pixels ~ N(0.5, 1) clipped to [-1, 1] by the PNGs; their mean is about 0.3
    x = np.stack([np.asarray(Image.open(p), dtype=np.float64) / 127.5 - 1 for p in (out / "recon").glob("*.png")])
    assert x.shape == (16, 8, 8, 3) and 0.15 < x.mean() < 0.45
    typo = cli(["task=sr4", "prior=white_noise", "sampler=ddpm", "+prior.maen=1", searchpath,
                f"hydra.run.dir={tmp_path / 'typo'}"], env)
    assert typo.returncode == 2 and "unknown key maen in prior=white_noise" in typo.stderr
    assert "mean" in typo.stderr.split("known:")[1]


def test_user_noise_model_from_own_module_and_config_dir(tmp_path):
    """A noise class outside dps_map, named by a task YAML's noise node: its misfit guides DPS. With
    scale = 2 and zeta = 0.5, DPS takes the steps of the built-in Gaussian model with zeta = 1.0 (the
    same seeds and draws), which would not hold if the built-in model ran instead."""
    env, searchpath = user_setup(tmp_path)
    gmm = ["prior=gmm", "data=gmm", "sampler=dps", "num_samples=64", "sampler.respacing=20", searchpath]
    mine = cli([*gmm, "task=gmm_scaled", "sampler.zeta=0.5", f"hydra.run.dir={tmp_path / 'mine'}"], env)
    assert mine.returncode == 0, mine.stderr
    ref = cli([*gmm, "task=gmm_linear", "sampler.zeta=1.0", f"hydra.run.dir={tmp_path / 'ref'}"], env)
    assert ref.returncode == 0, ref.stderr
    summary = json.loads((tmp_path / "mine" / "summary.json").read_text())
    assert summary["task"] == "gmm_scaled"
    assert (summary["cost"]["vjp"], summary["cost"]["forward"]) == (20, 0)  # DPS: one VJP per step, 20 steps
    mine_x, ref_x = np.load(tmp_path / "mine" / "samples.npy"), np.load(tmp_path / "ref" / "samples.npy")
    np.testing.assert_allclose(mine_x, ref_x, atol=1e-4)
    # a typo in the noise node is refused at start-up with the keys its constructor takes
    typo = cli([*gmm, "task=gmm_scaled", "+task.noise.scael=1", f"hydra.run.dir={tmp_path / 'typo'}"], env)
    assert typo.returncode == 2 and "unknown key scael in task=gmm_scaled noise" in typo.stderr, typo.stderr
    assert "known: _target_, scale, sigma" in typo.stderr and not (tmp_path / "typo" / "summary.json").exists()


def test_prior_yamls_name_their_builders():
    """The shipped prior YAMLs name keyword builders with `_target_`, and their keys come from those
    signatures; a YAML without `_target_`, or with a key no builder takes, is refused in one line."""
    import pytest
    from omegaconf import OmegaConf

    from dps_map.config import check_keys
    from dps_map.config.targets import keys
    from dps_map.errors import ConfigError

    from support import CONF, compose

    for path in sorted((CONF / "prior").glob("*.yaml")):
        node = OmegaConf.load(path)
        assert node._target_.startswith("dps_map.priors."), path.name
        assert set(node) <= keys("prior", node), (path.name, set(node) - keys("prior", node))
    typo = compose("prior=tiny", "task=sr4", "+prior.checkpont=x.pt")
    with pytest.raises(ConfigError, match=r"unknown key checkpont in prior=tiny \(known: .*checkpoint"):
        check_keys(typo)
    with pytest.raises(ConfigError, match=r"prior=tiny: no _target_"):
        check_keys(compose("prior=tiny", "task=sr4", "~prior._target_"))

def test_call_target_refuses_a_missing_argument_but_lets_a_bug_inside_the_class_through():
    import pytest

    from dps_map.config.targets import call_target
    from dps_map.errors import ConfigError

    class Needs:
        def __init__(self, zeta, steps=10):
            self.value = len(zeta)  # a TypeError here (zeta=1.0) is a bug in the class, not a config error

    assert call_target(Needs, {"zeta": [1, 2]}, "sampler=x").value == 2
    with pytest.raises(ConfigError, match="sampler=x: missing a required argument: 'zeta'"):
        call_target(Needs, {"steps": 3}, "sampler=x")
    with pytest.raises(TypeError, match="has no len"):
        call_target(Needs, {"zeta": 1.0}, "sampler=x")


def test_a_user_launcher_yaml_from_extending_md_extends_the_shipped_slurm_one(tmp_path):
    """docs/extending.md's bigcluster.yaml, read from the page: its own settings over the shipped slurm.yaml's,
    on Hydra's submitit SLURM launcher (composed as a --multirun composes it; nothing is submitted)."""
    from support import ROOT, compose

    page = (ROOT / "docs" / "extending.md").read_text()
    block = page.split("# myconf/hydra/launcher/bigcluster.yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "hydra" / "launcher").mkdir(parents=True)
    (tmp_path / "hydra" / "launcher" / "bigcluster.yaml").write_text(block)
    cfg = compose(f"hydra.searchpath=[file://{tmp_path}]", "hydra/launcher=bigcluster", hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.timeout_min) == ("long", 2880)  # bigcluster's own
    assert launcher.max_num_timeout == 3 and launcher.tasks_per_node == 1  # slurm.yaml's, inherited
