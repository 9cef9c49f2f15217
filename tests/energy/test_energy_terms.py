"""Energy terms: closed-form values, float64 gradient checks, weights / masks, weighted sums."""

import pytest
import torch

from facerig.energy import terms as T


def rand(*shape):
    return torch.rand(*shape, dtype=torch.float64)


def test_values_against_closed_forms():
    x = torch.tensor([[0.0, 1.0, 3.0]], dtype=torch.float64)
    t = torch.tensor([[0.5, 1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(T.squared_l2(x, t), torch.tensor([0.25 + 9.0], dtype=torch.float64))
    assert torch.allclose(T.huber(x, t, delta=1.0), torch.tensor([0.125 + 2.5], dtype=torch.float64))
    assert torch.allclose(T.charbonnier(x, t, eps=1e-6), torch.tensor([3.5], dtype=torch.float64), atol=1e-5)
    mask = torch.tensor([[True, True, False]])
    assert torch.allclose(T.squared_l2(x, t, weight=torch.tensor([4.0, 1, 1], dtype=torch.float64), mask=mask),
                          torch.tensor([1.0], dtype=torch.float64))
    scale = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert torch.allclose(T.tikhonov(x, scale, mean=1.0), torch.tensor([1.0 + 0 + 4 / 9], dtype=torch.float64))
    assert torch.allclose(T.l1(x - t), torch.tensor([3.5], dtype=torch.float64))
    # TV of a ramp: isotropic = sum over pixels of |grad|; a (4, 4) ramp of slope 1 along x
    ramp = torch.arange(4, dtype=torch.float64).repeat(4, 1)[None, :, :, None]
    assert float(T.total_variation(ramp)) == pytest.approx(12.0)  # 3 differences of 1 in 4 rows
    diag = (torch.arange(4.0)[:, None] + torch.arange(4.0)[None, :]).double()[None, :, :, None]
    assert float(T.total_variation(diag, isotropic=False)) == pytest.approx(24.0)
    assert float(T.total_variation(diag)) == pytest.approx(9 * 2**0.5 + 6.0)
    sig = torch.tensor([[[0.0], [1.0], [-1.0]]], dtype=torch.float64)
    assert float(T.total_variation(sig, ndim=1)) == pytest.approx(3.0)
    two = torch.stack([ramp[..., 0], 2 * ramp[..., 0]], -1)  # channels coupled: sqrt(1 + 4) per step
    assert float(T.total_variation(two, channels="coupled")) == pytest.approx(12 * 5**0.5)
    f = rand(2, 5, 5, 3)
    G = T.gram_matrix(f)
    assert torch.allclose(G[1], f[1].reshape(-1, 3).T @ f[1].reshape(-1, 3) / 25)
    assert torch.allclose(T.gram_loss(f, G), torch.zeros(2, dtype=torch.float64))


MASK = torch.Generator().manual_seed(0)
MASK = torch.rand(2, 3, 5, 4, generator=MASK) > 0.3


@pytest.mark.parametrize(
    "fn",
    [
        lambda y, x: T.squared_l2(y, x, weight=torch.linspace(0, 1, 4, dtype=torch.float64).reshape(1, 1, 1, 4)),
        lambda y, x: T.huber(y, x, delta=0.3, mask=MASK),
        lambda y, x: T.charbonnier(y, x, eps=0.1),
        lambda y, x: T.tikhonov(y, torch.linspace(0.5, 2, 4, dtype=torch.float64), mean=x),
        lambda y, x: T.l1(y - x, weight=2.0),
        lambda y, x: T.total_variation(y, eps=0.05),
        lambda y, x: T.total_variation(y, isotropic=False, channels="coupled", eps=0.05),
        lambda y, x: T.total_variation(y[:, 0], ndim=1, eps=0.05),
        lambda y, x: T.gram_loss(y, T.gram_matrix(x)),
        lambda y, x: T.WeightedSum(data=(0.5, T.L2Data()), tv=(0.1, T.TotalVariation(eps=0.1)),
                                   robust=(1.0, T.HuberData(0.2)), c=(0.3, T.CharbonnierData(0.1)),
                                   t=(1.0, T.Tikhonov(2.0)), s=(1.0, T.L1()),
                                   g=(2.0, T.GramTerm(T.gram_matrix(x))))(x, y),
    ],
)
def test_gradcheck_float64(fn):
    x = rand(2, 3, 5, 4)
    y = (x + 0.3 * torch.randn(2, 3, 5, 4, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: fn(v, x), (y,))


def test_weighted_sum_reports_each_term():
    x, y = rand(3, 4, 4, 1), rand(3, 4, 4, 1)
    known = torch.rand(3, 4, 4, 1) > 0.5
    E = T.WeightedSum(data=(0.5, T.L2Data(mask=known)), tv=(0.1, T.TotalVariation()))
    parts = E.breakdown(x, y)
    assert set(parts) == {"data", "tv", "total"}
    assert torch.allclose(parts["data"], 0.5 * ((y - x) * known).square().sum(dim=(1, 2, 3)))
    assert torch.allclose(parts["tv"], 0.1 * T.total_variation(y))
    assert torch.allclose(parts["total"], E(x, y))
    op = T.L2Data(operator=lambda v: 2 * v)
    assert torch.allclose(op(x, y), T.squared_l2(2 * y, x))


def test_term_errors_name_arguments():
    x = rand(2, 3)
    with pytest.raises(ValueError, match="weight"):
        T.squared_l2(x, x, weight=-1.0)
    with pytest.raises(ValueError, match="target"):
        T.squared_l2(x, rand(3, 2))
    with pytest.raises(ValueError, match="scale"):
        T.tikhonov(x, torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="channels"):
        T.total_variation(rand(1, 3, 3, 1), channels="mixed")
    with pytest.raises(ValueError, match="delta"):
        T.huber(x, x, delta=0.0)
    with pytest.raises(ValueError, match="tv"):
        T.WeightedSum(tv=(-1.0, T.TotalVariation()))
