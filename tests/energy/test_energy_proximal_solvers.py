"""ISTA / FISTA / MFISTA: known optima (sklearn Lasso, a long run), monotonicity, options."""

import pytest
import torch
from sklearn.linear_model import Lasso

from facerig.energy import fista, ista, power_iteration, prox_l1, prox_tv
from facerig.energy.ops import finite_diff, pointwise_norm


def lasso_problem(B=3, n=40, m=25, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(B, n, m, generator=g, dtype=torch.float64)
    b = torch.randn(B, n, generator=g, dtype=torch.float64)
    return A, b


def lasso_parts(A, b, lam):
    def f(x):
        return 0.5 * (torch.einsum("bnm,bm->bn", A, x) - b).square().sum(-1)

    def grad(x):
        return torch.einsum("bnm,bn->bm", A, torch.einsum("bnm,bm->bn", A, x) - b)

    return f, grad, (lambda v, t: prox_l1(v, t, lam)), (lambda x: lam * x.abs().sum(-1))


def test_fista_reaches_sklearn_lasso_optimum():
    A, b = lasso_problem()
    lam = 2.0
    f, grad, prox, g = lasso_parts(A, b, lam)
    L = power_iteration(lambda v: torch.einsum("bnm,bn->bm", A, torch.einsum("bnm,bm->bn", A, v)),
                        (3, 25), dtype=torch.float64, n_iter=500, tol=1e-12)
    assert torch.allclose(L, torch.linalg.matrix_norm(A, ord=2) ** 2, rtol=1e-6)
    res = fista(torch.zeros(3, 25, dtype=torch.float64), f=f, grad=grad, prox=prox, g=g,
                step=1.0 / L, max_iter=5000, tol=1e-15)
    assert res.converged and res.stop_reason == "tol"
    for i in range(3):
        # sklearn minimises 1/(2n) ||Ax - b||^2 + alpha ||x||_1  ->  alpha = lam / n
        ref = Lasso(alpha=lam / 40, fit_intercept=False, tol=1e-12, max_iter=100000).fit(A[i].numpy(), b[i].numpy())
        assert torch.allclose(res.x[i], torch.from_numpy(ref.coef_), atol=1e-5)


def test_monotone_fista_never_increases_and_autograd_matches_analytic():
    A, b = lasso_problem(seed=1)
    lam = 1.0
    f, grad, prox, g = lasso_parts(A, b, lam)
    x0 = torch.zeros(3, 25, dtype=torch.float64)
    # a deliberately large step (backtracking fixes it) makes plain FISTA oscillate
    mono = fista(x0, f=f, prox=prox, g=g, step=10.0, backtracking=True, monotone=True, max_iter=300)
    hist = torch.tensor(mono.history)
    assert torch.all(hist[1:] <= hist[:-1] + 1e-12)
    analytic = fista(x0, f=f, grad=grad, prox=prox, g=g, step=mono.extra["step"].reshape(-1), max_iter=300)
    autograd = fista(x0, f=f, prox=prox, g=g, step=mono.extra["step"].reshape(-1), max_iter=300)
    assert torch.allclose(analytic.x, autograd.x, atol=1e-10)
    long = fista(x0, f=f, grad=grad, prox=prox, g=g, step=mono.extra["step"].reshape(-1), max_iter=2000, tol=1e-15)
    assert torch.allclose(mono.x, long.x, atol=1e-5)
    # ISTA with step 1/L is monotone and slower than FISTA
    slow = ista(x0, f=f, grad=grad, prox=prox, g=g, step=mono.extra["step"].reshape(-1), max_iter=300)
    assert torch.all(torch.tensor(slow.history).diff() <= 1e-12)
    assert slow.history[-1] >= analytic.history[-1] - 1e-9


def test_fista_tv_inpainting_reaches_long_run_optimum():
    # min_u 1/2 ||M (u - y)||^2 + w TV(u): smooth part with L = 1, prox = ROF solve
    gen = torch.Generator().manual_seed(3)
    y = torch.rand(2, 8, 8, 1, generator=gen, dtype=torch.float64)
    M = (torch.rand(2, 8, 8, 1, generator=gen) < 0.6).double()
    w = 0.1

    def f(u):
        return 0.5 * (M * (u - y)).square().sum(dim=(1, 2, 3))

    def g(u):
        return w * pointwise_norm(finite_diff(u)).sum(dim=(0, 2, 3, 4))

    state = {}

    def prox(v, t):  # ROF solve, warm-started from the previous dual field
        r = prox_tv(v, t * w, max_iter=500, tol=1e-9, check_every=3, dual_init=state.get("dual"), return_result=True)
        state["dual"] = r.extra["dual"]
        return r.x

    mono = fista(y.clone(), f=f, prox=prox, g=g, step=1.0, monotone=True, max_iter=50)
    hist = torch.tensor(mono.history)
    assert torch.all(hist[1:] <= hist[:-1] + 1e-12)
    state.clear()
    long = fista(y.clone(), f=f, prox=prox, g=g, step=1.0, max_iter=200, tol=1e-13)
    assert abs(mono.history[-1] - long.history[-1]) <= 1e-6 * long.history[-1]


def test_callback_stops_and_per_sample_step():
    A, b = lasso_problem(seed=2)
    f, grad, prox, g = lasso_parts(A, b, 0.5)
    seen = []

    def cb(k, x, e):
        seen.append((k, e))
        return k == 7

    res = fista(torch.zeros(3, 25, dtype=torch.float64), grad=grad, prox=prox,
                step=torch.tensor([1e-3, 2e-3, 3e-3], dtype=torch.float64), callback=cb, max_iter=50)
    assert res.stop_reason == "callback" and res.n_iter == 7 and res.converged
    assert all(e is None for _, e in seen)  # no f -> energy never computed
    with pytest.raises(ValueError, match="step"):
        fista(torch.zeros(3, 25), grad=grad, step=torch.ones(2))
    with pytest.raises(ValueError, match="f"):
        fista(torch.zeros(3, 25), grad=grad, step=1.0, tol=1e-3)
    with pytest.raises(ValueError, match="x0"):
        fista(torch.full((3, 25), float("inf")), grad=grad, step=1.0)


def test_adaptive_restart_reaches_optimum_faster_on_strongly_convex_problem():
    """O'Donoghue-Candes restart: same optimum, and linear convergence where plain FISTA ripples."""
    g = torch.Generator().manual_seed(3)
    A = torch.randn(2, 60, 30, generator=g, dtype=torch.float64)  # full column rank: strongly convex
    b = torch.randn(2, 60, generator=g, dtype=torch.float64)
    lam = 0.5
    f, grad, prox, gfun = lasso_parts(A, b, lam)
    L = float(torch.linalg.matrix_norm(A, ord=2).max() ** 2)
    x0 = torch.zeros(2, 30, dtype=torch.float64)
    star = fista(x0, f=f, grad=grad, prox=prox, g=gfun, step=1 / L, max_iter=20000, tol=1e-15, restart="gradient")
    e_star = f(star.x) + gfun(star.x)
    errs = {}
    for restart in (None, "gradient", "function"):
        r = fista(x0, f=f, grad=grad, prox=prox, g=gfun, step=1 / L, max_iter=150, restart=restart)
        errs[restart] = float(((f(r.x) + gfun(r.x) - e_star) / e_star).max())
    assert errs["gradient"] < 1e-10 and errs["function"] < 1e-10
    assert errs[None] > 100 * errs["gradient"]
    # ISTA ignores restart; monotone + restart still never increases the energy
    mono = fista(x0, f=f, grad=grad, prox=prox, g=gfun, step=1 / L, max_iter=100, monotone=True, restart="gradient")
    assert torch.all(torch.tensor(mono.history).diff() <= 1e-9)
    with pytest.raises(ValueError, match="restart"):
        fista(x0, grad=grad, prox=prox, step=1 / L, restart="sometimes")
    with pytest.raises(ValueError, match="restart='function' needs"):
        fista(x0, grad=grad, prox=prox, step=1 / L, restart="function")


def test_check_every_tests_tolerance_only_every_k_iterations():
    A, b = lasso_problem(seed=4)
    f, grad, prox, gfun = lasso_parts(A, b, 1.0)
    L = float(torch.linalg.matrix_norm(A, ord=2).max() ** 2)
    x0 = torch.zeros(3, 25, dtype=torch.float64)
    calls = {"n": 0}

    def counted_f(x):
        calls["n"] += 1
        return f(x)

    every = fista(x0, f=counted_f, grad=grad, prox=prox, g=gfun, step=1 / L, max_iter=5000, tol=1e-10,
                  history_every=10 ** 6)
    n_every = calls["n"]
    calls["n"] = 0
    sparse = fista(x0, f=counted_f, grad=grad, prox=prox, g=gfun, step=1 / L, max_iter=5000, tol=1e-10,
                   check_every=7, history_every=10 ** 6)
    assert every.stop_reason == sparse.stop_reason == "tol"
    assert sparse.n_iter % 7 == 0 and calls["n"] == sparse.n_iter // 7
    assert n_every == every.n_iter
    assert torch.allclose(every.x, sparse.x, atol=1e-4)
