"""Adam, L-BFGS, Gauss-Newton and Levenberg-Marquardt: known answers of small problems."""

import math

import pytest
import torch

from facerig.energy import (
    batched_jacobian,
    gauss_newton,
    levenberg_marquardt,
    minimize_adam,
    minimize_lbfgs,
    project_box,
)


def exp_problem(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 2, 30, dtype=torch.float64)
    truth = torch.stack([1 + torch.rand(B, generator=g, dtype=torch.float64),
                         -1.5 * torch.rand(B, generator=g, dtype=torch.float64),
                         0.5 * torch.rand(B, generator=g, dtype=torch.float64)], 1)

    def model(p):
        return p[:, :1] * torch.exp(p[:, 1:2] * t) + p[:, 2:3]

    return truth, model(truth), model


def axis_angle_to_matrix(w):
    theta = w.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    k = w / theta
    K = torch.zeros(w.shape[0], 3, 3, dtype=w.dtype)
    K = torch.stack([torch.stack([torch.zeros_like(k[:, 0]), -k[:, 2], k[:, 1]], -1),
                     torch.stack([k[:, 2], torch.zeros_like(k[:, 0]), -k[:, 0]], -1),
                     torch.stack([-k[:, 1], k[:, 0], torch.zeros_like(k[:, 0])], -1)], 1)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    return torch.eye(3, dtype=w.dtype) + s * K + (1 - c) * (K @ K)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_levenberg_marquardt_fits_exponentials(mode):
    truth, data, model = exp_problem()
    p0 = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64).repeat(4, 1)
    res = levenberg_marquardt(lambda p: model(p) - data, p0, jacobian=mode, max_iter=100)
    assert res.converged
    assert torch.allclose(res.x, truth, atol=1e-7)
    assert all(b <= a + 1e-15 for a, b in zip(res.history, res.history[1:]))  # cost never increases


def test_gauss_newton_recovers_rigid_transform_and_analytic_jacobian():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(1, 50, 3, generator=g, dtype=torch.float64)
    w_true = torch.tensor([[0.3, -0.2, 0.5], [-0.6, 0.1, 0.2]], dtype=torch.float64)
    t_true = torch.tensor([[1.0, 2.0, -1.0], [0.0, -0.5, 3.0]], dtype=torch.float64)
    Y = X @ axis_angle_to_matrix(w_true).transpose(1, 2) + t_true[:, None]

    def residual(p):
        R = axis_angle_to_matrix(p[:, :3])
        return (X @ R.transpose(1, 2) + p[:, None, 3:] - Y).reshape(p.shape[0], -1)

    p0 = torch.full((2, 6), 0.01, dtype=torch.float64)
    res = gauss_newton(residual, p0, max_iter=50)
    assert torch.allclose(res.x, torch.cat([w_true, t_true], 1), atol=1e-8)
    # a user-supplied Jacobian (here from the same autograd helper) gives the same answer
    res2 = levenberg_marquardt(residual, p0, jacobian=lambda p: batched_jacobian(residual, p)[1])
    assert torch.allclose(res2.x, res.x, atol=1e-8)
    # Jacobian against central finite differences
    r, J = batched_jacobian(residual, p0 + 0.1)
    h = 1e-6
    for j in range(6):
        e = torch.zeros(6, dtype=torch.float64)
        e[j] = h
        fd = (residual(p0 + 0.1 + e) - residual(p0 + 0.1 - e)) / (2 * h)
        assert torch.allclose(J[:, :, j], fd, atol=1e-6)


def test_adam_and_lbfgs_reach_closed_form_minimiser():
    # separable energy: per coordinate (y - t)^2 + 0.1 cosh(y); the minimiser is the root of the
    # increasing derivative 2 (y - t) + 0.1 sinh(y) (bisection), clipped to the box when constrained
    target = torch.tensor([[2.0, -3.0, 0.5], [0.2, 0.1, -0.4]], dtype=torch.float64)

    def energy(y):
        return (y - target).square().sum(-1) + 0.1 * torch.cosh(y).sum(-1)

    lo, hi = torch.full_like(target, -10.0), torch.full_like(target, 10.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        pos = 2 * (mid - target) + 0.1 * torch.sinh(mid) > 0
        hi, lo = torch.where(pos, mid, hi), torch.where(pos, lo, mid)
    root = 0.5 * (lo + hi)
    lbfgs = minimize_lbfgs(energy, torch.zeros(2, 3, dtype=torch.float64), max_iter=100)
    assert torch.allclose(lbfgs.x, root, atol=1e-7)
    box = lambda y: project_box(y, -1.0, 1.0)  # noqa: E731
    adam = minimize_adam(energy, torch.zeros(2, 3, dtype=torch.float64), lr=0.02, max_iter=1500, tol=0.0,
                         project=box)
    assert torch.allclose(adam.x, root.clamp(-1, 1), atol=1e-3) and adam.stop_reason == "max_iter"
    assert adam.history[-1] < adam.history[0]


def test_solver_input_errors():
    with pytest.raises(ValueError, match="p0"):
        levenberg_marquardt(lambda p: p, torch.zeros(3))
    with pytest.raises(ValueError, match="jacobian"):
        levenberg_marquardt(lambda p: p, torch.zeros(2, 3), jacobian="sideways")
    with pytest.raises(ValueError, match="lr"):
        minimize_adam(lambda y: y.sum(), torch.zeros(2, 2), lr=-1.0)
    with pytest.raises(ValueError, match="y0"):
        minimize_lbfgs(lambda y: y.sum(), torch.tensor([[math.nan]]))


def test_adam_reeval_false_reports_the_energy_of_each_step_start():
    target = torch.tensor([[1.0, -2.0, 3.0]])
    energy = lambda y: (y - target).square().sum(dim=1)  # noqa: E731
    calls = []

    def counted(y):
        calls.append(1)
        return energy(y)

    y0 = torch.zeros(1, 3)
    a = minimize_adam(counted, y0, lr=0.1, max_iter=5, tol=0.0)
    n_reeval = len(calls)
    calls.clear()
    b = minimize_adam(counted, y0, lr=0.1, max_iter=5, tol=0.0, reeval=False)
    assert n_reeval == 10 and len(calls) == 5  # one evaluation per step instead of two
    torch.testing.assert_close(a.x, b.x)
    assert b.history[0] == pytest.approx(float(energy(y0)))  # the start's energy
    assert b.history[1:] == pytest.approx(a.history[:-1])  # one iteration late
