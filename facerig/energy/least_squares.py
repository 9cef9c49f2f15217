"""Nonlinear least squares: :func:`levenberg_marquardt`, :func:`gauss_newton` and the batched
Jacobians they use (:func:`batched_jacobian`). Batched over the leading axis like every solver of
:mod:`facerig.energy.solvers` (which re-exports them); they return a :class:`SolverResult`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from facerig.energy._checks import check_finite, check_nonneg, check_option, check_positive_int
from facerig.energy._solver_common import SolverResult, _check_start, _progress

__all__ = ["batched_jacobian", "levenberg_marquardt", "gauss_newton"]



# --------------------------------------------------------------------------------------------
# Gauss-Newton / Levenberg-Marquardt
# --------------------------------------------------------------------------------------------


def batched_jacobian(residual: Callable[[Tensor], Tensor], p: Tensor, mode: str = "auto") -> tuple[Tensor, Tensor]:
    """Residuals and their per-sample Jacobian for a batched residual function.

    Because sample ``b``'s residuals depend only on ``p[b]``, the Jacobian of all samples comes
    from one forward-mode pass per parameter (shared tangent) or one reverse-mode pass per
    residual (summed over the batch), vectorised with ``torch.func.vmap``.

    Args:
        residual: ``(B, P) -> (B, M)``, built from ``torch.func``-compatible operations.
        p: ``(B, P)``.
        mode: ``"forward"`` (cost ~P), ``"reverse"`` (cost ~M) or ``"auto"`` (the cheaper).

    Returns:
        ``r`` of shape ``(B, M)`` and ``J`` of shape ``(B, M, P)``.
    """
    from torch.func import jacfwd, jacrev

    check_option(mode, "jacobian", ("auto", "forward", "reverse"))
    p = p.detach()
    with torch.no_grad():
        r = residual(p)
    if r.dim() != 2 or r.shape[0] != p.shape[0]:
        raise ValueError(f"residual: expected (B, M) residuals, got shape {tuple(r.shape)}")
    if mode == "auto":
        mode = "forward" if p.shape[1] <= r.shape[1] else "reverse"
    if mode == "forward":
        zero = torch.zeros(p.shape[1], dtype=p.dtype, device=p.device)
        J = jacfwd(lambda q: residual(p + q))(zero)  # (B, M, P)
    else:
        J = jacrev(lambda q: residual(q).sum(dim=0))(p).permute(1, 0, 2)  # (M, B, P) -> (B, M, P)
    return r, J


def levenberg_marquardt(
    residual: Callable[[Tensor], Tensor],
    p0: Tensor,
    *,
    jacobian: Callable[[Tensor], Tensor] | str = "auto",
    damping: float = 1e-3,
    damping_up: float = 10.0,
    damping_down: float = 0.1,
    scaled: bool = True,
    max_iter: int = 50,
    tol: float = 1e-10,
    project: Callable[[Tensor], Tensor] | None = None,
    callback: Callable[[int, Tensor, Tensor], bool | None] | None = None,
    progress: bool = False,
) -> SolverResult:
    """Levenberg-Marquardt for batched nonlinear least squares ``min_p 1/2 ||r(p)||^2``.

    Each sample has its own damping ``lambda``: the step solves
    ``(J^T J + lambda D) dp = -J^T r`` (``D = diag(J^T J)`` when ``scaled``, Marquardt's
    scale-invariant form, else the identity) by a batched Cholesky factorisation; a step that
    lowers the cost is accepted and ``lambda *= damping_down``, otherwise rejected and
    ``lambda *= damping_up``. The Jacobian is recomputed only after some sample moved.

    Args:
        residual: ``(B, P) -> (B, M)`` residual function (face fitting: a few hundred
            residuals, 50-300 parameters, batched over frames).
        p0: ``(B, P)`` initial parameters.
        jacobian: ``"auto"`` / ``"forward"`` / ``"reverse"`` (autograd, see
            :func:`batched_jacobian`) or a callable ``p -> (B, M, P)``.
        damping: initial ``lambda`` (>= 0); about 0 makes the first steps Gauss-Newton.
        damping_up, damping_down: factors (> 1 and in (0, 1)).
        scaled: Marquardt's diagonal scaling.
        max_iter: Jacobian evaluations at most.
        tol: stop (``"tol"``) when every sample's relative cost decrease of an accepted step, or
            its relative step ``|dp| / (|p| + tol)``, is below ``tol``; samples whose damping
            exceeds 1e12 count as converged (no descent possible).
        project: ``p -> p`` applied to every trial point (box constraints on parameters).
        callback: ``callback(k, p, cost)`` after iteration ``k`` with per-sample costs
            ``(B,)``; returning ``True`` stops.
        progress: show a tqdm progress bar.

    Returns:
        :class:`SolverResult` with ``history`` the total cost ``1/2 ||r||^2`` at the start and after
        every iteration,
        ``extra["cost"]`` the per-sample costs and ``extra["damping"]`` the final ``lambda``.
    """
    p = _check_start(p0, "p0")
    if p.dim() != 2:
        raise ValueError(f"p0: expected (B, P) parameters, got shape {tuple(p.shape)}")
    check_nonneg(damping, "damping")
    if damping_up <= 1:
        raise ValueError(f"damping_up: must be > 1, got {damping_up}")
    if not 0 < damping_down < 1:
        raise ValueError(f"damping_down: must be in (0, 1), got {damping_down}")
    check_positive_int(max_iter, "max_iter")
    check_nonneg(tol, "tol")
    if isinstance(jacobian, str):
        mode = jacobian
        check_option(mode, "jacobian", ("auto", "forward", "reverse"))

        def jac(q):
            return batched_jacobian(residual, q, mode)
    elif callable(jacobian):
        def jac(q):
            with torch.no_grad():
                return residual(q), jacobian(q)
    else:
        raise ValueError("jacobian: expected 'auto', 'forward', 'reverse' or a callable")

    B, P = p.shape
    lam = torch.full((B,), float(damping), dtype=p.dtype, device=p.device)
    eye = torch.eye(P, dtype=p.dtype, device=p.device)
    r, J = jac(p)
    if J.shape != (B, r.shape[1], P):
        raise ValueError(f"jacobian: expected shape {(B, r.shape[1], P)}, got {tuple(J.shape)}")
    check_finite(r, "residual(p0)")
    cost = 0.5 * r.square().sum(dim=1)
    history = [float(cost.sum())]
    done = torch.zeros(B, dtype=torch.bool, device=p.device)
    reason = "max_iter"
    bar = _progress(progress, max_iter, "levenberg-marquardt")
    k = 0
    with torch.no_grad():
        while k < max_iter:
            k += 1
            JtJ = J.transpose(1, 2) @ J
            g = (J.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)
            D = torch.diagonal(JtJ, dim1=1, dim2=2).clamp(min=1e-12).diag_embed() if scaled else eye
            A = JtJ + lam[:, None, None] * D + 1e-12 * eye
            L, info = torch.linalg.cholesky_ex(A)
            step = -torch.cholesky_solve(g.unsqueeze(-1), L).squeeze(-1)
            bad_chol = info != 0
            if bool(bad_chol.any()):
                step = torch.where(bad_chol[:, None], -torch.linalg.lstsq(A, g.unsqueeze(-1)).solution.squeeze(-1), step)
            trial = p + step
            if project is not None:
                trial = project(trial)
            r_trial = residual(trial)
            cost_trial = 0.5 * r_trial.square().sum(dim=1)
            ok = torch.isfinite(cost_trial) & (cost_trial < cost) & ~done
            rel_dec = torch.where(ok, (cost - cost_trial) / cost.clamp(min=1e-300), torch.zeros_like(cost))
            rel_step = step.norm(dim=1) / (p.norm(dim=1) + tol + 1e-300)
            p = torch.where(ok[:, None], trial, p)
            r = torch.where(ok[:, None], r_trial, r)
            cost = torch.where(ok, cost_trial, cost)
            lam = torch.where(ok, lam * damping_down, torch.where(done, lam, (lam * damping_up).clamp(min=1e-9)))
            done = done | (ok & ((rel_dec <= tol) | (rel_step <= tol))) | (cost == 0) | (lam > 1e12)
            history.append(float(cost.sum()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(cost=f"{history[-1]:.6g}")
            if callback is not None and callback(k, p, cost) is True:
                reason = "callback"
                break
            if bool(done.all()):
                reason = "tol"
                break
            if k < max_iter and bool(ok.any()):  # no Jacobian after the last iteration: it would go unused
                r, J = jac(p)
    if bar is not None:
        bar.close()
    return SolverResult(x=p, history=history, n_iter=k, stop_reason=reason,
                        converged=reason in ("tol", "callback"), extra={"cost": cost, "damping": lam})


def gauss_newton(residual: Callable[[Tensor], Tensor], p0: Tensor, **kwargs) -> SolverResult:
    """Gauss-Newton for ``min_p 1/2 ||r(p)||^2``: :func:`levenberg_marquardt` with (almost) no damping.

    Steps are undamped Gauss-Newton steps while they lower the cost; a step that does not is
    retried with growing damping (so it cannot diverge). Arguments as
    :func:`levenberg_marquardt` (``damping`` defaults to 1e-9).
    """
    kwargs.setdefault("damping", 1e-9)
    return levenberg_marquardt(residual, p0, **kwargs)
