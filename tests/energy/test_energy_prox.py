"""Proximal operators and projections: closed forms, brute-force references, exactness."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from facerig.energy import (
    divergence,
    finite_diff,
    pointwise_norm,
    project_box,
    project_fixed,
    prox_l1,
    prox_tv,
    soft_threshold,
)


def rof_energy(u, x, weight, ndim, isotropic=True, channels="separate"):
    g = finite_diff(u, ndim)
    tv = pointwise_norm(g, isotropic, channels).sum(dim=(0, *range(2, g.dim())))
    return 0.5 * (u - x).square().sum(dim=tuple(range(1, x.dim()))) + weight * tv


def rof_reference(x, weight, ndim, isotropic, channels):
    """Solve the ROF dual with SLSQP (a different algorithm): max over |p| <= 1 of the dual."""
    shape = x.shape
    x64 = x.double()
    n = x64.numel()

    def unpack(z):
        return torch.from_numpy(z).reshape((ndim,) + tuple(shape))

    def obj(z):
        p = unpack(z).requires_grad_(True)
        v = x64 + weight * divergence(p, ndim)
        e = 0.5 * v.square().sum()
        (g,) = torch.autograd.grad(e, p)
        return float(e.detach()), g.numpy().ravel()

    def cons(z):
        g = pointwise_norm(unpack(z), isotropic, channels)
        return (1.0 - g.square()).numpy().ravel()

    res = minimize(obj, np.zeros(ndim * n), jac=True, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": cons}], options={"maxiter": 2000, "ftol": 1e-14})
    return (x64 + weight * divergence(unpack(res.x), ndim)).to(x.dtype)


def test_soft_threshold_closed_form():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.2, 2.0])
    assert torch.equal(soft_threshold(x, 1.0), torch.tensor([-2.0, 0.0, 0.0, 0.0, 1.0]))
    t = torch.tensor([0.0, 1.0, 1.0, 0.1, 3.0])
    assert torch.allclose(soft_threshold(x, t), torch.tensor([-3.0, 0.0, 0.0, 0.1, 0.0]))
    # prox_l1 solves min_z weight*|z| + (z-x)^2/(2 step): compare against a dense grid search
    grid = torch.linspace(-4, 4, 80001, dtype=torch.float64)
    for v in (-3.0, -0.3, 0.7, 2.5):
        obj = 0.7 * grid.abs() + (grid - v) ** 2 / (2 * 0.5)
        assert abs(float(prox_l1(torch.tensor([v], dtype=torch.float64), 0.5, 0.7)) - float(grid[obj.argmin()])) < 1e-4
    with pytest.raises(ValueError, match="thresh"):
        soft_threshold(x, -1.0)


def test_finite_diff_divergence_adjoint():
    for ndim, shape in ((1, (2, 7, 3)), (2, (2, 5, 6, 3))):
        x = torch.randn(shape, dtype=torch.float64)
        p = torch.randn((ndim,) + shape, dtype=torch.float64)
        lhs = (finite_diff(x, ndim) * p).sum()
        rhs = -(x * divergence(p, ndim)).sum()
        assert torch.allclose(lhs, rhs)


@pytest.mark.parametrize(
    "ndim,shape,isotropic,channels",
    [(1, (2, 9, 1), True, "separate"), (2, (1, 4, 5, 1), True, "separate"), (2, (1, 3, 4, 2), True, "coupled"),
     (2, (2, 4, 4, 2), False, "separate"), (2, (1, 3, 3, 2), False, "coupled")],
)
def test_prox_tv_matches_brute_force(ndim, shape, isotropic, channels):
    x = torch.rand(shape, dtype=torch.float64)
    weight = 0.15
    u = prox_tv(x, weight, ndim=ndim, isotropic=isotropic, channels=channels, max_iter=5000, tol=1e-10)
    ref = rof_reference(x, weight, ndim, isotropic, channels)
    e_u = rof_energy(u, x, weight, ndim, isotropic, channels)
    e_ref = rof_energy(ref, x, weight, ndim, isotropic, channels)
    assert torch.all(e_u <= e_ref + 1e-7)
    assert torch.allclose(u, ref, atol=2e-4)


def test_prox_tv_chambolle_and_fgp_agree_and_gap_stops():
    x = torch.rand(2, 16, 16, 1, dtype=torch.float64)
    a = prox_tv(x, 0.1, method="chambolle", max_iter=3000, tol=1e-6, return_result=True)
    b = prox_tv(x, 0.1, method="fgp", max_iter=3000, tol=1e-6, return_result=True)
    assert a.stop_reason == b.stop_reason == "gap" and b.n_iter < a.n_iter
    assert torch.allclose(a.x, b.x, atol=1e-3)
    # warm start from the dual: converges immediately
    c = prox_tv(x, 0.1, tol=1e-6, dual_init=b.extra["dual"], return_result=True)
    assert c.n_iter <= 5


def test_prox_tv_per_sample_weight_and_box():
    x = torch.rand(3, 8, 8, 1, dtype=torch.float64)
    w = torch.tensor([0.0, 0.05, 0.2], dtype=torch.float64)
    u = prox_tv(x, w, max_iter=3000, tol=1e-9)
    assert torch.allclose(u[0], x[0])
    for b in (1, 2):
        assert torch.allclose(u[b:b + 1], prox_tv(x[b:b + 1], float(w[b]), max_iter=3000, tol=1e-9), atol=1e-6)
    # the box fixes pixels exactly (lower == upper) and bounds the others
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, 0, :] = True
    lo = torch.where(mask, x, torch.full_like(x, 0.3))
    hi = torch.where(mask, x, torch.full_like(x, 0.7))
    v = prox_tv(x, 0.1, lower=lo, upper=hi, max_iter=500, tol=1e-7)
    assert torch.equal(v[mask], x[mask])
    assert float(v[~mask].min()) >= 0.3 and float(v[~mask].max()) <= 0.7


def test_projections_exact():
    x = torch.randn(2, 5, 5, 3)
    mask = torch.rand(2, 5, 5, 1) < 0.5
    values = torch.rand(2, 5, 5, 3)
    y = project_fixed(x, mask, values)
    m = mask.expand_as(x)
    assert torch.equal(y[m], values[m]) and torch.equal(y[~m], x[~m])
    z = project_box(x, -0.5, torch.full((1, 5, 5, 3), 0.25))
    assert torch.equal(z, x.clamp(-0.5, 0.25))


def test_bad_input_names_argument():
    x = torch.rand(1, 4, 4, 1)
    with pytest.raises(ValueError, match="weight"):
        prox_tv(x, -0.1)
    with pytest.raises(ValueError, match="method"):
        prox_tv(x, 0.1, method="bogus")
    with pytest.raises(ValueError, match="x"):
        prox_tv(torch.full((1, 4, 4, 1), float("nan")), 0.1)
    with pytest.raises(ValueError, match="x"):
        prox_tv(torch.rand(4, 4), 0.1)
    with pytest.raises(ValueError, match="mask"):
        project_fixed(x, torch.ones(3, 3, dtype=torch.bool), 0.0)
    with pytest.raises(ValueError, match="lower"):
        project_box(x, 1.0, 0.0)


def test_soft_threshold_scalar_tensor_threshold_gets_gradient():
    x = torch.tensor([-2.0, -0.3, 0.1, 1.5, 3.0])
    t = torch.tensor(0.5, requires_grad=True)
    y = soft_threshold(x, t)
    torch.testing.assert_close(y, torch.tensor([-1.5, 0.0, 0.0, 1.0, 2.5]))
    y.sum().backward()
    # d/dt sum_i sign(x_i) (|x_i| - t)_+ = -sum of sign(x_i) over |x_i| > t = -(-1 + 1 + 1)
    assert t.grad.item() == pytest.approx(-1.0)
