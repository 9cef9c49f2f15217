"""Batched Lasso on the energy core: ISTA / FISTA against scikit-learn, duality gap, warm starts."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from facerig.energy.prox import soft_threshold
from facerig.sparse.lasso import (
    alpha_max,
    lasso_duality_gap,
    lasso_objective,
    lasso_solve,
    sparse_encode,
)

sklearn = pytest.importorskip("sklearn")


def _problem(n_atoms=30, n_features=20, n_samples=30, seed=0):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((n_atoms, n_features))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = rng.standard_normal((n_samples, n_features))
    return X, D


def _obj(X, Y, D, alpha):
    return lasso_objective(torch.as_tensor(X), torch.as_tensor(Y), torch.as_tensor(D), alpha).numpy()


@pytest.mark.parametrize("algorithm", ["fista", "ista"])
@pytest.mark.parametrize("alpha", [0.1, 0.4])
def test_reaches_sklearn_sparse_encode_solution(algorithm, alpha):
    from sklearn.decomposition import sparse_encode as sk_encode

    X, D = _problem(n_atoms=30)
    Y = sparse_encode(X, D, alpha, algorithm=algorithm, tol=1e-9, max_iter=50000)
    Ysk = sk_encode(X, D, alpha=alpha, algorithm="lasso_lars")
    p, psk = _obj(X, Y, D, alpha), _obj(X, Ysk, D, alpha)
    # same problem and same optimum: objective within 1e-6 relative, and never worse
    assert np.all(np.abs(p - psk) <= 1e-6 * psk)
    np.testing.assert_allclose(Y, Ysk, atol=1e-3)


def test_alpha_scaling_matches_linear_model_lasso():
    """sklearn.linear_model.Lasso(alpha=a) on design Dᵀ solves our problem with α = a·n_features."""
    from sklearn.linear_model import Lasso

    X, D = _problem(n_samples=3, seed=1)
    a = 0.01
    Y = sparse_encode(X, D, a * D.shape[1], tol=1e-12, max_iter=100000)
    for i in range(X.shape[0]):
        ref = Lasso(alpha=a, fit_intercept=False, tol=1e-12, max_iter=100000).fit(D.T, X[i]).coef_
        np.testing.assert_allclose(Y[i], ref, atol=1e-5)


def test_duality_gap_bounds_objective_error():
    X, D = _problem(seed=2)
    Xt, Dt = torch.as_tensor(X), torch.as_tensor(D)
    alpha = 0.2
    star = lasso_solve(Xt, Dt, alpha, tol=1e-12, max_iter=100000)
    assert star.converged and bool((star.gap <= 1e-12 * star.objective + 1e-15).all())
    rough = lasso_solve(Xt, Dt, alpha, tol=0, max_iter=5)
    gap, primal, dual = lasso_duality_gap(Xt, rough.codes, Dt, alpha)
    # weak duality: dual <= P* <= primal, gap >= true suboptimality
    assert bool((dual <= star.objective + 1e-12).all())
    assert bool((primal - star.objective <= gap + 1e-12).all())
    assert bool((gap > 0).all())


def test_alpha_max_gives_zero_code():
    X, D = _problem(seed=3)
    amax = alpha_max(X, D)
    Y = sparse_encode(X[:1], D, float(amax[0]) * 1.0001)
    assert np.all(Y == 0)
    Y = sparse_encode(X[:1], D, float(amax[0]) * 0.9)
    assert np.any(Y != 0)


def test_warm_start_and_objective_stop():
    X, D = _problem(seed=4)
    Xt, Dt = torch.as_tensor(X), torch.as_tensor(D)
    cold = lasso_solve(Xt, Dt, 0.1, tol=1e-8, max_iter=20000)
    # warm start from the solution of a nearby alpha needs fewer iterations
    near = lasso_solve(Xt, Dt, 0.11, tol=1e-8, max_iter=20000)
    warm = lasso_solve(Xt, Dt, 0.1, tol=1e-8, init=near.codes, max_iter=20000)
    assert warm.converged and warm.n_iter < cold.n_iter
    obj = lasso_solve(Xt, Dt, 0.1, tol=1e-9, stop="objective", max_iter=20000)
    assert obj.converged and obj.stop_reason == "objective"
    assert bool(((obj.objective - cold.objective) / cold.objective).abs().max() < 1e-5)


def test_shrinking_gives_same_answer():
    X, D = _problem(n_samples=64, seed=5)
    Xt, Dt = torch.as_tensor(X), torch.as_tensor(D)
    a = lasso_solve(Xt, Dt, 0.3, tol=1e-8, shrink=0.5, max_iter=20000)
    b = lasso_solve(Xt, Dt, 0.3, tol=1e-8, shrink=0.0, max_iter=20000)
    assert a.converged and b.converged
    assert bool(((a.objective - b.objective).abs() <= 2e-8 * b.objective).all())


def test_soft_threshold_is_l1_prox():
    """The core's prox against brute force: argmin_y ½(y − v)² + t|y| on a fine grid."""
    v = torch.linspace(-3, 3, 61, dtype=torch.float64)
    t = 0.7
    grid = torch.linspace(-4, 4, 80001, dtype=torch.float64)
    cost = 0.5 * (grid[None, :] - v[:, None]) ** 2 + t * grid.abs()[None, :]
    brute = grid[cost.argmin(dim=1)]
    torch.testing.assert_close(soft_threshold(v, t), brute, atol=2e-4, rtol=0)


def test_float32_and_torch_in_torch_out():
    X, D = _problem(seed=6)
    Xt, Dt = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(D, dtype=torch.float32)
    Y = sparse_encode(Xt, Dt, 0.2, tol=1e-5)
    assert isinstance(Y, torch.Tensor) and Y.dtype == torch.float32 and Y.shape == (30, 30)
    Y64 = sparse_encode(X, D, 0.2, tol=1e-10)
    assert isinstance(Y64, np.ndarray) and Y64.dtype == np.float64
    np.testing.assert_allclose(Y.numpy(), Y64, atol=2e-3)


def test_solve_on_support_matches_dense_solves_and_flags_singular_systems():
    from facerig.sparse.support import _solve_on_support

    rng = np.random.default_rng(7)
    D = rng.standard_normal((12, 10))
    D[11] = D[3]                                   # a duplicated atom: singular when both are in S
    X = rng.standard_normal((40, 10))
    G, Z = D @ D.T, X @ D.T
    S = rng.random((40, 12)) < 0.3
    S[:, 11] &= ~S[:, 3]
    S[0] = False                                   # empty support -> zero code
    S[1, :] = False
    S[1, [3, 11]] = True                           # singular
    signs = np.where(rng.random((40, 12)) < 0.5, -1.0, 1.0) * S
    alpha = 0.3
    out = _solve_on_support(torch.as_tensor(S), torch.as_tensor(signs), torch.as_tensor(Z), torch.as_tensor(G),
                            alpha).numpy()
    assert np.all(out[0] == 0) and np.all(np.isnan(out[1, [3, 11]]))
    for i in range(2, 40):
        idx = np.flatnonzero(S[i])
        ref = np.zeros(12)
        if idx.size:
            ref[idx] = np.linalg.solve(G[np.ix_(idx, idx)], Z[i, idx] - alpha * signs[i, idx])
        np.testing.assert_allclose(out[i], ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("iter_dtype", ["auto", None])
def test_polished_fista_is_certified_and_matches_pure_fista(iter_dtype):
    X, D = _problem(n_atoms=40, n_features=20, n_samples=64, seed=8)
    Xt, Dt = torch.as_tensor(X), torch.as_tensor(D)
    tol = 1e-8
    fast = lasso_solve(Xt, Dt, 0.2, tol=tol, max_iter=20000, polish=True, iter_dtype=iter_dtype)
    pure = lasso_solve(Xt, Dt, 0.2, tol=1e-11, max_iter=100000, polish=False)
    assert fast.converged and fast.stop_reason == "gap" and pure.converged
    gap, primal, _ = lasso_duality_gap(Xt, fast.codes, Dt, 0.2)
    assert bool((gap <= tol * primal).all())
    assert bool(((fast.objective - pure.objective) / pure.objective <= 1e-8).all())
    assert sum(c for _, c in fast.stats["certified"]) == 64
    assert fast.stats["solves"] >= 64


def test_polished_fista_falls_back_to_classic_loop_on_singular_supports():
    """Duplicated atoms make every support system with both copies singular: the uncertified samples
    finish in the classic full-precision loop, still stopped by the duality gap."""
    X, D = _problem(n_atoms=10, n_features=20, n_samples=16, seed=9)
    D = np.concatenate([D, D[:3]])                 # atoms 10..12 duplicate atoms 0..2
    Xt, Dt = torch.as_tensor(X), torch.as_tensor(D)
    res = lasso_solve(Xt, Dt, 0.1, tol=1e-7, max_iter=20000, polish=True, first_round=5)
    assert res.converged and res.stop_reason == "gap"
    assert bool((res.gap <= 1e-7 * res.objective).all())
    ref = sparse_encode(X, D[:10], 0.1, tol=1e-10, max_iter=20000)  # same optimum without duplicates
    assert np.allclose(res.objective.numpy(), _obj(X, ref, D[:10], 0.1), rtol=1e-6)
    with pytest.raises(ValueError, match="iter_dtype"):
        lasso_solve(Xt, Dt, 0.1, polish=True, iter_dtype="half")


@pytest.mark.parametrize("shape", [(30, 20), (50, 20)])          # Gram form and dictionary form
@pytest.mark.parametrize("restart", [None, "gradient"])
def test_fused_fista_layers_match_the_core_fista(shape, restart):
    """The fast path's fused iteration (facerig.energy.fista_l1_quadratic: one addmm + softshrink
    + lerp) is the core's general FISTA."""
    from facerig.energy.solvers import fista, fista_l1_quadratic
    from facerig.sparse.lasso import lasso_gradient
    from facerig.sparse.networks import lipschitz_constant

    X, D = _problem(n_atoms=shape[0], n_features=shape[1], n_samples=12, seed=3)
    Xt, Dt = torch.as_tensor(X), torch.as_tensor(D)
    step, alpha = 1.0 / lipschitz_constant(Dt), 0.2
    ref = fista(torch.zeros(12, shape[0], dtype=torch.float64), grad=lasso_gradient(Xt, Dt),
                prox=lambda v, t: soft_threshold(v, alpha * t), step=step, max_iter=25, restart=restart).x
    Y0 = torch.zeros(12, shape[0], dtype=torch.float64)
    if shape[0] <= 2 * shape[1]:
        G = Dt @ Dt.T
        out = fista_l1_quadratic(Y0, 25, alpha * step, step, M=torch.eye(shape[0], dtype=G.dtype) - step * G,
                                 C=step * (Xt @ Dt.T), restart=restart)
    else:
        out = fista_l1_quadratic(Y0, 25, alpha * step, step, D=Dt, Xs=step * Xt, restart=restart)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.equal(Y0, torch.zeros_like(Y0))                   # the start is not overwritten
    with pytest.raises(ValueError, match="either M and C"):
        fista_l1_quadratic(Y0, 5, 0.1, step, M=torch.eye(shape[0], dtype=torch.float64))


def test_fast_path_certificate_is_the_final_float64_gap():
    """The result's gap is the float64 duality gap of the returned codes (recomputed here), and a
    code that fails it (forced here with a KKT slack of 10 %) is polished again until certified."""
    import facerig.sparse.support as support

    X, D = _problem(n_atoms=40, n_features=20, n_samples=64, seed=11)
    Xt, Dt = torch.as_tensor(X), torch.as_tensor(D)
    old = support._KKT_SLACK
    try:
        support._KKT_SLACK = 0.1                                      # a sloppy pre-check
        res = lasso_solve(Xt, Dt, 0.2, tol=1e-9, max_iter=20000, polish=True)
    finally:
        support._KKT_SLACK = old
    gap, primal, _ = lasso_duality_gap(Xt, res.codes, Dt, 0.2)
    assert res.converged and bool((gap <= 1e-9 * primal).all())
    assert torch.allclose(res.gap, gap, atol=1e-12) and torch.allclose(res.objective, primal, rtol=1e-13)
    assert res.stats["rejected"] > 0


def test_parallel_support_solves_match_the_serial_ones(monkeypatch):
    """With several torch threads the batched support solves run as row chunks in a thread pool;
    the result is the serial one, bit for bit."""
    import facerig.sparse.support as support

    rng = np.random.default_rng(5)
    D = torch.as_tensor(rng.standard_normal((30, 20)))
    X = torch.as_tensor(rng.standard_normal((300, 20)))
    S = torch.as_tensor(rng.random((300, 30)) < 0.25)
    signs = torch.where(torch.as_tensor(rng.random((300, 30))) < 0.5, -1.0, 1.0).double() * S
    G, Z = D @ D.T, X @ D.T
    serial = support._solve_on_support(S, signs, Z, G, 0.3)
    old = torch.get_num_threads()
    monkeypatch.setattr(support, "_PARALLEL_MIN_ROWS", 1)
    try:
        torch.set_num_threads(2)
        parallel = support._solve_on_support(S, signs, Z, G, 0.3)
    finally:
        torch.set_num_threads(old)
    assert (os.getpid(), 2) in support._POOL                          # the pool did run
    assert torch.equal(torch.isnan(serial), torch.isnan(parallel))
    assert torch.equal(torch.nan_to_num(serial), torch.nan_to_num(parallel))
    # and both are the exact solutions of G_SS y_S = z_S - alpha s_S (zeros off S), row by row
    for r in range(0, 300, 37):
        if torch.isnan(serial[r]).any():                            # singular G_SS: flagged, no solution
            continue
        s = S[r].nonzero()[:, 0]
        ref = torch.zeros(30, dtype=torch.float64)
        ref[s] = torch.linalg.solve(G[s][:, s], Z[r, s] - 0.3 * signs[r, s])
        assert torch.allclose(serial[r], ref, atol=1e-9), r


@pytest.mark.parametrize("shape", [(40, 20), (60, 20)])          # Gram form and dictionary form
def test_bfloat16_first_round_is_still_certified(shape, monkeypatch):
    """The fast path's first FISTA round in bfloat16 (all-bfloat16 Gram form; bfloat16 products with
    a float32 iterate in the dictionary form), forced here whatever the CPU: every code still passes
    the float64 duality-gap certificate and reaches pure FISTA's objective."""
    import facerig.sparse.lasso as lasso

    monkeypatch.setattr(lasso, "_fast_bfloat16", lambda device: torch.bfloat16)
    X, D = _problem(n_atoms=shape[0], n_features=shape[1], n_samples=64, seed=12)
    Xt, Dt = torch.as_tensor(X), torch.as_tensor(D)
    fast = lasso_solve(Xt, Dt, 0.2, tol=1e-8, max_iter=20000, polish=True)
    pure = lasso_solve(Xt, Dt, 0.2, tol=1e-11, max_iter=100000, polish=False)
    gap, primal, _ = lasso_duality_gap(Xt, fast.codes, Dt, 0.2)
    assert fast.converged and bool((gap <= 1e-8 * primal).all())
    assert bool(((fast.objective - pure.objective) / pure.objective <= 1e-8).all())
    assert sum(c for _, c in fast.stats["certified"]) == 64


def test_mixed_precision_dictionary_fista_is_the_core_iteration():
    """The core's dictionary-form FISTA with its products in another precision (``low``) follows the
    plain iteration (float64 products on a float32 iterate: to float32 rounding); with bfloat16 products its iterate after 100 iterations is as close to the Lasso optimum as the
    float32 iteration's (the products' errors are relative to y·D and the residual, not to y)."""
    from facerig.energy.solvers import fista_l1_quadratic
    from facerig.sparse.networks import lipschitz_constant

    X, D = _problem(n_atoms=50, n_features=20, n_samples=16, seed=13)
    Xt, Dt = torch.as_tensor(X), torch.as_tensor(D)
    step = 1.0 / lipschitz_constant(Dt)
    Y0 = torch.zeros(16, 50, dtype=torch.float64)
    ref = fista_l1_quadratic(Y0, 30, 0.2 * step, step, D=Dt, Xs=step * Xt)
    mixed = fista_l1_quadratic(Y0.float(), 30, 0.2 * step, step, D=Dt.float(), Xs=(step * Xt).float(), low=torch.float64)
    assert mixed.dtype == torch.float32 and torch.allclose(mixed.double(), ref, atol=1e-5, rtol=0)
    opt = lasso_solve(Xt, Dt, 0.2, tol=1e-12, max_iter=100000, polish=True).codes
    low = fista_l1_quadratic(Y0.float(), 100, 0.2 * step, step, D=Dt.float(), Xs=(step * Xt).float(), low=torch.bfloat16)
    f32 = fista_l1_quadratic(Y0.float(), 100, 0.2 * step, step, D=Dt.float(), Xs=(step * Xt).float())
    assert low.dtype == torch.float32
    err_low, err_f32 = (float((Y.double() - opt).norm() / opt.norm()) for Y in (low, f32))
    assert err_f32 < 0.1 and err_low < 1.25 * err_f32


def test_sparse_code_products_match_dense_ones():
    """The CSR form of codes used for the KKT checks and the certificate: same products as dense."""
    from facerig.sparse.support import _csr_rows, _sparse_codes, _support_index

    rng = np.random.default_rng(14)
    Y = torch.as_tensor(rng.standard_normal((40, 30)) * (rng.random((40, 30)) < 0.2))
    Y[3] = 0.0                                                   # an empty row
    M = torch.as_tensor(rng.standard_normal((30, 7)))
    torch.testing.assert_close(_sparse_codes(Y) @ M, Y @ M, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_sparse_codes(torch.zeros(5, 30, dtype=torch.float64)) @ M,
                               torch.zeros(5, 7, dtype=torch.float64))
    idx, k = _support_index(Y != 0)
    S = _csr_rows(idx, idx < 30, k, Y.gather(1, idx.clamp_max(29)), 30, torch.float32)
    torch.testing.assert_close(S @ M.float(), (Y @ M).float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_row_chunks_give_certified_codes(threads, monkeypatch):
    """On the CPU a large batch is solved in row chunks (one after the other with one torch thread,
    in parallel threads with two): every code is certified, the optimum is the one-batch run's, and
    the counters add up."""
    import facerig.sparse.support as support

    X, D = _problem(n_atoms=40, n_features=20, n_samples=1100, seed=15)
    Xt, Dt = torch.as_tensor(X), torch.as_tensor(D)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        whole = lasso_solve(Xt, Dt, 0.2, tol=1e-9, max_iter=20000, polish=True)
        monkeypatch.setattr(support, "_CHUNK_ENTRIES", 40 * 550)          # 2 chunks of 550 rows
        monkeypatch.setattr(support, "_PARALLEL_MIN_ROWS", 64)
        calls = []
        inner = support._lasso_fista_polish
        monkeypatch.setattr(support, "_lasso_fista_polish", lambda X, *a, **k: calls.append(len(X)) or inner(X, *a, **k))
        torch.set_num_threads(threads)
        chunked = lasso_solve(Xt, Dt, 0.2, tol=1e-9, max_iter=20000, polish=True)
    finally:
        torch.set_num_threads(old)
    assert sorted(calls) == [550, 550]
    if threads == 2:
        assert (os.getpid(), 2) in support._POOL
    gap, primal, _ = lasso_duality_gap(Xt, chunked.codes, Dt, 0.2)
    assert chunked.converged and bool((gap <= 1e-9 * primal).all())
    assert torch.allclose(chunked.objective, whole.objective, rtol=2e-9, atol=0)
    n_fast = sum(c for _, c in chunked.stats["certified"])          # the rest finish in the classic loop
    assert n_fast >= 1050
    assert chunked.stats["solves"] >= n_fast
