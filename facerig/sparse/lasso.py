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

FISTA with certified support polishing (``lasso_solve(..., polish=True)``, the default of
:func:`sparse_encode` and :class:`~facerig.sparse.SparseCoder`): FISTA runs in rounds on the
samples not yet solved (the core's iteration written as one fused ISTA layer per step,
:func:`facerig.energy.fista_l1_quadratic`; the first round in bfloat16 on CPUs with native
bfloat16 matrix products, later rounds in float32); after each round the optimality system
``G_SS y_S = (x·Dᵀ)_S − α·sign_S`` is solved exactly (float64) on each sample's detected support
``S`` (batched Cholesky on padded supports, samples grouped by support size), with a few support
corrections (atoms whose sign flips leave ``S``; the atoms with the largest ``|correlation| > α``
join it) decided by a float32 KKT pre-check. Every answer is then certified once: its duality
gap, computed in float64 on the final codes, must be ``<= tol·P`` (samples that fail are
re-polished in float64 or finish in the classic FISTA loop). The answer is the one plain FISTA
would reach, certified the same way; FISTA only has to find supports. On a CPU with several
torch threads a large batch is solved as row chunks in parallel threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from facerig.energy.prox import soft_threshold
from facerig.energy.solvers import fista, ista
from facerig.sparse._validation import check_alpha, check_dictionary, check_positive_int, check_samples, to_output
from facerig.sparse.networks import lipschitz_constant
from facerig.sparse.support import _fast_bfloat16, _lasso_fista_polish_chunks, _polish_on_support

__all__ = [
    "LassoResult",
    "lasso_gradient",
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
    stop_reason : text; history : mean objective per iteration when recorded; stats : fast-path
    counters (``"certified"``: (iterations, samples whose polished code passed the KKT pre-check)
    per round, ``"solves"``: support solves, ``"rejected"``: codes that passed the pre-check but
    not the float64 certificate and were polished again).
    """

    codes: torch.Tensor
    objective: torch.Tensor
    gap: torch.Tensor
    n_iter: int
    converged: bool
    stop_reason: str
    history: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def lasso_gradient(X: torch.Tensor, D: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Analytic gradient of the smooth part ``½‖x − y·D‖²``: ``y·G − x·Dᵀ`` with the Gram ``G = D·Dᵀ``.

    ``X`` (n_samples, n_features) signals, ``D`` (n_atoms, n_features) dictionary; returns the map
    ``Y (n_samples, n_atoms) -> gradient (n_samples, n_atoms)`` (for the core's ISTA / FISTA ``grad=``).

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


def lasso_solve(X: torch.Tensor, dictionary: torch.Tensor, alpha: float, algorithm: str = "fista",
                max_iter: int = 1000, tol: float = 1e-6, stop: str = "gap", init: torch.Tensor | None = None,
                check_every: int = 10, shrink: float = 0.25, polish: bool = False, polish_every: int = 50,
                lipschitz: float | None = None, record_history: bool = False,
                iter_dtype: torch.dtype | str | None = "auto", first_round: int | None = None, corrections: int = 6,
                restart: str | None = None) -> LassoResult:
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
        (``stop="gap"`` only.) FISTA with support polishing. With ``algorithm="fista"`` and
        ``tol > 0`` this is the fast path used by :func:`sparse_encode` and
        :class:`~facerig.sparse.SparseCoder`: FISTA runs in rounds (``first_round`` iterations,
        then 20, 40, 80, ...; in ``iter_dtype``) on the samples not yet done; after each round,
        every sample's code is replaced by the exact solution of the Lasso's optimality system
        on the support and signs of its FISTA iterate (a batched Cholesky solve, a Newton step
        on the support), with up to ``corrections`` support corrections (drop atoms whose sign
        flipped, add the atoms whose correlation exceeds ``α`` the most, judged by a KKT check in
        ``iter_dtype``). On a CPU with several torch threads, batches of at least 4096 samples
        are split into that many row chunks solved in parallel threads. The final codes are
        certified once: a code is accepted only when its relative duality gap, computed in
        ``X``'s dtype (float64 for float32 input), is ``<= tol``, so the result is certified
        exactly as without polishing (codes that fail are polished again in full precision
        with the violating atoms added). Samples that are
        never certified within ``min(max_iter, 500)`` iterations finish with the classic loop
        below (float64-or-input-dtype FISTA, gap checks every ``check_every`` iterations,
        polishing every ``polish_every``). With ``algorithm="ista"`` only the classic loop
        polishes. Off by default so that ISTA / FISTA stay pure.
    polish_every : int
        Classic loop: FISTA iterations per round between two polishing steps.
    lipschitz : float or None
        ``‖D‖₂²`` if already known.
    record_history : bool
        Record the mean objective at every check in ``history`` (classic loop only).
    iter_dtype : torch dtype, ``"auto"`` or None
        Fast path: dtype of the FISTA iterations. ``"auto"`` = float32 (twice float64's
        matrix-product speed; the iterate only has to find the support, the polished code and
        its gap are computed in full precision), with the first round (every sample) in
        bfloat16 on CPUs with native bfloat16 matrix products (AVX512-BF16 / AMX; measured 2.6-3x
        faster products): the whole iteration for ``n_atoms <= 2·n_features``, else the two
        products only, with a float32 iterate (:func:`facerig.energy.fista_l1_quadratic`'s ``low``); None = ``X``'s
        dtype (no bfloat16).
    first_round : int or None
        Fast path: FISTA iterations before the first polishing (None: 40 when
        ``n_atoms <= n_features``, else 60 — overcomplete dictionaries find their supports later;
        measured best on natural patches: earlier polishing needs many more support corrections).
    corrections : int
        Fast path: support corrections per polishing (each adds at most the ``_MAX_ADD = 2``
        most violating atoms per sample; 6 measured best on natural patches).
    restart : None, ``"gradient"`` or ``"function"``
        Fast path: adaptive momentum restart of the core's FISTA (measured: no gain on natural
        patches, so off by default).

    Returns
    -------
    :class:`LassoResult`
    """
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
    fast_stats: dict = {}
    if polish and algorithm == "fista":
        fdt = None
        if iter_dtype == "auto":
            idt = torch.float32
            fdt = _fast_bfloat16(X.device)
        elif iter_dtype is None:
            idt = X.dtype
        elif isinstance(iter_dtype, torch.dtype) and iter_dtype.is_floating_point:
            idt = iter_dtype
        else:
            raise ValueError(f"iter_dtype must be 'auto', None or a floating torch dtype, got {iter_dtype!r}")
        if first_round is None:
            first_round = 40 if n_atoms <= D.shape[1] else 60
        first_round = check_positive_int(first_round, "first_round")
        if int(corrections) < 0:
            raise ValueError(f"corrections must be >= 0, got {corrections}")
        if restart not in (None, "gradient", "function"):
            raise ValueError(f"restart must be None, 'gradient' or 'function', got {restart!r}")
        if restart == "function":
            raise ValueError("restart='function' needs the energy every iteration; use 'gradient' or None")
        cdt = torch.float64 if X.dtype != torch.float64 else X.dtype  # certification dtype
        with torch.no_grad():
            Yc, active, iters_done, cert_gap, cert_primal = _lasso_fista_polish_chunks(
                X.to(cdt), D.to(cdt), alpha, Y.to(cdt), tol, min(max_iter, 500), step, idt, first_round,
                int(corrections), restart, fast_stats, first_dtype=fdt)
        Y = Yc.to(X.dtype)
        G = D @ D.T
        if active.numel() == 0:
            reason = "gap"
            if X.dtype == cdt:  # the certificate already is the final answer's float64 gap
                return LassoResult(codes=Y, objective=cert_primal, gap=cert_gap, n_iter=iters_done, converged=True,
                                   stop_reason=reason, history=history, stats=fast_stats)
    with torch.no_grad():
        while iters_done < max_iter and active.numel() and reason != "gap":
            Xa = X[active]
            grad = lasso_gradient(Xa, D)
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
                       converged=reason in ("gap", "objective"), stop_reason=reason, history=history,
                       stats=fast_stats)


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
