"""Support-restricted solves and the polishing of FISTA's Lasso codes (the machinery behind
:func:`facerig.sparse.lasso.lasso_solve`'s ``polish``): duality gaps from cached products, exact
least-squares solves on each sample's support (bucketed by support size, run on a thread pool),
KKT-guided support growth and compressed-sparse-row code storage. Shapes: signals X (n, d),
dictionary D (k, d), codes Y (n, k), Gram G = D D^T (k, k).
"""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

from facerig.energy.solvers import fista_l1_quadratic


def _gap_from_products(Y: torch.Tensor, Z: torch.Tensor, YG: torch.Tensor, xx: torch.Tensor,
                       alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Duality gap of :func:`lasso_duality_gap` from ``Z = X·Dᵀ``, ``YG = Y·D·Dᵀ`` and ``xx = ‖x‖²``.

    ``‖r‖² = ‖x‖² − 2⟨y, z⟩ + ⟨y, yG⟩``, the correlations ``r·Dᵀ = z − yG`` and
    ``⟨x, r⟩ = ‖x‖² − ⟨y, z⟩`` give the primal, the scaled dual point and its objective without
    forming the residual. Returns ``(gap, primal, correlations)``, ``(B,)``, ``(B,)``, ``(B, n_atoms)``.
    """
    c = Z - YG
    yz = torch.linalg.vecdot(Y, Z)
    r2 = (xx - 2.0 * yz + torch.linalg.vecdot(Y, YG)).clamp_min(0.0)
    primal = 0.5 * r2 + alpha * Y.abs().sum(dim=1)
    cmax = c.abs().amax(dim=1)
    scale = torch.where(cmax > alpha, alpha / cmax.clamp_min(torch.finfo(Y.dtype).tiny), torch.ones_like(cmax))
    dual = scale * (xx - yz) - 0.5 * scale * scale * r2
    return primal - dual, primal, c


def _support_index(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's support as a padded index list: ``(idx (B, k_max), k (B,))``.

    Position ``j`` of a row with fewer than ``j + 1`` atoms holds the dummy atom ``n + j`` (distinct
    dummies, so that a padded Gram block is diagonal)."""
    B, n = S.shape
    k = S.sum(dim=1)
    kmax = int(k.max()) if B else 0
    rows, cols = S.nonzero(as_tuple=True)                # row-major: each row's entries contiguous
    start = torch.cumsum(k, 0) - k
    pos = torch.arange(rows.numel(), device=S.device) - start[rows]
    idx = (n + torch.arange(kmax, device=S.device)).expand(B, kmax).clone()
    idx[rows, pos] = cols
    return idx, k


_POOL: dict = {}
#: batches of fewer rows are solved in the calling thread
_PARALLEL_MIN_ROWS = 2048


def _run_row_jobs(fn: Callable[[int, int, int], None], jobs: list, device: torch.device,
                  min_rows: int | None = None) -> None:
    """Run ``fn(row_start, row_stop, size)`` for every job; on the CPU with several torch threads,
    large batches are split into row chunks run by that many Python threads. torch runs a batched
    Cholesky / triangular solve as a serial loop over the batch, and its kernels release the GIL,
    so the chunks run in parallel (the jobs write disjoint row ranges of one output)."""
    nt = torch.get_num_threads()
    total = sum(a - b for b, a, _ in jobs)
    if (device.type != "cpu" or nt < 2 or total < (_PARALLEL_MIN_ROWS if min_rows is None else min_rows)
            or _in_pool_thread()):
        for job in jobs:
            fn(*job)
        return
    chunk = -(-total // nt)
    split = []
    for b, a, kk in jobs:                               # chunks of about total/nt rows
        for s0 in range(b, a, chunk):
            split.append((s0, min(a, s0 + chunk), kk))
    pool = _pool(nt)
    for f in [pool.submit(fn, *job) for job in split]:
        f.result()


def _pool(nt: int):
    """The module's thread pool of ``nt`` workers (one per process: a forked child never reuses its
    parent's threads)."""
    key = (os.getpid(), nt)
    pool = _POOL.get(key)
    if pool is None:
        pool = _POOL[key] = ThreadPoolExecutor(nt, thread_name_prefix=_POOL_PREFIX)
    return pool


_POOL_PREFIX = "facerig-lasso"


def _in_pool_thread() -> bool:
    """Inside one of the pool's workers (whose jobs must not wait on the same pool)."""
    return threading.current_thread().name.startswith(_POOL_PREFIX)


def _padded_gram(G: torch.Tensor, kmax: int, cache: tuple | None = None) -> tuple:
    """``G`` ``(n, n)`` bordered by a diagonal block of ``p >= kmax`` dummy atoms (see
    :func:`_support_index`), flattened: ``(flat (N·N,), N = n + p)``. Returns ``cache`` when it is
    already large enough (``p`` is rounded up to a power of two, so a few sizes serve a whole solve)."""
    n = G.shape[0]
    if cache is not None and cache[1] >= n + kmax:
        return cache
    p = min(max(8, 1 << max(kmax - 1, 0).bit_length()), max(n, kmax))
    N = n + p
    Gx = G.new_zeros(N, N)
    Gx[:n, :n] = G
    Gx[n:, n:].fill_diagonal_(float(G.diagonal().abs().amax().clamp_min(torch.finfo(G.dtype).tiny)))
    return Gx.reshape(-1), N


def _solve_compact(idx: torch.Tensor, k: torch.Tensor, signs_c: torch.Tensor, Z: torch.Tensor | None, G: torch.Tensor,
                   alpha: float, bucket: int = 2, Gpad: tuple | None = None,
                   Zc: torch.Tensor | None = None) -> torch.Tensor:
    """Exact solves of ``G_SS y_S = z_S − α s_S`` on padded supports (see :func:`_support_index`).

    ``idx`` ``(B, k_max)``, ``k`` ``(B,)``, ``signs_c`` ``(B, k_max)`` the signs at ``idx`` (0 on
    the padding), ``Z`` ``(B, n)``, ``G`` ``(n, n)``. Rows are sorted by support size and solved in
    a few batched Cholesky factorisations (two triangular solves each) of sizes rounded up to a
    multiple of ``bucket``; the padding is a diagonal block (dummy atoms with zero right-hand
    side), so it does not change the solution. Returns ``(B, k_max)`` values at ``idx`` (0 on the
    padding); rows whose ``G_SS`` is singular (Cholesky failure, or a pivot below ``1e4·eps``
    times the largest) are NaN. ``Zc`` ``(B, k_max)``: ``Z`` at ``idx`` already gathered (then
    ``Z`` is not used); ``Gpad``: :func:`_padded_gram` of ``G`` built by the caller.
    """
    B, kmax = idx.shape
    n = G.shape[0]
    if Zc is None:
        Zc = Z.gather(1, idx.clamp_max(n - 1))
    out = Zc.new_zeros(B, kmax)
    if kmax == 0:
        return out
    Gf, N = _padded_gram(G, kmax, Gpad)                  # the atoms and the dummies
    valid = idx < n
    rhs = torch.where(valid, Zc - alpha * signs_c.to(Zc.dtype), 0.0)
    kb = ((k + bucket - 1) // bucket * bucket).clamp_max(kmax)
    kb_sorted, order = torch.sort(kb, stable=True)
    sizes, counts = torch.unique_consecutive(kb_sorted, return_counts=True)
    idx_s, rhs_s = idx[order], rhs[order]               # groups are contiguous row ranges (views)
    lin_s = idx_s * N
    info_s = torch.zeros(B, dtype=torch.int32, device=Zc.device)
    ratio_s = torch.ones(B, dtype=Zc.dtype, device=Zc.device)  # smallest / largest Cholesky pivot

    def solve_rows(b: int, a: int, kk: int) -> None:
        Gs = Gf.take(lin_s[b:a, :kk, None] + idx_s[b:a, None, :kk])
        L, info = torch.linalg.cholesky_ex(Gs)
        y = torch.linalg.solve_triangular(L, rhs_s[b:a, :kk, None], upper=False)
        out[b:a, :kk] = torch.linalg.solve_triangular(L.transpose(1, 2), y, upper=True)[:, :, 0]
        piv = L.diagonal(dim1=1, dim2=2)
        torch.div(piv.amin(dim=1), piv.amax(dim=1), out=ratio_s[b:a])
        info_s[b:a] = info

    jobs = []
    a = b = 0
    sizes_l, counts_l = sizes.tolist(), counts.tolist()
    first = sizes_l[0] if sizes_l else 0
    for j, (kk, c) in enumerate(zip(sizes_l, counts_l)):
        a += c                                          # rows [b, a) are solved at size kk
        if not kk:
            b = a
            first = sizes_l[j + 1] if j + 1 < len(sizes_l) else 0
            continue
        last = j + 1 == len(sizes_l)
        # a small group joins the next size (fewer, larger calls) unless that pads it by > 25 %
        if last or a - b >= _MIN_BUCKET_ROWS or sizes_l[j + 1] > max(first + bucket, first * 5 // 4):
            jobs.append((b, a, kk))
            b = a
            first = sizes_l[j + 1] if not last else 0
    _run_row_jobs(solve_rows, jobs, Zc.device)
    # singular G_SS: a failed factorisation or a pivot below 1e4·eps times the largest
    ok = (info_s == 0) & (ratio_s.square() > 1e4 * torch.finfo(Zc.dtype).eps)
    out = out.masked_fill_(~ok[:, None], float("nan")).index_select(0, torch.argsort(order))
    bad = ~ok.index_select(0, torch.argsort(order))
    return torch.where(valid | bad[:, None], out, 0.0)


#: support solves: rows of consecutive sizes are grouped until a group has this many rows
_MIN_BUCKET_ROWS = 128


def _solve_on_support(S: torch.Tensor, signs: torch.Tensor, Z: torch.Tensor, G: torch.Tensor,
                      alpha: float) -> torch.Tensor:
    """Per row, the exact solution of ``G_SS y_S = z_S − α s_S`` (zeros off ``S``).

    ``S`` ``(B, n)`` bool supports, ``signs`` ``(B, n)`` their signs, ``Z = X·Dᵀ`` ``(B, n)``,
    ``G = D·Dᵀ`` ``(n, n)``; batched padded Cholesky solves (:func:`_solve_compact`). Rows whose
    ``G_SS`` is singular get NaN on their support.
    """
    n = S.shape[1]
    idx, k = _support_index(S)
    sc = torch.where(idx < n, signs.gather(1, idx.clamp_max(n - 1)), 0)
    yc = _solve_compact(idx, k, sc, Z, G, alpha)
    return Z.new_zeros(S.shape[0], n + idx.shape[1]).scatter_(1, idx, yc)[:, :n]


def _polish_on_support(X: torch.Tensor, Y: torch.Tensor, D: torch.Tensor, alpha: float,
                       G: torch.Tensor | None = None) -> torch.Tensor:
    """Exact Lasso solution for the support and signs of ``Y`` (a batched Newton step).

    If ``y*`` has support ``S`` and signs ``s``, it solves ``G_SS y_S = (x Dᵀ)_S − α s_S`` with the
    Gram ``G = D Dᵀ``; samples whose system is singular keep ``Y``. The caller accepts a candidate
    only where it lowers the objective (it is then the optimum when the support and signs were
    right, which the duality gap certifies).

    ``X`` ``(B, m)``, ``Y`` ``(B, n)``, ``D`` ``(n, m)``; returns candidates ``(B, n)``.
    """
    if G is None:
        G = D @ D.T
    cand = _solve_on_support(Y != 0, torch.sign(Y), X @ D.T, G, alpha)
    bad = torch.isnan(cand).any(dim=1, keepdim=True)
    return torch.where(bad, Y, cand)


def _fast_bfloat16(device: torch.device) -> torch.dtype | None:
    """``torch.bfloat16`` where its matrix products are native and faster than float32's (CPUs with
    AVX512-BF16 or AMX; measured 3x on a 10,000 x 100 x 100 product), else None. CUDA keeps float32
    (not measured here)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    cpu = getattr(torch, "cpu", None)
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, name, None)
        try:
            if check is not None and check():
                return torch.bfloat16
        except Exception:  # noqa: BLE001 - a private probe; absent or failing means no
            pass
    return None


#: relative slack of the float32 KKT pre-check ``|c_i| <= α(1 + slack)`` off the support; the
#: float64 duality gap decides in the end, so the slack only has to cover float32 rounding.
_KKT_SLACK = 1e-5
#: support corrections add at most this many violating atoms per sample, the largest violations
#: (0 = all): adding every violator of a far-off candidate makes large, wrong supports (measured on
#: 10,000 codes on 400 natural-patch atoms with 6 corrections: 9,989 certified after the first round
#: instead of 9,561 when every violator joins, 10 % fewer solves)
_MAX_ADD = 2


def _polish_candidates(Yw: torch.Tensor, Z: torch.Tensor, kkt: Callable[..., torch.Tensor], G: torch.Tensor,
                       alpha: float, corrections: int, slack: float | None = None,
                       S: torch.Tensor | None = None, signs: torch.Tensor | None = None,
                       Gpad: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Support polishing with support corrections and a float32 KKT pre-check.

    For every row of the FISTA iterate ``Yw`` ``(B, n)``: solve the Lasso's optimality system
    on its support and signs exactly (:func:`_solve_compact`, in ``Z``'s dtype; ``Z = X·Dᵀ``
    ``(B, n)``) and keep the candidate when its signs are the assumed ones and no atom off the
    support has a correlation ``|(x − y·D)·d_i| > α(1 + _KKT_SLACK)``, computed by
    ``kkt(rows, Y, compact)`` (:func:`_kkt_function`: the correlations ``(x − y·D)·Dᵀ`` of the
    rows ``rows`` of the batch, None = all, at the codes ``Y``; float32 in the fast path): the
    KKT conditions, up to float32 rounding. Up to ``corrections`` times, failing rows are
    corrected (atoms whose value changed sign leave the support, the ``_MAX_ADD`` most violating
    atoms join it with their correlation's sign) and solved again. The caller certifies the kept
    candidates with the float64 duality gap. ``S`` / ``signs`` ``(B, n)`` replace the iterate's
    support / signs when given; ``Gpad``: :func:`_padded_gram` of ``G``. Returns ``(kept (B,) bool, codes (B, n) in Z's
    dtype, number of solves)``.
    """
    if S is None:
        S, signs = Yw != 0, torch.sign(Yw)
    if slack is None:
        slack = _KKT_SLACK
    thr = alpha * (1.0 + slack)
    B, n = Yw.shape
    Zf = Z.contiguous().reshape(-1)
    rows = None                                         # None: every row (no row gathers)
    base = torch.arange(B, device=Yw.device) * n
    kept = torch.zeros(B, dtype=torch.bool, device=Yw.device)
    out = None
    n_solves = 0
    for c in range(corrections + 1):
        idx, k = _support_index(S)
        R, kmax = idx.shape
        valid = idx < n
        sc = signs.gather(1, idx.clamp_max(n - 1)).to(Z.dtype).mul_(valid)
        Gpad = _padded_gram(G, kmax, Gpad)
        Zc = Zf.take(base[:, None] + idx.clamp_max(n - 1))  # Z at the supports only (no row gathers)
        yc = _solve_compact(idx, k, sc, None, G, alpha, Gpad=Gpad, Zc=Zc)
        n_solves += R
        bad = torch.isnan(yc).any(dim=1)
        yc = torch.nan_to_num_(yc, nan=0.0)
        flipped_c = (yc * sc <= 0) & valid              # a value of the wrong sign (or zero)
        cand = Z.new_zeros(R, n + kmax).scatter_(1, idx, yc)[:, :n]
        cw = kkt(rows, cand, (idx, valid, k, yc))
        off = cw.abs().masked_fill_(S, 0.0)             # |correlation| off the support
        good = ~(bad | flipped_c.any(dim=1) | (off.amax(dim=1) > thr))
        if rows is None:
            out, kept = cand, good
        else:
            gi = rows[good]
            out[gi] = cand[good]
            kept[gi] = True
        if c == corrections or bool(good.all()):
            break
        ki = (~good).nonzero()[:, 0]
        flipped = torch.zeros(ki.numel(), n + kmax, dtype=torch.bool, device=Yw.device)
        flipped = flipped.scatter_(1, idx[ki], flipped_c[ki])[:, :n]
        offk = off[ki]
        viol = offk > thr
        if _MAX_ADD and offk.shape[1] > _MAX_ADD:       # only the _MAX_ADD largest violations join
            kth = offk.amax(dim=1, keepdim=True)
            rest = offk
            for _ in range(_MAX_ADD - 1):
                rest = rest.masked_fill(rest >= kth, 0.0)
                kth = rest.amax(dim=1, keepdim=True)
            viol &= offk >= kth
        S = (S[ki] & ~flipped) | viol
        signs = torch.where(viol, cw[ki].to(signs.dtype), signs[ki]).sign_()
        rows = ki if rows is None else rows[ki]
        base = rows * n
    return kept, out, n_solves


def _csr_rows(idx: torch.Tensor, valid: torch.Tensor, k: torch.Tensor, values: torch.Tensor, n: int,
              dtype: torch.dtype) -> torch.Tensor:
    """Sparse CSR ``(B, n)`` matrix of codes given compactly (:func:`_support_index`: ``idx``,
    ``valid = idx < n``, ``k`` atoms per row, ``values`` at ``idx``), in ``dtype``."""
    crow = torch.zeros(idx.shape[0] + 1, dtype=torch.int64, device=idx.device)
    torch.cumsum(k, 0, out=crow[1:])
    with warnings.catch_warnings():                     # torch's one-time "CSR support is in beta" notice
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, idx[valid], values[valid].to(dtype), size=(idx.shape[0], n),
                                       check_invariants=False)


def _sparse_codes(Y: torch.Tensor) -> torch.Tensor:
    """``Y`` ``(B, n)`` as a sparse CSR matrix on the CPU (its products with dense matrices cost
    ``nnz·columns`` instead of ``B·n·columns``: 3-7x faster for codes with 14-22 of 100-400 atoms,
    measured); unchanged elsewhere."""
    if Y.device.type != "cpu" or Y.numel() == 0:
        return Y
    with warnings.catch_warnings():                     # torch's one-time "CSR support is in beta" notice
        warnings.simplefilter("ignore", UserWarning)
        return Y.to_sparse_csr()


def _kkt_function(Zw: torch.Tensor, Xw: torch.Tensor, Dw: torch.Tensor, Gw: torch.Tensor | None):
    """``kkt(rows, Y, compact)`` for :func:`_polish_candidates`: the correlations ``(x − y·D)·Dᵀ``
    of the rows ``rows`` (None = all) at the codes ``Y`` in ``Dw``'s dtype, as ``z − y·G`` (Gram
    form, ``Gw`` given) or ``(x − y·D)·Dᵀ`` (dictionary form: it gathers rows of ``X``, narrower
    than ``Z``). On the CPU the product with the codes uses their sparse form ``compact = (idx,
    valid, k, values)``."""
    def codes(Y, compact):
        if Y.device.type == "cpu":
            return _csr_rows(*compact, Y.shape[1], Dw.dtype)
        return Y.to(Dw.dtype)

    if Gw is not None:
        def kkt(rows, Y, compact):
            Zr = Zw if rows is None else Zw.index_select(0, rows)
            return torch.addmm(Zr, codes(Y, compact), Gw, alpha=-1.0)
    else:
        def kkt(rows, Y, compact):
            Xr = Xw if rows is None else Xw.index_select(0, rows)
            return torch.addmm(Xr, codes(Y, compact), Dw, alpha=-1.0) @ Dw.T
    return kkt


def _lasso_fista_polish(X: torch.Tensor, D: torch.Tensor, alpha: float, Y: torch.Tensor, tol: float,
                        max_iter: int, step: float, iter_dtype: torch.dtype, first_round: int,
                        corrections: int, restart: str | None, stats: dict, first_dtype: torch.dtype | None = None):
    """FISTA in rounds, each followed by support polishing; one float64 certificate at the end.

    Round r runs :func:`facerig.energy.fista_l1_quadratic` (step ``1/L``, warm-started, in ``iter_dtype``) on the
    samples not yet polished for ``first_round`` iterations, then 20, 40, 80, ... (momentum
    restarts each round), then :func:`_polish_candidates`; rows whose candidate passes the
    pre-check leave the batch. At the end the duality gap of every code is computed once in
    ``X``'s dtype (float64) from ``Z = X·Dᵀ``, ``Y·D·Dᵀ`` and ``‖x‖²``; rows whose relative gap
    exceeds ``tol`` (or that were never polished) are returned in ``active`` for the classic
    full-precision loop. Returns ``(Y, active, iterations, gap, primal)``.
    """
    n, m = D.shape
    use_gram = n <= 2 * m
    G = D @ D.T
    Z = X @ D.T
    xx = X.pow(2).sum(dim=1)
    Dw, Zw = D.to(iter_dtype), Z.to(iter_dtype)
    if use_gram:
        eye = torch.eye(n, dtype=G.dtype, device=G.device)
        M = (eye - step * G).to(iter_dtype)
        C = (step * Z).to(iter_dtype)
        Gw = G.to(iter_dtype)
        Xs = None
    else:
        M = C = Gw = None
        Xs = (step * X).to(iter_dtype)
    Xw = X.to(iter_dtype)
    Yw = Y.to(iter_dtype)
    low = first_dtype is not None and first_dtype != iter_dtype and restart is None
    if low and use_gram:
        Mf, Cf = M.to(first_dtype), C.to(first_dtype)
    thr = alpha * step
    Gpad = _padded_gram(G, min(n, 64))                  # built once for every support solve
    active = torch.arange(X.shape[0], device=X.device)
    iters = rounds = 0
    its = first_round
    while active.numel() and iters < max_iter:
        its = min(its, max_iter - iters)

        def rows_of(T):                                 # no row gathers while every row runs
            return T if T is None or rounds == 0 else T[active]
        if rounds == 0 and low and use_gram:
            # first round, every row: the whole iteration in bfloat16 (it only has to find supports)
            Ya = fista_l1_quadratic(Yw.to(first_dtype), its, thr, step, M=Mf, C=Cf).to(iter_dtype)
        elif rounds == 0 and low:
            # dictionary form: bfloat16 products, iterate and residual in iter_dtype (supports as
            # good as float32's, measured; a bfloat16 iterate loses 80 % of the exact supports)
            Ya = fista_l1_quadratic(Yw, its, thr, step, D=Dw, Xs=Xs, low=first_dtype)
        else:
            Ya = fista_l1_quadratic(rows_of(Yw), its, thr, step, M=M, C=rows_of(C), D=Dw, Xs=rows_of(Xs),
                                    restart=restart)
        iters += its
        if rounds == 0:
            Yw = Ya
        else:
            Yw[active] = Ya
        kkt = _kkt_function(rows_of(Zw), rows_of(Xw), Dw, Gw)
        kept, codes, n_solves = _polish_candidates(Ya, rows_of(Z), kkt, G, alpha, corrections, Gpad=Gpad)
        stats["solves"] = stats.get("solves", 0) + n_solves
        stats.setdefault("certified", []).append((iters, int(kept.sum())))
        if rounds == 0:
            Y = torch.where(kept[:, None], codes, Y)
        else:
            Y[active[kept]] = codes[kept]
        active = active[~kept]
        rounds += 1
        its = 20 * 2 ** (rounds - 1)
    Y[active] = Yw[active].to(Y.dtype)
    # the certificate: float64 duality gap of every final code
    tiny = torch.finfo(X.dtype).tiny

    def corr(V):                                        # V·D·Dᵀ, float64
        Vs = _sparse_codes(V)
        return Vs @ G if use_gram else (Vs @ D) @ D.T
    gap, primal, c = _gap_from_products(Y, Z, corr(Y), xx, alpha)
    ok = gap <= tol * primal.clamp_min(tiny)
    ok[active] = False
    rej = (~ok).nonzero()[:, 0]
    rej = rej[~torch.isin(rej, active)]
    stats["rejected"] = rej.numel()
    if rej.numel():
        # passed the float32 pre-check but not the certificate (an atom at the KKT boundary):
        # polish again in float64 with the violating atoms added
        Yr = Y[rej]
        S0 = (Yr != 0) | (c[rej].abs() > alpha)
        s0 = torch.where(Yr != 0, torch.sign(Yr), torch.sign(c[rej]))
        kkt = _kkt_function(Z[rej], X[rej], D, G if use_gram else None)
        kept, codes, _ = _polish_candidates(Yr, Z[rej], kkt, G, alpha, corrections, slack=0.0, S=S0, signs=s0,
                                            Gpad=Gpad)
        Yr = torch.where(kept[:, None], codes, Yr)
        g2, p2, _ = _gap_from_products(Yr, Z[rej], corr(Yr), xx[rej], alpha)
        Y[rej], gap[rej], primal[rej] = Yr, g2, p2
        ok[rej] = g2 <= tol * p2.clamp_min(tiny)
    return Y, (~ok).nonzero()[:, 0], iters, gap, primal


#: CPU fast path: row chunks of about this many code entries (``rows·n_atoms``); their float64
#: temporaries (4-5 MB) stay in the allocator's heap and the cache, where a 10,000 x 400 batch's
#: fresh 32 MB temporaries cost a page fault per 4 kB (measured: 15 ms for a 32 MB subtraction
#: that takes 2 ms in place; 10,000 codes on 400 atoms 17 % faster in chunks of ~1,500 rows)
_CHUNK_ENTRIES = 600_000


def _lasso_fista_polish_chunks(X: torch.Tensor, D: torch.Tensor, alpha: float, Y: torch.Tensor, *args,
                               first_dtype: torch.dtype | None = None):
    """:func:`_lasso_fista_polish` on the CPU in row chunks of about ``_CHUNK_ENTRIES / n_atoms``
    rows, run by the module's thread pool when torch has several threads and the batch is large
    (each worker single-threaded, like that many processes: every torch kernel releases the GIL
    and the chunks are independent problems), else one after the other; the results are concatenated in row order. Same arguments and results (``stats``,
    the last positional argument, sums the chunks' counters; ``iterations`` is the largest)."""
    nt = torch.get_num_threads()
    B, n = X.shape[0], D.shape[0]
    stats = args[-1]
    if X.device.type != "cpu" or _in_pool_thread():
        return _lasso_fista_polish(X, D, alpha, Y, *args, first_dtype=first_dtype)
    n_chunks = -(-B // max(512, _CHUNK_ENTRIES // max(n, 1)))
    parallel = nt >= 2 and B >= 2 * _PARALLEL_MIN_ROWS
    if parallel:
        n_chunks = -(-max(n_chunks, nt) // nt) * nt    # a multiple of the thread count
    if n_chunks <= 1:
        return _lasso_fista_polish(X, D, alpha, Y, *args, first_dtype=first_dtype)
    bounds = [(B * i // n_chunks, B * (i + 1) // n_chunks) for i in range(n_chunks)]
    parts_stats = [{} for _ in bounds]
    jobs = [(_lasso_fista_polish, X[b:a], D, alpha, Y[b:a], *args[:-1], st)
            for (b, a), st in zip(bounds, parts_stats)]
    if parallel:
        def single_threaded(fn, *a):                    # like nt worker processes: no nested OpenMP
            torch.set_num_threads(1)                    # teams (OpenMP thread counts are per thread)
            try:
                return fn(*a, first_dtype=first_dtype)
            finally:
                torch.set_num_threads(nt)

        futures = [_pool(nt).submit(single_threaded, *job) for job in jobs]
        res = [f.result() for f in futures]
    else:
        res = [job[0](*job[1:], first_dtype=first_dtype) for job in jobs]
    Yc = torch.cat([r[0] for r in res])
    active = torch.cat([r[1] + b for r, (b, _) in zip(res, bounds)])
    iters = max(r[2] for r in res)
    gap = torch.cat([r[3] for r in res])
    primal = torch.cat([r[4] for r in res])
    stats["solves"] = sum(st.get("solves", 0) for st in parts_stats)
    stats["rejected"] = sum(st.get("rejected", 0) for st in parts_stats)
    rounds: dict = {}
    for st in parts_stats:
        for it, c in st.get("certified", []):
            rounds[it] = rounds.get(it, 0) + c
    stats["certified"] = sorted(rounds.items())
    return Yc, active, iters, gap, primal
