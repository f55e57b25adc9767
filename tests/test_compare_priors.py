"""experiments.compare_priors: the held-out eps loss that decides whether a retrained tiny prior ships."""

import numpy as np
from experiments.compare_priors import SHIPPED, crop_sets, eps_losses, loss_rows


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


def test_a_prior_compared_with_itself_differs_by_exactly_zero():
    rows = loss_rows(SHIPPED, SHIPPED, per_photo=1, timesteps=(50, 700))
    assert [(r["set"], r["t"]) for r in rows] == [("test", 50), ("test", 700), ("validation", 50), ("validation", 700)]
    assert all(r["diff"] == 0 and r["baseline"] == r["candidate"] > 0 for r in rows)


def test_colour_statistics_known_values_and_sample_rows(tmp_path):
    import torch

    from experiments.compare_priors import colour_stats, sample_rows

    grey = torch.zeros(2, 3, 8, 8)
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(2, 3, 8, 8)
    assert colour_stats(grey) == {"chroma": 0.0, "within_std": 0.0}
    assert colour_stats(red)["chroma"] == 2.0  # max - min over RGB of a saturated red pixel
    half = torch.cat([red[:, :, :4], grey[:, :, 4:]], 2)  # half red, half grey rows
    assert abs(colour_stats(half)["chroma"] - 1.0) < 1e-6 and colour_stats(half)["within_std"] > 0.5
    rows = sample_rows(SHIPPED, SHIPPED, num=2, per_photo=1, out=tmp_path / "cmp", steps_list=("3",))
    assert [r["source"] for r in rows] == ["crops: test", "crops: validation", "baseline", "candidate"]
    assert rows[2]["chroma"] == rows[3]["chroma"] > 0  # same prior, same seed: same samples
    assert (tmp_path / "cmp_candidate_3.png").stat().st_size > 0
