"""The feature-inversion terms of the core: alpha-norm, TV^beta, normalised feature loss (analytic values,
finite differences)."""

from __future__ import annotations

import pytest
import torch

from facerig.energy import (AlphaNorm, FeatureLoss, TotalVariation, TVBeta, WeightedSum, alpha_norm, feature_loss,
                            total_variation, tv_beta)


def test_alpha_norm_analytic():
    y = torch.zeros(2, 2, 3, 3)
    y[0, 0, 0] = torch.tensor([3.0, 4.0, 0.0])  # norm 5
    y[1] = 1.0  # every pixel norm sqrt(3)
    v = alpha_norm(y, alpha=6.0, scale=1.0, normalize=False)
    torch.testing.assert_close(v, torch.tensor([5.0**6, 6 * 3.0**3]))
    vn = alpha_norm(y, alpha=6.0, scale=5.0)
    torch.testing.assert_close(vn, torch.tensor([1.0 / 6, 3.0**3 / 5.0**6]))
    c = alpha_norm(y + 0.5, alpha=2.0, center=0.5, normalize=False)
    torch.testing.assert_close(c, torch.tensor([25.0, 18.0]))
    with pytest.raises(ValueError, match="alpha"):
        alpha_norm(y, alpha=0.0)


def test_tv_beta_analytic_and_tv_at_beta_1():
    # a ramp x(i, j) = i + 2 j: every interior difference (1, 2), boundary differences zero
    H, W = 4, 5
    i, j = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    y = (i + 2 * j)[None, :, :, None]
    # positions: (H-1)(W-1) with both (1+4=5), (H-1) last column with only d_i=1, (W-1) last row with only d_j=2
    expect2 = (H - 1) * (W - 1) * 5 + (H - 1) * 1 + (W - 1) * 4
    torch.testing.assert_close(tv_beta(y, beta=2.0, normalize=False), torch.tensor([float(expect2)], dtype=torch.float64))
    torch.testing.assert_close(tv_beta(y, beta=2.0, scale=2.0), torch.tensor([expect2 / 4 / (H * W)], dtype=torch.float64))
    expect1 = (H - 1) * (W - 1) * 5**0.5 + (H - 1) * 1 + (W - 1) * 2
    torch.testing.assert_close(tv_beta(y, beta=1.0, normalize=False), torch.tensor([expect1], dtype=torch.float64))
    z = torch.rand(2, 6, 7, 3, dtype=torch.float64)
    torch.testing.assert_close(tv_beta(z, beta=1.0, normalize=False), total_variation(z))


def test_feature_loss_zero_at_target_one_at_zero_features():
    torch.manual_seed(0)
    A = torch.randn(12, 5, dtype=torch.float64)
    phi = lambda y: {"a": y.reshape(y.shape[0], -1) @ A, "b": (y**2).reshape(y.shape[0], -1)}  # noqa: E731
    y0 = torch.rand(3, 2, 2, 3, dtype=torch.float64)
    target = phi(y0)
    torch.testing.assert_close(feature_loss(phi(y0), target), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(feature_loss(phi(torch.zeros_like(y0)), target), 2 * torch.ones(3, dtype=torch.float64))
    w = feature_loss(phi(torch.zeros_like(y0)), target, weights={"a": 0.25, "b": 0.0})
    torch.testing.assert_close(w, 0.25 * torch.ones(3, dtype=torch.float64))
    # batch-1 target broadcast; plain squared L2 without normalisation
    t1 = {k: v[:1] for k, v in target.items()}
    raw = feature_loss(phi(y0), t1, normalize=False)
    ref = sum((phi(y0)[k] - t1[k]).square().sum(dim=1) for k in target)
    torch.testing.assert_close(raw, ref)
    with pytest.raises(ValueError, match="target: layers"):
        feature_loss(phi(y0), {"a": target["a"]})


def test_feature_loss_jitter_is_a_seeded_roll():
    phi = lambda y: y  # noqa: E731
    y = torch.arange(2 * 5 * 6 * 1, dtype=torch.float64).reshape(2, 5, 6, 1)
    term = FeatureLoss(phi, jitter=2, seed=5)
    shifts = [term.shift(y) for _ in range(4)]
    term.reseed()
    again = [term.shift(y) for _ in range(4)]
    for a, b in zip(shifts, again):
        torch.testing.assert_close(a, b)
        # a roll: same values, and equal to y for some offset within +-2
        assert any(torch.equal(a, torch.roll(y, (di, dj), (1, 2))) for di in range(-2, 3) for dj in range(-2, 3))
    with pytest.raises(ValueError, match="jitter"):
        FeatureLoss(phi, jitter=-1)


@pytest.mark.parametrize("term", [AlphaNorm(alpha=6.0, scale=0.7, center=0.4), TVBeta(beta=2.0, scale=0.3),
                                  TVBeta(beta=1.5), TotalVariation(eps=0.1)])
def test_prior_gradients_match_finite_differences(term):
    torch.manual_seed(2)
    y = torch.rand(2, 4, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: term(None, t), (y,), eps=1e-6, atol=1e-6)


def test_inversion_energy_gradient_matches_finite_differences():
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).double()
    phi = lambda y: torch.relu(conv(y.permute(0, 3, 1, 2)))  # noqa: E731
    y0 = torch.rand(1, 5, 5, 3, dtype=torch.float64)
    E = WeightedSum(feat=(1.0, FeatureLoss(phi)), alpha=(0.5, AlphaNorm(6.0, 0.5, 0.5)), tv=(0.5, TVBeta(2.0, 0.1)))
    x = phi(y0).detach()
    y = torch.rand(1, 5, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: E(x, t), (y,), eps=1e-6, atol=1e-6)
