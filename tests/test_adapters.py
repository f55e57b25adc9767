"""The conditional adapter (paper method 2): zero-init equivalence, frozen prior, learning, checkpoints,
the adapter samplers, the trainer, and the adm512 adapter's size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from dps_map import ASSETS
from dps_map.adapters import Adapter, adapter_checkpoint, load_adapter, measurement_hint
from dps_map.config.targets import build_prior, build_sampler
from dps_map.diffusion import Diffusion, make_betas
from dps_map.errors import ConfigError, MissingFileError, UnsafeCheckpointError, UserError
from dps_map.io import sha256_file
from dps_map.operators import GaussianNoise, Inpainting, SuperResolution, box_mask
from dps_map.priors.adm import ADMPrior, build_unet, random_network
from dps_map.priors.conditional import ConditionalPrior, with_adapter
from dps_map.samplers import SAMPLERS, DDPMSampler, DMAPSampler, DPSSampler, DSGSampler

from support import CONF, SMALL_UNET, built_sampler, compose


@pytest.fixture()
def prior():
    torch.manual_seed(0)
    model = build_unet(SMALL_UNET)
    with torch.no_grad():  # guided_diffusion zero-initialises the output layer (eps = 0): make it non-trivial
        for p in model.out.parameters():
            p.normal_(0, 0.1)
    return ADMPrior(model, make_betas(), learn_sigma=True)


@pytest.fixture()
def problem():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    op, noise = SuperResolution(4), GaussianNoise(0.05)
    return x0, op, noise, noise.sample(op(x0), g)


def _perturb(adapter: Adapter, scale=0.05):
    """Make the zero convolutions non-zero (as after training)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for conv in [*adapter.zero_convs, adapter.middle_zero, adapter.hint[-1]]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * scale)


def test_hint_is_naive_measurement_plus_mask(problem):
    x0, op, noise, y = problem
    hint = measurement_hint(op, y)
    assert hint.shape == (2, 4, 16, 16)
    assert torch.equal(hint[:, :3], op.naive(y)) and torch.all(hint[:, 3] == 1)
    mask = box_mask(16, 0.5, "center", torch.Generator().manual_seed(0))
    inp = Inpainting(mask)
    y2 = noise.sample(inp(x0), torch.Generator().manual_seed(2))
    hint2 = measurement_hint(inp, y2)
    assert torch.equal(hint2[:, 3:], mask.expand(2, 1, 16, 16))
    assert torch.all(hint2[:, :3][mask.expand(2, 3, 16, 16) == 0] == 0)  # hidden pixels carry no noise


def test_zero_init_conditional_prior_equals_prior(prior, problem):
    x0, op, noise, y = problem
    adapter = Adapter(prior.model, hint_channels=4)
    cond = ConditionalPrior(prior, adapter).condition(op, y)
    x_t, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 900])
    with torch.no_grad():
        eps_c, var_c = cond.predict(x_t, t)
        eps, var = prior.predict(x_t, t)
    assert torch.equal(eps_c, eps) and torch.equal(var_c, var)
    _perturb(adapter)
    with torch.no_grad():
        assert not torch.allclose(cond.predict(x_t, t)[0], eps, atol=1e-4)  # the residuals do enter the UNet


@pytest.fixture()
def class_prior():
    """A class-conditional ADM UNet with every zero-initialised layer re-drawn (random_network): at guided_diffusion's
    init the residual branches, where the time and label embedding enter, output 0, and no label could show."""
    return ADMPrior(random_network(build_unet, {**SMALL_UNET, "class_cond": True}), make_betas(), learn_sigma=True,
                    class_cond=True)


def test_zero_init_equivalence_on_a_class_conditional_prior(class_prior, problem):
    """With zero convolutions the conditional eps is the prior's for the same per-row labels (the frozen UNet gets
    the label); the labels do change the prior's eps, so a label dropped on the way would show."""
    x0, op, noise, y = problem
    cond = ConditionalPrior(class_prior, Adapter(class_prior.model, hint_channels=4)).condition(op, y)
    x_t, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(8)), torch.tensor([40, 800])
    class_prior.set_class_labels(torch.tensor([3, 7]))
    with torch.no_grad():
        eps_c, var_c = cond.predict(x_t, t)
        eps, var = class_prior.predict(x_t, t)
        class_prior.set_class_labels(torch.tensor([5, 5]))
        other = class_prior.predict(x_t, t)[0]
    assert torch.equal(eps_c, eps) and torch.equal(var_c, var)
    assert (other - eps).abs().max() > 1e-3


def controlnet_reference(prior, adapter, x_t, t, hint, labels):
    """eps and variance values of the conditional prior written from ControlNet's definition (Zhang et al. 2023;
    adapters/adm_controlnet.py's docstring), around guided_diffusion's own UNetModel.forward:
      e     = time_embed(timestep_embedding(t)) + label_emb(labels)       (the adapter's copies)
      h_k   = E_k(h_{k-1}, e), plus hint_net(hint) after the first block; r_k = Z_k(h_k); r_mid = Z_mid(E_mid(h_K, e))
    and r_k added to the skip connection the frozen UNet's decoder reads from input block k (a pre-hook on the output
    block that pops it: the last r_k.shape[1] channels of its input), r_mid to the middle block's output."""
    from guided_diffusion.nn import timestep_embedding

    e = adapter.time_embed(timestep_embedding(t, adapter.model_channels)) + adapter.label_emb(labels)
    h, res = x_t, []
    for k, block in enumerate(adapter.input_blocks):
        h = block(h, e)
        if k == 0:
            h = h + adapter.hint(hint)
        res.append(adapter.zero_convs[k](h))
    mid = adapter.middle_zero(adapter.middle_block(h, e))
    unet, n = prior.model, len(res)

    def add_skip(j):
        def hook(module, args):
            inp, emb = args
            c = res[n - 1 - j].shape[1]
            return (torch.cat([inp[:, :-c], inp[:, -c:] + res[n - 1 - j]], 1), emb)
        return hook

    handles = [b.register_forward_pre_hook(add_skip(j)) for j, b in enumerate(unet.output_blocks)]
    handles.append(unet.middle_block.register_forward_hook(lambda module, args, out: out + mid))
    try:
        out = unet(x_t, t, y=labels)
    finally:
        for handle in handles:
            handle.remove()
    return out.split(3, dim=1)


def test_trained_adapter_follows_controlnets_definition_with_label_and_hint(class_prior, problem):
    """A trained (non-zero) adapter on a class-conditional prior, per-row labels: ConditionalPrior.predict equals the
    reference above (hint = [naive(y), mask]); the label and the hint each change the adapter's residuals."""
    x0, op, noise, y = problem
    adapter = Adapter(class_prior.model, hint_channels=4)
    _perturb(adapter, 0.2)
    labels = torch.tensor([3, 7])
    class_prior.set_class_labels(labels)
    x_t, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(9)), torch.tensor([40, 800])
    hint = torch.cat([op.naive(y), torch.ones(2, 1, 16, 16)], 1)
    with torch.no_grad():
        eps, var = ConditionalPrior(class_prior, adapter).condition(op, y).predict(x_t, t)
        ref_eps, ref_var = controlnet_reference(class_prior, adapter, x_t, t, hint, labels)
        torch.testing.assert_close(eps, ref_eps, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(var, ref_var, rtol=1e-4, atol=1e-5)
        assert (eps - class_prior.predict(x_t, t)[0]).abs().max() > 1e-2  # the residuals are not negligible
        residuals, middle = adapter(x_t, t, hint, labels)
        for other_labels, other_hint in ((torch.tensor([5, 5]), hint), (labels, -hint)):
            moved, moved_mid = adapter(x_t, t, other_hint, other_labels)
            assert max(float((a - b).abs().max()) for a, b in zip(moved + [moved_mid], residuals + [middle])) > 1e-3


def test_only_adapter_parameters_receive_gradients(prior, problem):
    x0, op, noise, y = problem
    adapter = Adapter(prior.model, hint_channels=4)
    _perturb(adapter)
    cond = ConditionalPrior(prior, adapter).condition(op, y)
    eps, _ = cond.predict(torch.randn(2, 3, 16, 16), torch.tensor([10, 500]))
    eps.square().mean().backward()
    assert all(p.grad is None for p in prior.model.parameters())
    assert all(not p.requires_grad for p in prior.model.parameters())
    grads = {n: p.grad for n, p in adapter.named_parameters()}
    assert all(g is not None for g in grads.values())
    for part in ("hint.", "input_blocks.", "middle_block.", "zero_convs.", "middle_zero."):
        assert sum(float(g.abs().sum()) for n, g in grads.items() if n.startswith(part)) > 0, part


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(prior, problem):
    x0, op, noise, y = problem
    adapter = Adapter(prior.model, hint_channels=4)
    cond = ConditionalPrior(prior, adapter).condition(op, y)
    diffusion = Diffusion(prior.betas)
    g = torch.Generator().manual_seed(5)
    t = torch.tensor([300, 700])
    eps = torch.randn(x0.shape, generator=g)
    x_t = diffusion.q_sample(x0, t, eps)
    opt = torch.optim.AdamW(adapter.parameters(), lr=3e-3)

    def loss():
        return F.mse_loss(cond.predict(x_t, t)[0], eps)

    first = float(loss().detach())
    for _ in range(20):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert float(loss().detach()) < 0.8 * first


def test_save_load_round_trip_and_refusals(prior, problem, tmp_path):
    x0, op, noise, y = problem
    adapter = Adapter(prior.model, hint_channels=4)
    _perturb(adapter)
    path = tmp_path / "a.pt"
    torch.save(adapter_checkpoint(adapter, task={"name": "sr4"}), path)
    loaded, meta = load_adapter(path, prior.model)
    assert meta == {"task": {"name": "sr4"}}
    x_t, t = torch.randn(2, 3, 16, 16), torch.tensor([1, 999])
    with torch.no_grad():
        a = ConditionalPrior(prior, adapter).condition(op, y).predict(x_t, t)[0]
        b = ConditionalPrior(prior, loaded).condition(op, y).predict(x_t, t)[0]
    assert torch.equal(a, b)
    assert not any(p.requires_grad for p in loaded.parameters())
    # another architecture, another format, a pickle, a missing file
    other = build_unet({**SMALL_UNET, "num_res_blocks": 2})
    with pytest.raises(ConfigError, match="architecture"):
        load_adapter(path, other)
    torch.save({"weights": adapter.state_dict()}, tmp_path / "b.pt")
    with pytest.raises(UserError, match="not a dps-map adapter"):
        load_adapter(tmp_path / "b.pt", prior.model)
    torch.save({"format": "dps-map-adapter/1", "builder": Adapter}, tmp_path / "c.pt")  # a pickled class: code to run
    with pytest.raises(UnsafeCheckpointError):
        load_adapter(tmp_path / "c.pt", prior.model)
    with pytest.raises(MissingFileError, match="prior.adapter="):
        load_adapter(tmp_path / "missing.pt", prior.model)


@pytest.mark.parametrize("base,kw", [(DDPMSampler, {}), (DPSSampler, {"zeta": 1.0}),
                                     (DMAPSampler, {"zeta": 1.0, "num_inner": 2}), (DSGSampler, {"w": 0.3})])
def test_samplers_on_a_zero_init_adapter_prior_equal_them_on_the_prior(prior, problem, tmp_path, base, kw):
    """Any sampler runs on with_adapter(prior, FILE).condition(operator, y) (prior.adapter=FILE): with an untrained
    (zero-initialised) adapter it samples what it samples on the prior; a trained one changes the samples."""
    x0, op, noise, y = problem
    path = tmp_path / "zero.pt"
    torch.save(adapter_checkpoint(Adapter(prior.model, hint_channels=4),
                                  operator={"class": "SuperResolution", **op.describe()}), path)
    common = dict(respacing="5", variance="fixed_small", **kw)
    y1 = y[:1]
    a = base(**common).sample(with_adapter(prior, path).condition(op, y1), op, noise, y1, (2, 3, 16, 16),
                              torch.Generator().manual_seed(3))
    b = base(**common).sample(prior, op, noise, y1, (2, 3, 16, 16), torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-5)
    # after training the adapter changes the samples
    adapter, _ = load_adapter(path, prior.model)
    _perturb(adapter, 0.5)
    torch.save(adapter_checkpoint(adapter, operator={"class": "SuperResolution", **op.describe()}), path)
    c = base(**common).sample(with_adapter(prior, path).condition(op, y1), op, noise, y1, (2, 3, 16, 16),
                              torch.Generator().manual_seed(3))
    assert not torch.allclose(c, b, atol=1e-3)


def test_adapter_for_another_operator_is_refused(prior, problem, tmp_path):
    x0, op, noise, y = problem
    path = tmp_path / "sr8.pt"
    torch.save(adapter_checkpoint(Adapter(prior.model, hint_channels=4),
                                  operator={"class": "SuperResolution", "factor": 8, "method": "bicubic"}), path)
    conditional = with_adapter(prior, path)
    assert conditional.needs_measurement  # the runner binds each measurement, checking its operator
    with pytest.raises(ConfigError, match="trained for operator"):
        conditional.condition(op, y[:1])
    # a study that scores the adapter on another operator on purpose (the score diagnostics) binds it unchecked
    unchecked = with_adapter(prior, path, check_operator=False)
    assert unchecked.condition(op, y[:1]).hint is not None


def test_adapter_presets_are_their_base_samplers_on_the_adapters_prior():
    """sampler=adapter* are presets: the base method's class, and an adapter (sampler.adapter) the runner gives the
    prior; the preset without one stops at start-up, and prior.adapter may not name another file."""
    from dps_map.config.checks import check_adapter

    for name, base in (("adapter", DDPMSampler), ("adapter_dps", DPSSampler), ("adapter_dmap", DMAPSampler),
                       ("adapter_dsg", DSGSampler)):
        cfg = compose(f"sampler={name}", "task=sr4", "prior=tiny")
        assert cfg.sampler.adapter.endswith("adapters/sr4_tiny.pt") and cfg.prior.adapter is None
        assert type(build_sampler(cfg.sampler)) is base is SAMPLERS[name]
    cfg = compose("sampler=adapter", "task=sr4", "prior=tiny", "sampler.adapter=null")
    with pytest.raises(ConfigError, match="needs an adapter"):
        check_adapter(cfg.sampler, cfg.prior, cfg.task)
    cfg = compose("sampler=adapter_dps", "task=sr4", "prior=tiny", "prior.adapter=/elsewhere/a.pt")
    with pytest.raises(ConfigError, match="differ: set one"):
        check_adapter(cfg.sampler, cfg.prior, cfg.task)
    assert type(built_sampler({"name": "dps", "method": "dps", "adapter": "x.pt"})) is DPSSampler  # the prior's key


def _train_cfg(out_dir, *overrides):
    small = [f"out_dir={out_dir}", "batch_size=2", "warmup=1", "save_every=2", "log_every=1", "threads=1",
             "prior.random_init=true", "prior.unet.image_size=32", "prior.unet.num_channels=32",
             "prior.unet.num_head_channels=32", "prior.unet.channel_mult='1,2'", "prior.unet.attention_resolutions='8'",
             "hint_width=8", "data.n_images=3", "data.min_side=32", "progress_mininterval=60"]
    return compose(*small, *overrides, config="train_adapter")


def test_trainer_resumes_and_exports_a_loadable_adapter(tmp_path):
    from dps_map.training.adapter import run, train

    state = train(_train_cfg(tmp_path, "steps=2"))
    assert state["step"] == 2 and len(state["losses"]) == 2
    card = run(_train_cfg(tmp_path, "steps=3", f"export_path={tmp_path / 'out' / 'sr4.pt'}"))
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 3 and saved["losses"][:2] == state["losses"]  # resumed, not restarted
    assert card["file"]["sha256"] == sha256_file(tmp_path / "out" / "sr4.pt")
    assert json.loads((tmp_path / "out" / "sr4.json").read_text())["operator"] == \
        {"class": "SuperResolution", "factor": 4, "method": "bicubic"}
    with pytest.raises(ConfigError, match="another task"):
        train(_train_cfg(tmp_path, "steps=4", "task=sr8"))


def test_resume_is_refused_onto_other_prior_weights_of_the_same_name(tmp_path):
    """A retrained prior keeps its name (prior=tiny): an adapter checkpoint trained on the old weights must
    not be resumed (and re-exported with the new prior's sha256 on its card) once the weights change."""
    from dps_map.training.adapter import signature
    from dps_map.training.common import prior_weights_id, signature_mismatch

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"weights A")
    b.write_bytes(b"weights B")
    sig = {p: signature(_train_cfg(tmp_path, "prior.random_init=false", f"prior.checkpoint={p}")) for p in (a, b)}
    assert sig[a]["prior"] == sig[b]["prior"] == "tiny" and sig[a]["prior_weights"] != sig[b]["prior_weights"]
    assert prior_weights_id(_train_cfg(tmp_path, "prior.random_init=false", f"prior.checkpoint={a}").prior) == \
        "sha256:" + sha256_file(a)
    assert signature_mismatch(sig[a], sig[a]) is None
    why = signature_mismatch(sig[a], sig[b])
    assert why.startswith("another prior_weights (sha256:") and sha256_file(b) in why
    assert "another task" in signature_mismatch(sig[a], signature(_train_cfg(
        tmp_path, "prior.random_init=false", f"prior.checkpoint={a}", "task=sr8")))
    old = {k: v for k, v in sig[a].items() if k != "prior_weights"}  # a checkpoint from before this check
    assert signature_mismatch(old, sig[a]).startswith("another prior_weights (None;")


def test_trainer_refuses_heldout_photos(tmp_path):
    from dps_map.training.adapter import train

    with pytest.raises(ConfigError, match="held-out"):
        train(_train_cfg(tmp_path, "steps=1", "data.photos=[astronaut,chelsea]"))


def test_adm512_adapter_builds_on_cpu():
    """The ADM-512 pixel setting: an adapter on openai's 512x512 class-conditional ADM (trainable count reported)."""
    unet = build_unet(OmegaConf.load(CONF / "prior" / "adm512.yaml").unet)
    adapter = Adapter(unet, hint_channels=4)
    n = sum(p.numel() for p in adapter.parameters() if p.requires_grad)
    total = sum(p.numel() for p in unet.parameters())
    print(f"adm512 adapter: {n / 1e6:.1f}M trainable parameters (prior {total / 1e6:.1f}M, frozen)")
    assert 0.25 * total < n < 0.6 * total
    assert adapter.label_emb is not None  # class-conditional: the copy keeps the label embedding
    del unet, adapter


# -- the reference conditional model at 512: openai's SR upsampler ---------------------------------
def test_upsampler_reference_conditions_on_sr_measurements():
    cfg = OmegaConf.load(CONF / "prior" / "adm128_512_upsampler.yaml")
    cfg.unet.update(large_size=64, small_size=16, num_channels=32, num_res_blocks=1, attention_resolutions="8",
                    num_head_channels=32)
    cfg.random_init, cfg.class_label = True, 3  # (class_label: data is bound per image by the runner)
    ref = build_prior(OmegaConf.merge(cfg, {"checkpoint": None}))
    assert ref.sample_shape == (3, 64, 64) and ref.class_cond
    g = torch.Generator().manual_seed(0)
    op, noise = SuperResolution(4), GaussianNoise(0.05)
    y = noise.sample(op(torch.rand(1, 3, 64, 64, generator=g) * 2 - 1), g)
    bound = ref.condition(op, y)
    with torch.no_grad():
        torch.nn.init.normal_(bound.model.out[-1].weight, std=0.1)  # guided_diffusion zero-inits the output
        x_t, t = torch.randn(2, 3, 64, 64, generator=g), torch.tensor([5, 600])
        eps, var = bound.predict(x_t, t)
        other, _ = bound.condition(op, -y).predict(x_t, t)
    assert eps.shape == var.shape == (2, 3, 64, 64)
    assert not torch.allclose(eps, other)  # y enters the prediction
    with pytest.raises(ConfigError, match="SR x4"):
        ref.condition(SuperResolution(8), y)
    with pytest.raises(ConfigError, match="measurement"):
        ref.predict(torch.randn(1, 3, 64, 64), torch.tensor([1]))


def test_gradient_checkpointing_reaches_the_adapter_copy(prior, problem):
    """perf.grad_checkpoint (or unet.use_checkpoint) also recomputes the adapter's encoder copy; gradients
    of the adapter are unchanged."""
    x0, op, noise, y = problem
    plain = Adapter(prior.model, hint_channels=4)
    _perturb(plain)
    x_t, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)), torch.tensor([50, 400])

    def grads(adapter):
        adapter.zero_grad()
        ConditionalPrior(prior, adapter).condition(op, y).predict(x_t, t)[0].square().sum().backward()
        return {n: p.grad.clone() for n, p in adapter.named_parameters()}

    reference = grads(plain)
    prior.configure_perf(grad_checkpoint=True)
    try:
        checkpointed = Adapter(prior.model, hint_channels=4)
        checkpointed.load_state_dict(plain.state_dict())
        block = checkpointed.input_blocks[1][0]
        assert "forward" in vars(block) and block.forward.__self__ is block  # bound to the copy, not the prior
        got = grads(checkpointed)
    finally:
        prior.configure_perf()
    for name, g in reference.items():
        assert torch.allclose(got[name], g, atol=1e-6, rtol=1e-5), name


def test_v_loss_weight_is_the_v_prediction_loss():
    """loss_weight=v: ||eps_hat - eps||^2 / abar_t equals ||v_hat - v||^2 with v = sqrt(abar) eps - sqrt(1-abar) x0."""
    from dps_map.training.common import loss_fn

    diffusion = Diffusion(make_betas())
    g = torch.Generator().manual_seed(0)
    x0, eps, eps_hat = (torch.randn(3, 3, 8, 8, generator=g) for _ in range(3))
    t = torch.tensor([10, 500, 990])
    x_t = diffusion.q_sample(x0, t, eps)
    abar = torch.as_tensor(diffusion.alphas_cumprod, dtype=torch.float32)[t].reshape(-1, 1, 1, 1)
    x0_hat = diffusion.x0_from_eps(x_t, t, eps_hat)
    v, v_hat = abar.sqrt() * eps - (1 - abar).sqrt() * x0, abar.sqrt() * eps_hat - (1 - abar).sqrt() * x0_hat
    v_loss = (v_hat - v).pow(2).flatten(1).mean(1).mean()
    assert torch.allclose(loss_fn(OmegaConf.create({"loss_weight": "v"}), diffusion, eps_hat, eps, t), v_loss, rtol=1e-4)
    assert torch.allclose(loss_fn(OmegaConf.create({"loss_weight": "eps"}), diffusion, eps_hat, eps, t),
                          F.mse_loss(eps_hat, eps))
    with pytest.raises(ConfigError):
        loss_fn(OmegaConf.create({"loss_weight": "x0"}), diffusion, eps_hat, eps, t)


SHIPPED = {"sr4_tiny": {"class": "SuperResolution", "factor": 4, "method": "bicubic"},
           "inpaint_box_tiny": {"class": "Inpainting", "pattern": "box"}}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_adapters_match_their_cards_and_load(name):
    """dps_map/assets/adapters/<task>_tiny.pt: sha256 as in its card, trained on training photographs only,
    loads into the shipped tiny prior for its task's operator, and predicts the noise of held-out images better
    than the prior alone."""
    from dps_map.config.targets import build_noise, build_operator
    from dps_map.data import HELDOUT_PHOTOS

    assert sorted(p.stem for p in (ASSETS / "adapters").glob("*.pt")) == sorted(SHIPPED)
    path = ASSETS / "adapters" / f"{name}.pt"
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["file"]["sha256"] == sha256_file(path)
    assert card["data"]["n_images"] == 100 and not set(card["data"].get("photos") or []) & set(HELDOUT_PHOTOS)
    assert card["operator"] == SHIPPED[name]
    task = name.removesuffix("_tiny")
    cfg = compose(f"task={task}", "prior=tiny", "sampler=adapter")
    assert Path(cfg.sampler.adapter) == path  # paths.adapter resolves to the shipped file
    prior = build_prior(cfg.prior)
    adapter, meta = load_adapter(cfg.sampler.adapter, prior.model)
    assert meta["prior"]["checkpoint_sha256"] == sha256_file(cfg.prior.checkpoint)  # trained on this very prior
    # it helps: on the held-out demo crops (never trained on), x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, the
    # adapter's eps is closer to the true eps than the prior's, crop by crop (measured: 0.32-0.96 of the prior's
    # squared error, mean 0.66 for sr4, 0.65 for inpaint_box)
    from dps_map.data import demo_crops

    abar = np.cumprod(1 - prior.betas)
    g = torch.Generator().manual_seed(0)
    ratios = []
    for item in demo_crops(64, 2, HELDOUT_PHOTOS):
        x0 = item.image[None]
        op = build_operator(cfg.task, 64, g)
        y = op.restrict(build_noise(cfg.task).sample(op(x0), g))
        conditional = ConditionalPrior(prior, adapter).condition(op, y)
        for t in (100, 300, 600):
            eps = torch.randn(x0.shape, generator=g)
            x_t = float(np.sqrt(abar[t])) * x0 + float(np.sqrt(1 - abar[t])) * eps
            with torch.no_grad():
                err_c = float((conditional.predict(x_t, torch.tensor([t]))[0] - eps).pow(2).mean())
                err = float((prior.predict(x_t, torch.tensor([t]))[0] - eps).pow(2).mean())
            ratios.append(err_c / err)
    assert max(ratios) < 1 and np.mean(ratios) < 0.85, ratios


def test_trainer_gradient_accumulation(prior, tmp_path):
    """accumulate=k (the effective batch of the adm512 recipe): the trainer's k micro-batches of an adapter's eps
    loss leave the gradient of the loss over the whole batch, computed here with autograd in one pass (the mean
    loss over 4 rows; micro-batches of 2 rows, each loss / 2), and the AdamW step that follows moves each
    weight by lr against the sign of that gradient (Adam's first step: m_hat / sqrt(v_hat) = g / |g|)."""
    from dps_map.training.trainer import Trainer

    adapter = Adapter(prior.model, hint_channels=4)
    _perturb(adapter)  # non-zero zero convolutions: every adapter weight gets a gradient
    cond = ConditionalPrior(prior, adapter)
    g = torch.Generator().manual_seed(6)
    op, noise = SuperResolution(4), GaussianNoise(0.05)
    x0 = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    y, eps, t = noise.sample(op(x0), g), torch.randn(4, 3, 16, 16, generator=g), torch.tensor([20, 300, 650, 980])
    x_t = Diffusion(prior.betas).q_sample(x0, t, eps)

    def loss(rows):
        cond.hint = measurement_hint(op, y[rows])
        return F.mse_loss(cond.predict(x_t[rows], t[rows])[0], eps[rows])

    names = [n for n, p in adapter.named_parameters() if p.requires_grad]
    params = [p for p in adapter.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    full = torch.autograd.grad(loss(slice(0, 4)), params)
    micro = iter([slice(0, 2), slice(2, 4)])
    cfg = OmegaConf.create({"steps": 1, "accumulate": 2, "lr": 1e-3, "lr_schedule": "constant", "lr_final_frac": 1.0,
                            "warmup": 0, "weight_decay": 0.0, "adam_betas": [0.9, 0.999], "grad_clip": 1e9,
                            "ema_decay": 0.9, "ema_warmup": False, "resume": False, "save_every": 1, "log_every": 1,
                            "progress_mininterval": 60.0})
    Trainer(cfg, adapter, tmp_path, module_key="adapter", rngs={}, meta={}, mismatch=lambda s: None,
            name="test").fit(lambda: loss(next(micro)))
    assert next(micro, None) is None  # both micro-batches, no more
    n_big = 0
    for name, p, g_full, p0 in zip(names, params, full, before):
        torch.testing.assert_close(p.grad, g_full, rtol=1e-3, atol=1e-7, msg=name)
        big = g_full.abs() > 1e-5  # where rounding cannot flip the sign of the gradient
        n_big += int(big.sum())
        torch.testing.assert_close((p.detach() - p0)[big], -1e-3 * g_full.sign()[big], rtol=1e-3, atol=1e-6, msg=name)
    assert n_big > 0.1 * sum(p.numel() for p in params)  # the step check covers a good part of the weights
    bad = OmegaConf.merge(cfg, {"accumulate": 0})
    with pytest.raises(ConfigError, match="accumulate must be >= 1"):
        Trainer(bad, adapter, tmp_path / "b", module_key="adapter", rngs={}, meta={}, mismatch=lambda s: None,
                name="test")


def test_class_labels_in_training_are_each_drawn_images_own_or_one_random_per_row(class_prior):
    """train_adapter's ClassLabels.bind for a batch of image indices idx: 'data' gives row r the label of image
    idx[r]; 'random' one label per row, uniform over the 1000 classes, from the batch stream; an int the same
    label for every row. Read back as the labels the prior's UNet gets for the batch."""
    from dps_map.training.adapter import ClassLabels

    labels = torch.tensor([10, 20, 30, 40])
    x = torch.zeros(3, 3, 16, 16)
    idx = torch.tensor([3, 0, 3])
    ClassLabels(OmegaConf.create({"class_label": "data"}), class_prior, labels).bind(class_prior, idx, None)
    assert class_prior.labels_for(x).tolist() == [40, 10, 40]
    ClassLabels(OmegaConf.create({"class_label": "random"}), class_prior, None).bind(
        class_prior, idx, torch.Generator().manual_seed(4))
    expected = torch.randint(0, 1000, (3,), generator=torch.Generator().manual_seed(4))
    assert class_prior.labels_for(x).tolist() == expected.tolist() and len(set(expected.tolist())) == 3
    ClassLabels(OmegaConf.create({"class_label": 7}), class_prior, None).bind(class_prior, idx, None)
    assert class_prior.labels_for(x).tolist() == [7, 7, 7]


def test_box_mask_adapter_is_refused_on_random_masks(prior, tmp_path):
    """The inpainting operator's signature names its mask pattern, so a box-mask adapter is not used
    for random masks (its hint would be out of distribution) but is accepted on any box mask."""
    from dps_map.config.targets import build_operator

    path = tmp_path / "box.pt"
    torch.save(adapter_checkpoint(Adapter(prior.model, hint_channels=4),
                                  operator={"class": "Inpainting", "pattern": "box"}), path)
    conditional = with_adapter(prior, path)
    g = torch.Generator().manual_seed(0)
    for location in ("center", "random"):
        box = build_operator(OmegaConf.create({"name": "box", "_target_": "dps_map.operators.box_inpainting",
                                                "box_fraction": 0.5, "location": location}), 16, g)
        conditional.condition(box, box(torch.zeros(1, 3, 16, 16)))
    rand = build_operator(OmegaConf.create({"name": "random", "_target_": "dps_map.operators.random_inpainting",
                                           "drop_ratio": 0.7}), 16, g)
    assert rand.describe() == {"pattern": "random"}
    with pytest.raises(ConfigError, match="trained for operator"):
        conditional.condition(rand, rand(torch.zeros(1, 3, 16, 16)))


def test_class_conditional_training_binds_each_images_label_and_checks_them_at_start_up(tmp_path, monkeypatch):
    """train_adapter on a class-conditional ADM: each batch row gets its own image's ImageNet class (from the
    <wnid>/ folder layout), the card records it; missing labels stop the run with the runner's message."""
    from PIL import Image

    from dps_map.priors.adm import ADMPrior
    from dps_map.training.adapter import run

    root = tmp_path / "train"
    wnids = {"n01440764": 0, "n09472597": 980, "n15075141": 999}
    for k, wnid in enumerate(wnids):
        (root / wnid).mkdir(parents=True)
        Image.fromarray((np.random.default_rng(k).random((40, 48, 3)) * 255).astype(np.uint8)).save(
            root / wnid / f"{wnid}_{k}.JPEG")
    seen = []
    original = ADMPrior.set_class_labels

    def record(self, labels):
        seen.append(torch.as_tensor(labels).reshape(-1).tolist())
        return original(self, labels)

    monkeypatch.setattr(ADMPrior, "set_class_labels", record)
    cond = ["prior=adm512", "prior.class_label=data", "data.kind=folder", f"data.root={root}", "steps=3",
            f"export_path={tmp_path / 'a.pt'}"]
    card = run(_train_cfg(tmp_path / "out", *cond))
    # the images are taken in file-name order, so row labels index [0, 980, 999]; each batch draws 2 rows
    batches = [labels for labels in seen if len(labels) == 2]
    assert len(batches) == 3 and all(set(b) <= set(wnids.values()) for b in batches)
    assert len({tuple(b) for b in batches}) > 1  # not one label for all
    assert card["data"]["class_labels"] == {"source": "folder", "n_labelled": 3}
    # labels that are not there: the runner's start-up errors, before any network is built
    flat = tmp_path / "flat"
    flat.mkdir()
    for k in range(3):
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(flat / f"img{k}.png")
    with pytest.raises(ConfigError, match="3 of 3 images have no class label"):
        run(_train_cfg(tmp_path / "out2", *cond[:3], f"data.root={flat}", "steps=1"))
    with pytest.raises(ConfigError, match="data=train_adapter crops has none"):
        run(_train_cfg(tmp_path / "out3", "prior=adm512", "prior.class_label=data", "steps=1"))
    with pytest.raises(MissingFileError, match="folder of training images"):
        run(_train_cfg(tmp_path / "out4", *cond[:3], f"data.root={tmp_path / 'nowhere'}", "steps=1"))
