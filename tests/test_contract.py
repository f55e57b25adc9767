"""The sampler contract, for every registered method (samplers.SAMPLERS), built from its config as a run
builds it: output shape and finite values, the forward/VJP counts of the method's cost formula, the same
generator gives the same sample (another gives another), `sample` returns `run`'s samples, and hooks are
called once per step, in order, each with the network calls of its step.

Cost with S steps and K inner steps (projection on: the last step has radius 0 and needs no VJP):
  ddpm, adapter, oracle: S forwards | dps, dsg, adapter_dps: S VJPs | dmap, adapter_dmap: S forwards
  + K (S - 1) VJPs | psld: S VJPs | freedom: S + (repeat - 1) x (steps in its time-travel window) VJPs |
  exact: nothing (closed form, no chain).
"""

from __future__ import annotations

import pytest
import torch

from dps_map.adapters import Adapter, adapter_checkpoint
from dps_map.diffusion import Diffusion
from dps_map.errors import ConfigError
from dps_map.operators import GaussianNoise, MatrixOperator, SuperResolution
from dps_map.priors.gmm import find_multimodal_problem
from dps_map.samplers import SAMPLERS

from support import built_sampler, shipped_prior, small_adm

S, K = 5, 2
#: (config, expected (forward, vjp)) per case; every method of SAMPLERS appears (checked below)
CASES = {
    "ddpm": ({"method": "ddpm"}, (S, 0)),
    "ddim": ({"method": "ddpm", "transition": "ddim", "eta": 0.5}, (S, 0)),
    "dps": ({"method": "dps", "zeta": 0.5}, (0, S)),
    "dsg": ({"method": "dsg", "w": 0.3}, (0, S)),
    "dmap": ({"method": "dmap", "zeta": 0.3, "num_inner": K}, (S, K * (S - 1))),
    "dmap_noproj": ({"method": "dmap", "zeta": 0.3, "num_inner": K, "project": False}, (S, K * S)),
    "dmap_adam": ({"method": "dmap", "zeta": 0.05, "num_inner": K, "optimizer": "adam"}, (S, K * (S - 1))),
    "adapter": ({"method": "adapter"}, (S, 0)),
    "adapter_dps": ({"method": "adapter_dps", "zeta": 0.5}, (0, S)),
    "adapter_dmap": ({"method": "adapter_dmap", "zeta": 0.3, "num_inner": K}, (S, K * (S - 1))),
    "adapter_dsg": ({"method": "adapter_dsg", "w": 0.02}, (0, S)),
    "exact": ({"method": "exact"}, (0, 0)),
    "oracle": ({"method": "oracle", "clip_x0": False}, (S, 0)),
    "psld": ({"method": "psld", "zeta": 0.5, "gamma": 0.1}, (0, S)),
    # time-travel window [0.3, 0.7) of S=5 steps holds i = 2, 3: two steps done twice
    "freedom": ({"method": "freedom", "zeta": 0.5, "repeat": 2}, (0, S + 2)),
    # the authors' units (guidance_units=euler) and the named presets' settings (psld_rout, freedom_yu): same costs
    "dps_euler": ({"method": "dps", "zeta": 0.5, "guidance_units": "euler"}, (0, S)),
    "dsg_euler": ({"method": "dsg", "w": 0.3, "guidance_units": "euler"}, (0, S)),
    "dmap_euler": ({"method": "dmap", "zeta": 0.3, "num_inner": K, "guidance_units": "euler"}, (S, K * (S - 1))),
    "adapter_dps_euler": ({"method": "adapter_dps", "zeta": 0.5, "guidance_units": "euler"}, (0, S)),
    "adapter_dmap_euler": ({"method": "adapter_dmap", "zeta": 0.3, "num_inner": K, "guidance_units": "euler"},
                           (S, K * (S - 1))),
    "psld_euler": ({"method": "psld", "zeta": 0.5, "gamma": 0.1, "guidance_units": "euler"}, (0, S)),
    "psld_rout": ({"method": "psld", "zeta": 0.5, "gamma": 0.1, "gluing": "transpose", "encoding": "sample",
                   "transition": "ddim", "eta": 0.0, "noise_on_prediction": True}, (0, S)),
    "freedom_euler": ({"method": "freedom", "zeta": 0.5, "repeat": 2, "guidance_units": "euler"}, (0, S + 2)),
    # window [0.5, 0.81) of S=5 steps holds i = 3, 4: two steps done three times
    "freedom_yu": ({"method": "freedom", "zeta": 0.02, "rho": "adaptive", "repeat": 3, "travel_start": 0.5,
                    "travel_end": 0.81}, (0, S + 4)),
}
GMM_ONLY = ("exact", "oracle")
GMM_TOO = ("ddpm", "dps", "dsg", "dmap", "dps_euler", "dmap_euler", "freedom_yu")


def test_every_registered_method_has_a_case():
    assert {cfg["method"] for cfg, _ in CASES.values()} == set(SAMPLERS)


def test_unknown_ddpm_transition_is_refused():
    with pytest.raises(ConfigError, match="transition"):
        built_sampler({"name": "ddpm", "method": "ddpm", "transition": "ddmi"})


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    prior = small_adm()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1
    op, noise = SuperResolution(4), GaussianNoise(0.05)
    adapter = Adapter(prior.model, hint_channels=4)
    with torch.no_grad():  # non-zero control (as after training), so the adapter changes eps
        for conv in [*adapter.zero_convs, adapter.middle_zero, adapter.hint[-1]]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
    path = tmp_path_factory.mktemp("adapter") / "sr4.pt"
    torch.save(adapter_checkpoint(adapter, operator={"class": "SuperResolution", **op.describe()}), path)
    return prior, op, noise, noise.sample(op(x0), g).expand(2, -1, -1, -1), (2, 3, 16, 16), str(path)


@pytest.fixture(scope="module")
def gmm():
    prior = shipped_prior("gmm")
    A, _, y, _, _ = find_multimodal_problem(prior.mixture, 2, 0.05, torch.Generator().manual_seed(0))
    return prior, MatrixOperator(A), GaussianNoise(0.05), y[None].expand(3, -1), (3, 8), None


def run(case, problem, seed):
    prior, op, noise, y, shape, adapter = problem
    cfg, _ = CASES[case]
    extra = {"adapter": adapter} if cfg["method"].startswith("adapter") else {}
    sampler = built_sampler({"name": case, "respacing": str(S), **cfg, **extra})
    steps = []
    result = sampler.run(prior, op, noise, y, shape, torch.Generator().manual_seed(seed), hooks=[steps.append])
    return sampler, result, steps


PARAMS = [(case, "image") for case in CASES if case not in GMM_ONLY] + \
         [(case, "gmm") for case in CASES if case in GMM_ONLY + GMM_TOO]


@pytest.mark.parametrize("case, kind", PARAMS)
def test_sampler_contract(case, kind, request):
    problem = request.getfixturevalue(kind)
    prior, shape = problem[0], problem[4]
    sampler, result, steps = run(case, problem, seed=1)
    x = result.x0
    assert x.shape == shape and bool(torch.isfinite(x).all()) and result.failures() == []
    forward, vjp = CASES[case][1]
    assert (result.stats["forward"], result.stats["vjp"]) == (forward, vjp)
    assert result.stats["nfe"] == forward + vjp
    chain = case != "exact"
    assert result.stats["steps"] == (S if chain else 0)
    # each hook call reports its step's own calls; together they are the run's
    assert (sum(st.forward for st in steps), sum(st.vjp for st in steps)) == ((forward, vjp) if chain else (0, 0))
    # hooks: once per step, from the noisiest step down to 0, at the step's training index
    timesteps = Diffusion(prior.betas, str(S)).timesteps.tolist()
    assert [st.i for st in steps] == (list(range(S - 1, -1, -1)) if chain else [])
    assert [st.t for st in steps] == [timesteps[st.i] for st in steps]
    for st in steps:
        assert st.x_prev.shape == shape and st.x0_hat.shape == shape
    torch.testing.assert_close(steps[-1].x_prev if chain else x, x, rtol=0, atol=0)
    # the same generator gives the same sample; another generator another one
    again = run(case, problem, seed=1)[1].x0
    other = run(case, problem, seed=2)[1].x0
    assert torch.equal(x, again)
    assert torch.equal(sampler.sample(prior, problem[1], problem[2], problem[3], shape, torch.Generator().manual_seed(1)),
                       x)
    assert float((x - other).abs().max()) > 1e-3
