"""Forward models: adjoint identities, explicit matrices, seeded randomness, noise models."""

import numpy as np
import pytest
import torch

from dps_map.errors import ConfigError
from dps_map.operators import (
    Blur,
    GaussianNoise,
    Identity,
    Inpainting,
    MatrixOperator,
    PoissonNoise,
    SuperResolution,
    box_mask,
    gaussian_kernel,
    motion_kernel,
    random_mask,
)


def linear_operators(size=16):
    g = torch.Generator().manual_seed(3)
    return {
        "identity": Identity(),
        "inpaint_box": Inpainting(box_mask(size, 0.5, "random", g)),
        "inpaint_random": Inpainting(random_mask(size, 0.7, g)),
        "sr4_bicubic": SuperResolution(4, "bicubic"),
        "sr4_avgpool": SuperResolution(4, "avgpool"),
        "sr4_imresize": SuperResolution(4, "imresize"),
        "sr8_bicubic": SuperResolution(8, "bicubic"),
        "gaussian_blur": Blur(gaussian_kernel(9, 2.0)),
        "motion_blur": Blur(motion_kernel(11, 0.5, g)),
    }


def to64(op):
    for name, value in vars(op).items():
        if isinstance(value, torch.Tensor):
            setattr(op, name, value.double())
    return op


@pytest.mark.parametrize("name", list(linear_operators()))
def test_adjoint_identity(name, gen):
    """<A x, y> = <x, A^T y> for random x, y."""
    op = to64(linear_operators()[name])
    x = torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64)
    Ax = op(x)
    y = torch.randn(Ax.shape, generator=gen, dtype=torch.float64)
    lhs, rhs = (Ax * y).sum(), (x * op.adjoint(y)).sum()
    assert abs(float(lhs - rhs)) < 1e-9 * max(1.0, abs(float(lhs)))


@pytest.mark.parametrize("name", list(linear_operators()))
def test_adjoint_is_transpose_of_explicit_matrix(name):
    """Build A column by column on a 16x16 single-channel image; A^T from adjoint must equal M^T."""
    op = to64(linear_operators()[name])
    n = 16 * 16
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, 16, 16)
    M = op(basis).reshape(n, -1).T  # (m, n)
    m = M.shape[0]
    ybasis = torch.eye(m, dtype=torch.float64).reshape(m, *op(basis[:1]).shape[1:])
    MT = op.adjoint(ybasis).reshape(m, -1).T  # (n, m)
    torch.testing.assert_close(MT, M.T)


def test_avgpool_is_block_mean():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = SuperResolution(2, "avgpool")(x)
    torch.testing.assert_close(y, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))


def test_sr_preserves_constants_and_rejects_bad_factor():
    x = torch.full((1, 3, 32, 32), 0.3)
    torch.testing.assert_close(SuperResolution(4)(x), torch.full((1, 3, 8, 8), 0.3))
    torch.testing.assert_close(SuperResolution(4, "imresize")(x), torch.full((1, 3, 8, 8), 0.3))
    with pytest.raises(ConfigError):
        SuperResolution(4, "lanczos")
    with pytest.raises(ConfigError):
        SuperResolution(3)(x)


def test_blur_kernels():
    k = gaussian_kernel(61, 3.0)
    assert k.shape == (61, 61) and abs(float(k.sum()) - 1) < 1e-6
    torch.testing.assert_close(k, k.flip(0))
    torch.testing.assert_close(k, k.T)
    # second moment of a sampled Gaussian with sigma 3 (well inside the 61 window) is sigma^2
    u = torch.arange(61.0) - 30
    assert float((k.sum(0) * u**2).sum()) == pytest.approx(9.0, rel=1e-3)
    m1 = motion_kernel(61, 0.5, torch.Generator().manual_seed(1))
    m1b = motion_kernel(61, 0.5, torch.Generator().manual_seed(1))
    m2 = motion_kernel(61, 0.5, torch.Generator().manual_seed(2))
    assert abs(float(m1.sum()) - 1) < 1e-5 and float(m1.min()) >= 0
    torch.testing.assert_close(m1, m1b)
    assert float((m1 - m2).abs().sum()) > 0.1
    assert int((m1 > 0).sum()) > 30  # a trajectory, not a point


def test_blur_preserves_constants():
    x = torch.full((1, 3, 64, 64), -0.2)
    torch.testing.assert_close(Blur(gaussian_kernel(61, 3.0))(x), x)
    with pytest.raises(ConfigError):
        Blur(gaussian_kernel(61, 3.0))(torch.zeros(1, 3, 16, 16))


def test_masks_are_seeded():
    a = box_mask(64, 0.5, "random", torch.Generator().manual_seed(5))
    b = box_mask(64, 0.5, "random", torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert float((1 - a).sum()) == 32 * 32
    c = box_mask(64, 0.25, "center", torch.Generator())
    assert float(c[0, 0, 32, 32]) == 0 and float(c[0, 0, 0, 0]) == 1
    r = random_mask(64, 0.7, torch.Generator().manual_seed(0))
    assert abs(float(r.mean()) - 0.3) < 0.03
    with pytest.raises(ConfigError):
        box_mask(64, 1.5, "random", torch.Generator())


def test_inpainting_restricts_noise():
    op = Inpainting(box_mask(16, 0.5, "center", torch.Generator()))
    y = op.restrict(GaussianNoise(0.1).sample(op(torch.zeros(1, 3, 16, 16)), torch.Generator().manual_seed(0)))
    assert float(y[..., 8, 8].abs().max()) == 0.0  # hidden pixels carry nothing
    assert float(y.abs().sum()) > 0


def test_gaussian_noise_and_misfit(gen):
    noise = GaussianNoise(0.05)
    Ax = torch.zeros(4, 3, 32, 32)
    y = noise.sample(Ax, gen)
    assert float(y.std()) == pytest.approx(0.05, rel=0.05)
    x = torch.randn(4, 3, 32, 32, generator=gen)
    torch.testing.assert_close(noise.misfit(y, x), (y - x).reshape(4, -1).norm(dim=1))
    y2 = GaussianNoise(0.05).sample(Ax, torch.Generator().manual_seed(0))
    torch.testing.assert_close(y, y2)
    # y = A x + sigma n, n the generator's next standard normal draw (written out, not drawn by the noise model)
    Ax = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    n = torch.randn(Ax.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(GaussianNoise(0.3).sample(Ax, torch.Generator().manual_seed(4)), Ax + 0.3 * n,
                               rtol=0, atol=1e-15)


def test_poisson_noise_is_unbiased_with_known_variance(gen):
    noise = PoissonNoise(rate=50.0)
    Ax = torch.full((1, 1, 200, 200), 0.2)
    y = noise.sample(Ax, gen)
    assert float(y.mean()) == pytest.approx(0.2, abs=0.01)
    # var(y) = 4 var(c) / rate^2 = 2 (Ax + 1) / rate
    assert float(y.var()) == pytest.approx(2 * 1.2 / 50, rel=0.05)
    # y = 2 c / rate - 1 with c integer photon counts
    counts = (y.double() + 1) * 50 / 2
    assert float((counts - counts.round()).abs().max()) < 1e-4 and float(counts.min()) >= 0


def test_poisson_misfit_is_the_inverse_variance_weighted_norm():
    """misfit(y, Ax) = sqrt(sum_j (y_j - Ax_j)^2 / v_j), v_j = max(2 (y_j + 1) / rate, 2 / rate), written out in numpy
    over pixels with zero counts (y = -1: the floor) and bright ones."""
    rate = 40.0
    rng = np.random.default_rng(0)
    counts = rng.poisson(rate * rng.uniform(0, 1, size=(3, 2, 6, 6)))
    counts[0, 0, :2] = 0
    y = 2 * counts / rate - 1
    Ax = y + 0.1 * rng.standard_normal(y.shape)
    v = np.maximum(2 * (y + 1) / rate, 2 / rate)
    expected = np.sqrt(((y - Ax) ** 2 / v).reshape(3, -1).sum(1))
    got = PoissonNoise(rate).misfit(torch.from_numpy(y), torch.from_numpy(Ax)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # the weights matter: the unweighted norm is far from it
    assert np.abs(np.sqrt(((y - Ax) ** 2).reshape(3, -1).sum(1)) - expected).max() > 0.5 * expected.min()


def test_matrix_operator_and_pseudo_inverse(gen):
    A = torch.randn(2, 8, generator=gen, dtype=torch.float64)
    op = MatrixOperator(A)
    x = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(op(x), x @ A.T)
    y = op(x)
    torch.testing.assert_close(op(op.naive(y)), y)
    np.testing.assert_allclose(op.naive(y).numpy(), y.numpy() @ np.linalg.pinv(A.numpy()).T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(op.adjoint(y).numpy(), y.numpy() @ A.numpy(), rtol=1e-12)
