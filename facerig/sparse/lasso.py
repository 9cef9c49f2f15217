"""Batched Lasso: objective, gradient, duality gap and the ISTA / FISTA solvers of the energy core.

The problem, for every sample (row) ``x`` of ``X`` ``(n_samples, n_features)`` and the dictionary
``D`` ``(n_atoms, n_features)`` (atoms as rows), is

    y*(x) = argmin_y  P(y) = ½‖x − y·D‖² + α‖y‖₁ ,    y ∈ R^{n_atoms} a row of the codes.

Relation to scikit-learn's scaling of ``alpha`` (checked in scikit-learn 1.9 source,
``sklearn/decomposition/_dict_learning.py``):

* ``sklearn.decomposition.sparse_encode(X, dictionary, alpha=a, algorithm="lasso_cd" | "lasso_lars")``
  solves exactly this problem with ``α = a``: it calls ``Lasso`` / ``LassoLars`` with
  ``alpha = a / n_features`` ("account for scaling"), and those minimise
  ``1/(2 n_features)‖x − Dᵀy‖² + (a/n_features)‖y‖₁`` = ``P(y) / n_features``.
* ``sklearn.linear_model.Lasso(alpha=a)`` fitted on a design with ``m`` rows minimises
  ``1/(2m)‖x − A y‖² + a‖y‖₁``; with ``A = Dᵀ`` (``m = n_features``) that is ``α = a·n_features``.
* ``MiniBatchDictionaryLearning`` / ``dict_learning`` use ``½‖X − U V‖²_F + α‖U‖₁,₁`` — the same α.

The duality gap (per sample) uses the dual ``max_ν ½‖x‖² − ½‖x − ν‖²`` s.t. ``‖D ν‖_∞ ≤ α`` and
the feasible point ``ν = r·min(1, α/‖r·Dᵀ‖_∞)`` built from the residual ``r = x − y·D``; it bounds
the objective's distance to the optimum: ``P(y) − P(y*) ≤ gap(y)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from facerig.sparse._validation import (
    check_alpha,
    check_dictionary,
    check_positive_int,
    check_samples,
    to_output,
)
from facerig.sparse.networks import lipschitz_constant

__all__ = [
    "LassoResult",
    "lasso_objective",
    "lasso_duality_gap",
    "alpha_max",
    "lasso_solve",
    "sparse_encode",
]


def lasso_objective(X: torch.Tensor, codes: torch.Tensor, dictionary: torch.Tensor,
                    alpha: float) -> torch.Tensor:
    """Per-sample Lasso objective ``½‖x − y·D‖² + α‖y‖₁``.

    ``X`` ``(B, n_features)``, ``codes`` ``(B, n_atoms)``, ``dictionary`` ``(n_atoms, n_features)``
    tensors of one dtype / device. Returns ``(B,)``. Differentiable (used as the unsupervised loss).
    """
    r = X - codes @ dictionary
    return 0.5 * r.pow(2).sum(dim=1) + alpha * codes.abs().sum(dim=1)


def lasso_duality_gap(X: torch.Tensor, codes: torch.Tensor, dictionary: torch.Tensor,
                      alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample duality gap of the Lasso at ``codes``.

    Returns ``(gap, primal, dual)``, each ``(B,)``; ``gap = primal − dual >= 0`` (up to rounding)
    and ``primal − min P <= gap``. With ``alpha = 0`` the dual point is 0 unless the residual is
    orthogonal to every atom, so the gap then only certifies exact least-squares solutions.
    """
    r = X - codes @ dictionary                       # (B, m)
    corr = (r @ dictionary.T).abs().amax(dim=1)      # ‖r Dᵀ‖_∞
    primal = 0.5 * r.pow(2).sum(dim=1) + alpha * codes.abs().sum(dim=1)
    scale = torch.where(corr > alpha, alpha / corr.clamp_min(torch.finfo(r.dtype).tiny),
                        torch.ones_like(corr))
    nu = r * scale[:, None]
    dual = 0.5 * X.pow(2).sum(dim=1) - 0.5 * (X - nu).pow(2).sum(dim=1)
    return primal - dual, primal, dual


def alpha_max(X: Any, dictionary: Any) -> Any:
    """Smallest ``α`` for which the Lasso code of each sample is 0: ``‖x·Dᵀ‖_∞`` ``(n_samples,)``."""
    D, d_np = check_dictionary(dictionary)
    T, x_np = check_samples(X, D.shape[1], dtype=D.dtype, device=D.device)
    return to_output((T @ D.T).abs().amax(dim=1), x_np)


@dataclass
class LassoResult:
    """Output of :func:`lasso_solve`.

    codes : (n_samples, n_atoms) tensor; objective, gap : (n_samples,) tensors at ``codes``;
    n_iter : iterations run; converged : the stopping criterion was met (not ``max_iter``);
    stop_reason : text; history : mean objective per iteration when recorded.
    """

    codes: torch.Tensor
    objective: torch.Tensor
    gap: torch.Tensor
    n_iter: int
    converged: bool
    stop_reason: str
    history: list = field(default_factory=list)


def _gradient_fn(X: torch.Tensor, D: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Analytic gradient of the smooth part ``½‖x − y·D‖²``: ``y·G − x·Dᵀ`` with the Gram ``G = D·Dᵀ``.

    Costs ``n_atoms²`` per sample instead of ``2·n_atoms·n_features`` when ``n_atoms <= 2·n_features``.
    """
    n_atoms, n_features = D.shape
    if n_atoms <= 2 * n_features:
        G = D @ D.T
        XDt = X @ D.T
        return lambda Y: torch.addmm(XDt, Y, G, beta=-1.0)
    return lambda Y: (Y @ D - X) @ D.T


def _check_init(init: Any, n_samples: int, n_atoms: int, D: torch.Tensor) -> torch.Tensor | None:
    if init is None:
        return None
    Y0, _ = check_samples(init, n_atoms, name="init", dtype=D.dtype, device=D.device)
    if Y0.shape[0] != n_samples:
        raise ValueError(f"init must be (n_samples={n_samples}, n_atoms={n_atoms}), got {tuple(Y0.shape)}")
    return Y0


def _polish_on_support(X: torch.Tensor, Y: torch.Tensor, D: torch.Tensor, alpha: float,
                       G: torch.Tensor | None = None, chunk: int = 2048) -> torch.Tensor:
    """Exact Lasso solution for the support and signs of ``Y`` (a batched Newton step).

    If ``y*`` has support ``S`` and signs ``s``, it solves ``G_SS y_S = (x Dᵀ)_S − α s_S`` with the
    Gram ``G = D Dᵀ``. The candidate is computed for every sample by a batched Cholesky solve on
    the (padded) support; samples whose system is singular keep ``Y``. The caller accepts a
    candidate only where it lowers the objective (it is then the optimum when the support and
    signs were right, which the duality gap certifies).

    ``X`` ``(B, m)``, ``Y`` ``(B, n)``, ``D`` ``(n, m)``; returns candidates ``(B, n)``.
    """
    if G is None:
        G = D @ D.T
    out = Y.clone()
    n = Y.shape[1]
    ar = torch.arange(n, device=Y.device)
    for s0 in range(0, Y.shape[0], chunk):
        Yc = Y[s0:s0 + chunk]
        nz = Yc != 0
        k = nz.sum(dim=1)
        kmax = int(k.max()) if k.numel() else 0
        if kmax == 0 or kmax > D.shape[1]:
            continue
        order = torch.argsort((~nz).to(torch.int8), dim=1, stable=True)[:, :kmax]  # support first
        valid = ar[:kmax][None, :] < k[:, None]                                     # (b, k)
        Gs = G[order[:, :, None], order[:, None, :]]
        vv = valid[:, :, None] & valid[:, None, :]
        eye = torch.eye(kmax, dtype=Y.dtype, device=Y.device).expand_as(Gs)
        Gs = torch.where(vv, Gs, eye)
        rhs = (X[s0:s0 + chunk] @ D.T).gather(1, order) - alpha * torch.sign(Yc).gather(1, order)
        rhs = rhs * valid
        L, info = torch.linalg.cholesky_ex(Gs)
        ok = info == 0
        if not bool(ok.any()):
            continue
        L = torch.where(ok[:, None, None], L, eye)
        sol = torch.cholesky_solve(rhs[:, :, None], L)[:, :, 0] * valid
        cand = torch.zeros_like(Yc).scatter_(1, order, sol)
        out[s0:s0 + chunk] = torch.where(ok[:, None], cand, Yc)
    return out


def lasso_solve(X: torch.Tensor, dictionary: torch.Tensor, alpha: float, algorithm: str = "fista",
                max_iter: int = 1000, tol: float = 1e-6, stop: str = "gap", init: torch.Tensor | None = None,
                check_every: int = 10, shrink: float = 0.25, polish: bool = False, polish_every: int = 50,
                lipschitz: float | None = None, record_history: bool = False) -> LassoResult:
    """Solve the batched Lasso with ISTA or FISTA from :mod:`facerig.energy.solvers`.

    Parameters
    ----------
    X : (n_samples, n_features) tensor
        Signals; the computation follows its dtype and device.
    dictionary : (n_atoms, n_features) tensor
        Atoms as rows (same dtype / device as ``X``).
    alpha : float >= 0
        Lasso weight (the objective is in the module docstring).
    algorithm : ``"fista"`` or ``"ista"``
        The core solver, with fixed step ``1/L``, ``L = ‖D‖₂²``, and the analytic gradient
        ``y·(D Dᵀ) − x·Dᵀ`` (no autograd).
    max_iter : int
        Iteration limit (counted per sample; restarts on a shrunken batch continue the count).
    tol : float >= 0
        With ``stop="gap"``: a sample is done when its relative duality gap
        ``gap / P(y) <= tol`` (which bounds its relative objective error by ``tol``).
        With ``stop="objective"``: stop when the relative change of every sample's objective
        over ``check_every`` iterations is ``<= tol``. ``tol = 0`` runs ``max_iter`` iterations.
    stop : ``"gap"`` or ``"objective"``
    init : (n_samples, n_atoms) tensor or None
        Warm start (e.g. codes of a previous ``alpha``); zeros by default.
    check_every : int
        Iterations between two stopping checks (a check costs about one iteration).
    shrink : float in [0, 1)
        Active-set shrinking: when at most this fraction of the samples still runs, the solver is
        restarted (warm, momentum reset) on those samples only, so converged samples cost nothing.
        0 disables it.
    polish : bool
        (``stop="gap"`` only.) Every ``polish_every`` iterations, replace each running sample's
        code by the exact solution on its current support and signs when that lowers the
        objective (:func:`_polish_on_support`); samples whose gap then meets ``tol`` stop. Once
        FISTA has found the support this finishes in one step what would take FISTA hundreds
        of iterations at a linear rate. Off by default so that ISTA / FISTA stay pure.
    polish_every : int
        FISTA iterations per round between two polishing steps (momentum restarts each round).
    lipschitz : float or None
        ``‖D‖₂²`` if already known.
    record_history : bool
        Record the mean objective at every check in ``history``.

    Returns
    -------
    :class:`LassoResult`
    """
    from facerig.energy.prox import soft_threshold
    from facerig.energy.solvers import fista, ista

    if algorithm not in ("fista", "ista"):
        raise ValueError(f"algorithm must be 'fista' or 'ista', got {algorithm!r}")
    if stop not in ("gap", "objective"):
        raise ValueError(f"stop must be 'gap' or 'objective', got {stop!r}")
    max_iter = check_positive_int(max_iter, "max_iter")
    check_every = check_positive_int(check_every, "check_every")
    polish_every = check_positive_int(polish_every, "polish_every")
    if not (tol >= 0):
        raise ValueError(f"tol must be >= 0, got {tol}")
    if not 0 <= shrink < 1:
        raise ValueError(f"shrink must be in [0, 1), got {shrink}")
    polish = bool(polish) and stop == "gap" and tol > 0
    solver = fista if algorithm == "fista" else ista
    D = dictionary
    n_samples = X.shape[0]
    n_atoms = D.shape[0]
    L = lipschitz_constant(D) if lipschitz is None else float(lipschitz)
    step = 1.0 / L
    Y = (torch.zeros(n_samples, n_atoms, dtype=X.dtype, device=X.device) if init is None
         else init.detach().to(dtype=X.dtype, device=X.device).clone())
    tiny = torch.finfo(X.dtype).tiny
    history: list[float] = []
    G = D @ D.T if polish else None

    def prox(v, t):
        return soft_threshold(v, t * alpha)

    def gap_done(Xa, Ya):
        gap, primal, _ = lasso_duality_gap(Xa, Ya, D, alpha)
        return gap <= tol * primal.clamp_min(tiny), primal

    active = torch.arange(n_samples, device=X.device)  # samples still running
    iters_done = 0
    reason = "max_iter" if tol > 0 else "max_iter (tol=0)"
    with torch.no_grad():
        while iters_done < max_iter:
            Xa = X[active]
            grad = _gradient_fn(Xa, D)
            state = {"prev": None, "done": None}

            def callback(k, y, _energy, Xa=Xa, state=state):
                if tol <= 0 or k % check_every:
                    return None
                if stop == "gap":
                    done, primal = gap_done(Xa, y)
                else:
                    primal = lasso_objective(Xa, y, D, alpha)
                    prev = state["prev"]
                    state["prev"] = primal
                    if prev is None:
                        return None
                    done = (prev - primal).abs() <= tol * torch.maximum(prev.abs(), primal.abs()).clamp_min(tiny)
                if record_history:
                    history.append(float(primal.mean()))
                state["done"] = done
                n_left = int((~done).sum())
                if n_left == 0:
                    return True
                # restart on the unconverged samples only, when few are left
                return shrink > 0 and n_left <= shrink * done.numel()

            limit = max_iter - iters_done
            if polish:
                limit = min(limit, polish_every)
            res = solver(Y[active], grad=grad, prox=prox, step=step, max_iter=limit,
                         callback=callback if tol > 0 else None, history_every=limit + 1)
            Ya = res.x
            iters_done += res.n_iter
            done = state["done"]
            if polish:
                cand = _polish_on_support(Xa, Ya, D, alpha, G)
                better = lasso_objective(Xa, cand, D, alpha) < lasso_objective(Xa, Ya, D, alpha)
                Ya = torch.where(better[:, None], cand, Ya)
                done, _ = gap_done(Xa, Ya)
            Y[active] = Ya
            if done is None:
                if res.stop_reason == "callback":  # only when tol > 0 and a check ran
                    continue
                if tol > 0 and stop == "gap":
                    done, _ = gap_done(Xa, Ya)
                else:
                    continue
            if bool(done.all()):
                reason = "gap" if stop == "gap" else "objective"
                break
            if res.stop_reason == "callback" or polish:
                active = active[~done]
    gap, primal, _ = lasso_duality_gap(X, Y, D, alpha)
    return LassoResult(codes=Y, objective=primal, gap=gap, n_iter=iters_done,
                       converged=reason in ("gap", "objective"), stop_reason=reason, history=history)


def sparse_encode(X: Any, dictionary: Any, alpha: float, algorithm: str = "fista", max_iter: int = 1000,
                  tol: float = 1e-6, stop: str = "gap", init: Any = None, polish: bool = True,
                  return_result: bool = False):
    """Lasso codes of ``X`` on ``dictionary``: NumPy in, NumPy out; tensors in, tensors out.

    The scikit-learn-like functional entry point (``sklearn.decomposition.sparse_encode`` with
    ``algorithm="lasso_cd"`` and the same ``alpha`` solves the same problem; see the module
    docstring). Arguments as in :func:`lasso_solve`; ``X`` is ``(n_samples, n_features)``,
    ``dictionary`` ``(n_atoms, n_features)``; returns codes ``(n_samples, n_atoms)`` in the
    dictionary's dtype / device (and the :class:`LassoResult` with ``return_result=True``).
    Support polishing is on by default here (``polish=True``, see :func:`lasso_solve`).
    """
    D, _ = check_dictionary(dictionary)
    T, x_np = check_samples(X, D.shape[1], dtype=D.dtype, device=D.device)
    alpha = check_alpha(alpha)
    Y0 = _check_init(init, T.shape[0], D.shape[0], D)
    res = lasso_solve(T, D, alpha, algorithm=algorithm, max_iter=max_iter, tol=tol, stop=stop, init=Y0,
                      polish=polish)
    codes = to_output(res.codes, x_np)
    return (codes, res) if return_result else codes
