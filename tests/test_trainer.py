"""The training loop (dps_map/training/trainer.py) on a linear least-squares model, where every quantity has a
closed form the test computes itself: gradient accumulation, the AdamW step that follows, the learning-rate
schedule, the EMA of the weights and a resume that continues bit for bit. Each test runs in well under a second."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from dps_map.training.trainer import Trainer, ema_decay_at, ema_update, lr_at

DIM, MICRO, K = 5, 3, 4  # parameters, rows per micro-batch, micro-batches per optimiser step


def cfg_of(**over):
    base = {"steps": 1, "lr": 0.01, "lr_schedule": "constant", "lr_final_frac": 0.1, "warmup": 0,
            "weight_decay": 0.1, "adam_betas": [0.9, 0.999], "grad_clip": 1.0e9, "ema_decay": 0.9, "ema_warmup": False,
            "resume": True, "save_every": 1, "log_every": 1, "progress_mininterval": 60.0, "accumulate": K}
    return OmegaConf.create({**base, **over})


def model():
    torch.manual_seed(0)
    return torch.nn.Linear(DIM, 1, bias=False, dtype=torch.float64)


def data(n, seed=1):
    """Rows a and targets b of a least-squares problem (float64: the comparisons are to rounding)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, DIM, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)


def full_batch_loss_and_grad(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    """The mean squared error over all rows and its gradient, in closed form: L = |a w - b|^2 / n,
    dL/dw = 2 a^T (a w - b) / n."""
    r = a @ w - b
    return float((r ** 2).mean()), 2 * a.T @ r / len(b)


def micro_batches(net, a, b):
    """batch_loss for the trainer: the k-th call returns the mean loss of rows [k*MICRO, (k+1)*MICRO)."""
    calls = []

    def batch_loss():
        k = len(calls)
        calls.append(k)
        rows = slice(k * MICRO, (k + 1) * MICRO)
        return ((net(a[rows]).squeeze(1) - b[rows]) ** 2).mean()

    return batch_loss, calls


def test_accumulated_gradient_is_the_full_batch_gradient_and_the_adamw_step_follows(tmp_path):
    """accumulate=K: K micro-batches of loss/K give the gradient of the mean loss over all K*MICRO rows (closed
    form above), the recorded loss is that mean loss, and the weights move by the first AdamW step on that
    gradient: w1 = w0 (1 - lr wd) - lr m_hat / (sqrt(v_hat) + 1e-8), m_hat = g, v_hat = g^2."""
    net = model()
    w0 = net.weight.detach().clone().reshape(-1)
    a, b = data(K * MICRO)
    batch_loss, calls = micro_batches(net, a, b)
    cfg = cfg_of()
    state = Trainer(cfg, net, tmp_path, module_key="model", rngs={}, meta={}, mismatch=lambda s: None,
                    name="test").fit(batch_loss)
    assert len(calls) == K and state["step"] == 1
    loss, grad = full_batch_loss_and_grad(w0, a, b)
    torch.testing.assert_close(net.weight.grad.reshape(-1), grad, rtol=1e-12, atol=1e-12)
    assert state["losses"] == [pytest.approx(loss, rel=1e-12)]
    w1 = w0 * (1 - cfg.lr * cfg.weight_decay) - cfg.lr * grad / (grad.abs() + 1e-8)
    torch.testing.assert_close(net.weight.detach().reshape(-1), w1, rtol=1e-12, atol=1e-12)
    # one micro-batch alone gives another gradient (the check above can tell them apart)
    assert (full_batch_loss_and_grad(w0, a[:MICRO], b[:MICRO])[1] - grad).abs().max() > 0.05


def test_clipped_gradients_have_the_norm_grad_clip_in_two_adamw_steps(tmp_path):
    """grad_clip: each step's accumulated gradient is rescaled to norm grad_clip before the optimiser step. Two
    steps on the same rows follow Adam's recurrence written out here (m, v from the clipped gradients, bias
    corrected; decoupled weight decay): Adam is invariant to the scale of one gradient, so it takes a second step
    with another gradient to show whether the first was clipped."""
    net = model()
    w = net.weight.detach().clone().reshape(-1)
    a, b = data(K * MICRO)
    calls = []

    def batch_loss():  # the same K micro-batches at every step
        k = len(calls) % K
        calls.append(k)
        rows = slice(k * MICRO, (k + 1) * MICRO)
        return ((net(a[rows]).squeeze(1) - b[rows]) ** 2).mean()

    clip, lr, wd, (b1, b2) = 0.01, 0.01, 0.1, (0.9, 0.999)
    Trainer(cfg_of(grad_clip=clip, steps=2), net, tmp_path, module_key="model", rngs={}, meta={},
            mismatch=lambda s: None, name="test").fit(batch_loss)
    m = v = torch.zeros(DIM, dtype=torch.float64)
    for step in (1, 2):
        g = full_batch_loss_and_grad(w, a, b)[1]
        assert g.norm() > 10 * clip
        g = g * clip / g.norm()
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g ** 2
        w = w * (1 - lr * wd) - lr * (m / (1 - b1 ** step)) / ((v / (1 - b2 ** step)).sqrt() + 1e-8)
    # (clip_grad_norm_ scales by clip / (norm + 1e-6): a relative 1e-6 here)
    torch.testing.assert_close(net.weight.grad.reshape(-1), g, rtol=1e-5, atol=1e-14)  # the last step's
    torch.testing.assert_close(net.weight.detach().reshape(-1), w, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_learning_rate_schedule_is_linear_warmup_then_constant_or_cosine(schedule):
    """lr(s) = lr (s + 1) / warmup for s < warmup; then lr, or the cosine from lr down to lr * lr_final_frac at
    s = steps (and held there)."""
    lr, warmup, steps, frac = 2e-3, 4, 24, 0.1
    cfg = OmegaConf.create({"lr": lr, "warmup": warmup, "steps": steps, "lr_schedule": schedule, "lr_final_frac": frac})
    for s in range(steps + 3):
        if s < warmup:
            expected = lr * (s + 1) / warmup
        elif schedule == "constant":
            expected = lr
        else:
            p = min(1.0, (s - warmup) / (steps - warmup))
            expected = lr * frac + (lr - lr * frac) * (1 + math.cos(math.pi * p)) / 2
        assert lr_at(s, cfg) == pytest.approx(expected, rel=1e-12), s
    if schedule == "cosine":  # the middle of the cosine is halfway between the peak and the floor
        assert lr_at(warmup + (steps - warmup) // 2, cfg) == pytest.approx((lr + lr * frac) / 2, rel=1e-12)


def test_ema_follows_its_recurrence_over_the_trainers_steps(tmp_path):
    """With ema_warmup the decay after step s is min(ema_decay, (1 + s) / (10 + s)); the EMA starts at the
    initial weights and e_{s+1} = d_s e_s + (1 - d_s) w_{s+1}. The weights w_s are read from the checkpoint
    written after each step."""
    a, b = data(3 * K * MICRO, seed=2)
    ws = []
    for steps in (1, 2, 3):  # each run resumes the previous one's checkpoint
        net = model()
        if steps == 1:
            ws.append(net.weight.detach().clone())
        calls = []

        def batch_loss():
            k = len(calls) + (steps - 1) * K
            calls.append(k)
            rows = slice(k * MICRO, (k + 1) * MICRO)
            return ((net(a[rows]).squeeze(1) - b[rows]) ** 2).mean()

        state = Trainer(cfg_of(steps=steps, ema_decay=0.5, ema_warmup=True, lr=0.1), net, tmp_path,
                        module_key="model", rngs={}, meta={}, mismatch=lambda s: None, name="test").fit(batch_loss)
        ws.append(state["model"]["weight"].clone())
    decays = [min(0.5, (1 + s) / (10 + s)) for s in range(3)]
    assert decays == [0.1, 2 / 11, 0.25]
    ema = ws[0]
    for s in range(3):
        ema = decays[s] * ema + (1 - decays[s]) * ws[s + 1]
    torch.testing.assert_close(state["ema"]["weight"], ema, rtol=1e-12, atol=1e-14)
    assert [ema_decay_at(s, OmegaConf.create({"ema_decay": 0.5, "ema_warmup": False})) for s in range(3)] == [0.5] * 3


def test_ema_update_weighs_the_old_average_by_the_decay():
    net = model()
    ema = {"weight": torch.ones(1, DIM, dtype=torch.float64)}
    ema_update(ema, net, 0.75)
    torch.testing.assert_close(ema["weight"], 0.75 + 0.25 * net.weight.detach(), rtol=1e-15, atol=0)


def test_resume_continues_bit_for_bit(tmp_path):
    """4 steps straight equal 2 steps, a new Trainer resumed from the checkpoint, then 2 more: weights, EMA,
    Adam moments, losses, and the random stream the batches are drawn from (saved in the checkpoint)."""
    a, b = data(64, seed=3)

    def run(out, steps):
        net = model()
        gen = torch.Generator().manual_seed(7)

        class Stream:  # the trainer's rngs protocol (get_state / set_state) on a torch.Generator
            def get_state(self):
                return gen.get_state()

            def set_state(self, state):
                gen.set_state(state)

        def batch_loss():
            rows = torch.randint(0, len(b), (MICRO,), generator=gen)
            return ((net(a[rows]).squeeze(1) - b[rows]) ** 2).mean()

        return Trainer(cfg_of(steps=steps, accumulate=2, lr=0.05, warmup=2, lr_schedule="cosine", ema_warmup=True),
                       net, out, module_key="model", rngs={"rng": Stream()}, meta={}, mismatch=lambda s: None,
                       name="test").fit(batch_loss)

    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4)
    assert resumed["step"] == straight["step"] == 4 and resumed["losses"] == straight["losses"]
    assert torch.equal(resumed["model"]["weight"], straight["model"]["weight"])
    assert torch.equal(resumed["ema"]["weight"], straight["ema"]["weight"])
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(resumed["optimizer"]["state"][0][key], straight["optimizer"]["state"][0][key]), key
    assert torch.equal(resumed["rng"], straight["rng"])
