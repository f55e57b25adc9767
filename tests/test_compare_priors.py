"""tools.compare_priors: the held-out eps loss that decides whether a retrained tiny prior ships."""

import numpy as np
import pytest
import torch

from tools.compare_priors import SHIPPED, crop_sets, eps_losses, loss_rows


def test_eps_loss_of_the_shipped_prior_is_skilful_monotone_and_reproducible():
    crops = crop_sets(1)["test"]
    assert crops.shape == (2, 3, 64, 64) and crops.min() >= -1 and crops.max() <= 1
    timesteps = (10, 100, 400, 900)
    loss = eps_losses(SHIPPED, crops, timesteps)
    # eps_hat = 0 scores E||eps||^2 / D = 1; a trained prior is far below it, and predicting the noise
    # gets easier as it dominates x_t (card: 0.33 at t=10 down to 0.0015 at t=900)
    assert loss.shape == (4, 2) and (loss < 0.5).all()
    assert (np.diff(loss.mean(1)) < 0).all()
    np.testing.assert_array_equal(loss, eps_losses(SHIPPED, crops, timesteps))  # fixed noise per t


@pytest.fixture(scope="module")
def zero_prior(tmp_path_factory):
    """The shipped weights with the output convolution zeroed: eps_hat = 0 for every input, so its eps loss on noise
    n is mean(n^2), known without running it."""
    state = torch.load(SHIPPED, weights_only=True)
    state["out.2.weight"].zero_()
    state["out.2.bias"].zero_()
    path = tmp_path_factory.mktemp("zero") / "tiny_prior_zero.pt"
    torch.save(state, path)
    return path


def test_loss_rows_pair_the_priors_on_the_same_noise(zero_prior):
    """loss_rows(shipped, zero-output candidate): per (set, t) the candidate's loss is mean(n^2) of the noise seeded
    seed * 100003 + t (drawn here), the baseline the shipped prior's eps MSE on x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) n
    (written here), and diff, diff_se the mean and standard error of their per-crop differences."""
    from dps_map.config import compose
    from dps_map.config.targets import build_prior

    shipped = build_prior(compose("prior=tiny").prior)
    abar = np.cumprod(1 - shipped.betas)
    timesteps = (50, 700)
    rows = loss_rows(SHIPPED, zero_prior, per_photo=1, timesteps=timesteps)
    assert [(r["set"], r["t"]) for r in rows] == [("test", 50), ("test", 700), ("validation", 50), ("validation", 700)]
    for r in rows:
        crops = crop_sets(1)[r["set"]]
        n = torch.randn(crops.shape, generator=torch.Generator().manual_seed(r["t"]))
        x_t = float(np.sqrt(abar[r["t"]])) * crops + float(np.sqrt(1 - abar[r["t"]])) * n
        with torch.no_grad():
            eps = shipped.predict(x_t, torch.full((len(crops),), r["t"]))[0]
        base = ((eps - n) ** 2).flatten(1).mean(1).double().numpy()
        cand = (n**2).flatten(1).mean(1).double().numpy()
        np.testing.assert_allclose([r["baseline"], r["candidate"]], [base.mean(), cand.mean()], rtol=1e-5)
        np.testing.assert_allclose([r["diff"], r["diff_se"]],
                                   [(cand - base).mean(), (cand - base).std(ddof=1) / np.sqrt(len(base))], rtol=1e-4)
        assert r["diff"] > 0.4  # the trained prior beats eps_hat = 0 (loss ~1) by far


def test_colour_statistics_known_values_and_sample_rows(tmp_path, zero_prior):
    from tools.compare_priors import colour_stats, sample_rows

    grey = torch.zeros(2, 3, 8, 8)
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(2, 3, 8, 8)
    assert colour_stats(grey) == {"chroma": 0.0, "within_std": 0.0}
    assert colour_stats(red)["chroma"] == 2.0  # max - min over RGB of a saturated red pixel
    half = torch.cat([red[:, :, :4], grey[:, :, 4:]], 2)  # half red, half grey rows
    assert abs(colour_stats(half)["chroma"] - 1.0) < 1e-6 and colour_stats(half)["within_std"] > 0.5
    rows = sample_rows(SHIPPED, zero_prior, num=2, per_photo=1, out=tmp_path / "cmp", steps_list=("3",))
    assert [r["source"] for r in rows] == ["crops: test", "crops: validation", "baseline", "candidate"]
    for row, crops in zip(rows, crop_sets(1).values()):  # the crop rows: chroma and within-image std in numpy
        c = crops.double().numpy()
        assert row["chroma"] == pytest.approx((c.max(1) - c.min(1)).mean(), rel=1e-6)
        assert row["within_std"] == pytest.approx(c.reshape(len(c), -1).std(1, ddof=1).mean(), rel=1e-6)
    assert rows[2]["chroma"] != pytest.approx(rows[3]["chroma"], rel=1e-3)  # the candidate's own samples
    assert (tmp_path / "cmp_candidate_3.png").stat().st_size > 0
