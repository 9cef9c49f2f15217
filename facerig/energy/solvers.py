"""Iterative solvers: proximal gradient (ISTA / FISTA), gradient-based (Adam, L-BFGS) and
Gauss-Newton / Levenberg-Marquardt.

Every solver is batched over the leading axis of its variable ``x`` of shape ``(B, ...)``
(samples are independent problems), follows ``x``'s dtype and device and returns a
:class:`SolverResult`: the solution, the per-iteration total energy (summed over the batch),
the number of iterations and why it stopped.

Energies passed to the solvers return either one value per sample, shape ``(B,)``, or a scalar
(the batch total; per-sample stopping then falls back to the total).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from facerig.energy._checks import check_finite, check_nonneg, check_option, check_positive_int, per_sample
from facerig.energy._solver_common import (SolverResult, _check_start, _energy_vector, _per_sample_energy, _progress,
                                           _rel_change)
from facerig.energy.least_squares import batched_jacobian, gauss_newton, levenberg_marquardt

__all__ = [
    "SolverResult",
    "ista",
    "fista",
    "fista_l1_quadratic",
    "power_iteration",
    "minimize_adam",
    "minimize_lbfgs",
    "levenberg_marquardt",
    "gauss_newton",
    "batched_jacobian",
]


class _Smooth:
    """The smooth part: energy ``f(x)`` and gradient, analytic or by autograd."""

    def __init__(self, f, grad, batch):
        if f is None and grad is None:
            raise ValueError("f: give the smooth energy f(x), its gradient grad(x), or both")
        self.f, self.grad_fn, self.batch = f, grad, batch

    def value(self, x: Tensor) -> Tensor | None:
        if self.f is None:
            return None
        with torch.no_grad():
            return _per_sample_energy(self.f(x), self.batch)

    def value_and_grad(self, x: Tensor, need_value: bool) -> tuple[Tensor | None, Tensor]:
        if self.grad_fn is not None:
            with torch.no_grad():
                g = self.grad_fn(x)
            if g.shape != x.shape:
                raise ValueError(f"grad: returned shape {tuple(g.shape)}, expected {tuple(x.shape)}")
            return (self.value(x) if need_value else None), g
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            e = self.f(xr)
            (g,) = torch.autograd.grad(e.sum(), xr)
        return _per_sample_energy(e, self.batch), g


def _total(fx: Tensor | None, gx: Tensor | None) -> Tensor | None:
    if fx is None:
        return None
    return fx if gx is None else fx + gx


def _proximal_gradient(
    x0, *, f, grad, prox, g, step, lipschitz, backtracking, eta, accelerated, monotone, max_iter, tol,
    callback, history_every, progress, desc, restart=None, check_every=1,
) -> SolverResult:
    if not isinstance(x0, Tensor):
        raise TypeError("x0: expected a torch.Tensor of shape (B, ...)")
    if x0.dim() < 1:
        raise ValueError("x0: expected at least one (batch) dimension")
    check_finite(x0, "x0")
    check_positive_int(max_iter, "max_iter")
    check_nonneg(tol, "tol")
    check_positive_int(history_every, "history_every")
    check_positive_int(check_every, "check_every")
    if restart is not None:
        check_option(restart, "restart", ("gradient", "function"))
        if not accelerated:
            restart = None  # ISTA has no momentum to restart
    if restart == "function" and f is None:
        raise ValueError("f: restart='function' needs the smooth energy f")
    if eta <= 1:
        raise ValueError(f"eta: backtracking factor must be > 1, got {eta}")
    if prox is None:
        def prox(v, t):  # no non-smooth part
            return v
    smooth = _Smooth(f, grad, x0.shape[0])
    if backtracking is None:
        backtracking = step is None and lipschitz is None
    if step is None:
        if lipschitz is not None:
            check_nonneg(lipschitz, "lipschitz", strict=True)
            step = 1.0 / lipschitz
        elif backtracking:
            step = 1.0
        else:
            raise ValueError("step: give step, lipschitz, or backtracking=True")
    check_nonneg(step, "step", strict=True)
    if backtracking and f is None:
        raise ValueError("f: backtracking needs the smooth energy f")
    if monotone and f is None:
        raise ValueError("f: monotone=True needs the smooth energy f")
    if tol > 0 and f is None:
        raise ValueError("f: tol > 0 needs the smooth energy f (or stop with a callback)")
    B = x0.shape[0]
    shape1 = (B,) + (1,) * (x0.dim() - 1)
    t_step = per_sample(step, x0, "step")
    if backtracking and not isinstance(t_step, Tensor):
        t_step = torch.full(shape1, t_step, dtype=x0.dtype, device=x0.device)

    need_energy_every = monotone or restart == "function"
    x = x0.detach().clone()
    y = x
    # FISTA's momentum sequence; per sample (B, 1, ..., 1) when an adaptive restart may reset it
    theta = torch.ones(shape1, dtype=x0.dtype, device=x0.device) if restart is not None else 1.0
    e_restart = None
    history: list[float] = []
    reason = "max_iter"
    e_prev = None
    e_x = None
    if monotone:
        e_x = _total(smooth.value(x), g(x).detach() if g is not None else None)
    bar = _progress(progress, max_iter, desc)
    red = tuple(range(1, x0.dim()))
    k = 0
    with torch.no_grad():
        while k < max_iter:
            k += 1
            fy, gy = smooth.value_and_grad(y, need_value=backtracking)
            while True:
                if isinstance(t_step, Tensor):
                    z = prox(y - t_step * gy, t_step)
                else:  # one fused op instead of two temporaries
                    z = prox(torch.add(y, gy, alpha=-t_step), t_step)
                if not backtracking:
                    break
                fz = smooth.value(z)
                d = z - y
                quad = fy + (gy * d).sum(dim=red) + d.square().sum(dim=red) / (2 * t_step.reshape(-1))
                bad = fz > quad * (1 + 1e-12) + 1e-30 if fz.dim() else (fz > quad.sum() + 1e-30)
                if not bool(bad.any()) or float(t_step.min()) < 1e-20:
                    break
                if fz.dim():
                    t_step = torch.where(bad.reshape(shape1), t_step / eta, t_step)
                else:
                    t_step = t_step / eta
            check = tol > 0 and (k % check_every == 0 or k == max_iter)
            record = need_energy_every or check or k % history_every == 0 or k == max_iter
            if monotone:
                e_z = _total(smooth.value(z), g(z).detach() if g is not None else None)
                take = (e_z <= e_x) if e_z.dim() else (e_z <= e_x).expand(B)
                x_new = torch.where(take.reshape(shape1), z, x)
                e_new = torch.where(take, e_z, e_x) if e_z.dim() else torch.minimum(e_z, e_x)
            else:
                x_new = z
                e_new = None
                if record and f is not None:
                    e_new = _total(smooth.value(x_new), g(x_new).detach() if g is not None else None)
            if accelerated:
                if restart is not None:
                    # adaptive restart (O'Donoghue & Candes 2015), per sample: reset the momentum
                    # when it points uphill (gradient scheme: <y - z, z - x> > 0) or when the
                    # energy went up (function scheme)
                    if restart == "gradient":
                        up = ((y - z) * (z - x)).sum(dim=red) > 0
                    else:
                        up = (e_new > e_restart) if e_restart is not None else torch.zeros(B, dtype=torch.bool, device=x.device)
                        if up.dim() == 0:
                            up = up.expand(B)
                        e_restart = e_new
                    theta = torch.where(up.reshape(shape1), torch.ones_like(theta), theta)
                    theta_next = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * theta * theta))
                else:
                    theta_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * theta * theta))
                beta = (theta - 1.0) / theta_next
                if monotone:
                    y = x_new + (theta / theta_next) * (z - x_new) + beta * (x_new - x)
                elif isinstance(beta, Tensor):
                    y = torch.addcmul(x_new, beta, x_new - x)
                else:
                    y = torch.add(x_new, x_new - x, alpha=beta)
                theta = theta_next
            else:
                y = x_new
            x = x_new
            if e_new is not None and k % history_every == 0:
                history.append(float(e_new.sum()))
            if bar is not None:
                bar.update(1)
                if e_new is not None:
                    bar.set_postfix(energy=f"{float(e_new.sum()):.6g}")
            if callback is not None and callback(k, x, e_new) is True:
                reason = "callback"
                break
            if check and e_new is not None:
                if e_prev is not None and _rel_change(e_prev, e_new) <= tol:
                    reason = "tol"
                    break
                e_prev = e_new
            if monotone:
                e_x = e_new
    if bar is not None:
        bar.close()
    extra = {"step": t_step}
    if e_new is not None:
        extra["energy"] = e_new
    return SolverResult(x=x, history=history, n_iter=k, stop_reason=reason,
                        converged=reason in ("tol", "callback"), extra=extra)


def fista(
    x0: Tensor,
    *,
    f: Callable[[Tensor], Tensor] | None = None,
    grad: Callable[[Tensor], Tensor] | None = None,
    prox: Callable[[Tensor, float | Tensor], Tensor] | None = None,
    g: Callable[[Tensor], Tensor] | None = None,
    step: float | Tensor | None = None,
    lipschitz: float | Tensor | None = None,
    backtracking: bool | None = None,
    eta: float = 2.0,
    monotone: bool = False,
    max_iter: int = 100,
    tol: float = 0.0,
    callback: Callable[[int, Tensor, Tensor | None], bool | None] | None = None,
    history_every: int = 1,
    progress: bool = False,
    restart: str | None = None,
    check_every: int = 1,
) -> SolverResult:
    """FISTA (Beck & Teboulle 2009): accelerated proximal gradient for ``min f(x) + g(x)``.

    ``f`` is smooth (gradient ``grad`` given analytically or taken by autograd from ``f``),
    ``g`` is handled by its proximal operator ``prox(v, step) = argmin_x g(x) + ||x-v||^2/(2 step)``.

    Args:
        x0: ``(B, ...)`` initial point (warm start); samples are independent problems.
        f: ``x -> (B,)`` (or scalar) smooth energy. Needed for backtracking, ``monotone``,
            ``tol`` and the history; optional when ``grad`` is given.
        grad: ``x -> (B, ...)`` analytic gradient of ``f`` (no autograd overhead, e.g. Lasso
            ``A^T (A x - b)``). Without it the gradient is taken by autograd from ``f``.
        prox: ``(v, step) -> x`` prox of ``g``; ``step`` is a number or a ``(B, 1, ..., 1)``
            tensor. ``None`` means ``g = 0``.
        g: ``x -> (B,)`` value of the non-smooth part, used only for reporting the energy
            (history, ``tol``, ``monotone``).
        step: fixed step size (number or per-sample ``(B,)`` tensor), at most ``1/L`` for the
            Lipschitz constant ``L`` of ``grad``.
        lipschitz: ``L``; the step is ``1/L`` when ``step`` is not given.
        backtracking: Beck-Teboulle backtracking (per sample), starting from ``step`` (or 1)
            and dividing by ``eta`` until the quadratic upper bound holds. Defaults to ``True``
            when neither ``step`` nor ``lipschitz`` is given.
        eta: backtracking factor > 1.
        monotone: MFISTA, the variant whose energy never increases (costs one energy
            evaluation per iteration).
        max_iter: iteration limit.
        tol: stop when the largest per-sample relative change of the total energy between two
            iterations is <= ``tol`` (0 disables it; then the energy is evaluated only for the
            history).
        callback: ``callback(k, x, energy)`` after iteration ``k`` (1-based); ``energy`` is the
            per-sample energy ``(B,)`` when computed, else ``None``. Returning ``True`` stops
            the solver (``stop_reason="callback"``), e.g. for duality-gap stopping.
        history_every: record the total energy every this many iterations (needs ``f``).
        progress: show a tqdm progress bar.
        restart: adaptive momentum restart (O'Donoghue & Candes 2015), per sample: ``None``
            (plain FISTA), ``"gradient"`` (reset the momentum when ``<y - x_new, x_new - x> > 0``;
            free, no energy needed) or ``"function"`` (reset when the energy increased; needs
            ``f`` and evaluates it every iteration). Restarting gives linear convergence on
            locally strongly convex problems (e.g. a Lasso once its support is found).
        check_every: with ``tol > 0``, evaluate the energy and test the relative change only
            every this many iterations (the change is then measured over ``check_every``
            iterations); saves the energy evaluations of the other iterations.

    Returns:
        :class:`SolverResult`; ``extra["step"]`` holds the final step, ``extra["energy"]`` the
        last per-sample energy when computed.
    """
    return _proximal_gradient(x0, f=f, grad=grad, prox=prox, g=g, step=step, lipschitz=lipschitz,
                              backtracking=backtracking, eta=eta, accelerated=True, monotone=monotone,
                              max_iter=max_iter, tol=tol, callback=callback, history_every=history_every,
                              progress=progress, desc="fista", restart=restart, check_every=check_every)


def ista(
    x0: Tensor,
    *,
    f: Callable[[Tensor], Tensor] | None = None,
    grad: Callable[[Tensor], Tensor] | None = None,
    prox: Callable[[Tensor, float | Tensor], Tensor] | None = None,
    g: Callable[[Tensor], Tensor] | None = None,
    step: float | Tensor | None = None,
    lipschitz: float | Tensor | None = None,
    backtracking: bool | None = None,
    eta: float = 2.0,
    max_iter: int = 100,
    tol: float = 0.0,
    callback: Callable[[int, Tensor, Tensor | None], bool | None] | None = None,
    history_every: int = 1,
    progress: bool = False,
    check_every: int = 1,
) -> SolverResult:
    """ISTA: proximal gradient ``x <- prox(x - step * grad f(x), step)`` for ``min f(x) + g(x)``.

    Same arguments and result as :func:`fista` (without ``monotone`` and ``restart``: with a
    step <= 1/L the ISTA energy never increases).
    """
    return _proximal_gradient(x0, f=f, grad=grad, prox=prox, g=g, step=step, lipschitz=lipschitz,
                              backtracking=backtracking, eta=eta, accelerated=False, monotone=False,
                              max_iter=max_iter, tol=tol, callback=callback, history_every=history_every,
                              progress=progress, desc="ista", restart=None, check_every=check_every)


def fista_l1_quadratic(
    y0: Tensor, n_iter: int, thresh: float, step: float, *, M: Tensor | None = None, C: Tensor | None = None,
    D: Tensor | None = None, Xs: Tensor | None = None, restart: str | None = None, low: torch.dtype | None = None,
) -> Tensor:
    """``n_iter`` FISTA iterations for a least-squares energy plus an L1 penalty, fused for speed.

    The problem is ``min_y ½‖x − y·D‖² + (thresh/step)·‖y‖₁`` per row (``y`` ``(B, n)``,
    ``D`` ``(n, m)``, ``x`` ``(B, m)``): the same iterates as :func:`fista` with a fixed
    ``step`` (normally ``1/L``, ``L = ‖D‖₂²``), the L1 prox and, with ``restart="gradient"``,
    the same per-sample momentum restart — written in the ISTA-layer form of LISTA so that one
    iteration is one or two matrix products into preallocated buffers, one soft-shrink kernel and
    one momentum kernel (no per-iteration allocations, no energy evaluations, no stopping test:
    the caller decides after ``n_iter`` iterations, e.g. with a duality gap). The gradient step
    ``u = v − step·∇f(v)`` is given in one of two forms:

    * Gram form (cheaper when ``n <= 2m``): ``u = C + v·M`` with ``M = I − step·D·Dᵀ`` ``(n, n)``
      and ``C = step·x·Dᵀ`` ``(B, n)``;
    * dictionary form: ``u = v + (Xs − step·v·D)·Dᵀ`` with ``D`` and ``Xs = step·x`` ``(B, m)``.

    Args:
        y0: (B, n) start (not modified); the momentum starts afresh.
        n_iter: iterations (>= 0); thresh: soft-threshold ``step·weight`` (>= 0); step: the
            gradient step of the dictionary form (unused by the Gram form, where it is in ``M``/``C``).
        M, C: the Gram form; D, Xs: the dictionary form (exactly one of the two pairs).
        restart: None or ``"gradient"`` (O'Donoghue & Candès; per sample).
        low: dictionary form only: a lower precision (e.g. ``torch.bfloat16`` on CPUs with native
            bfloat16 products) for the two matrix products, everything else in ``y0``'s dtype (the
            products' rounding errors are relative to ``v·D`` and the residual, not to the iterate).

    Returns:
        (B, n) the last iterate, in ``y0``'s dtype and device.
    """
    gram = M is not None and C is not None
    if gram == (D is not None and Xs is not None):
        raise ValueError("fista_l1_quadratic: give either M and C (Gram form) or D and Xs (dictionary form)")
    check_nonneg(thresh, "thresh")
    if n_iter < 0:
        raise ValueError(f"n_iter: expected >= 0, got {n_iter}")
    if restart is not None:
        check_option(restart, "restart", ("gradient",))
    if low is not None and (gram or low == y0.dtype):
        low = None                                      # the Gram form (or the same dtype): full precision
    x = y0.clone()
    v = x
    u = torch.empty_like(y0)
    xn = torch.empty_like(y0)
    vb = torch.empty_like(y0)
    R = None if gram else torch.empty(y0.shape[0], D.shape[1], dtype=y0.dtype, device=y0.device)
    theta = torch.ones(y0.shape[0], 1, dtype=y0.dtype, device=y0.device) if restart else 1.0
    if low is not None:
        B, m = y0.shape[0], D.shape[1]
        Dl = D.to(low)
        DlT = Dl.T.contiguous()
        vl = y0.to(low)
        P = torch.empty(B, m, dtype=low, device=y0.device)
        Rl = torch.empty_like(P)
        Q = torch.empty_like(vl)
    with torch.no_grad():
        for _ in range(int(n_iter)):
            if gram:
                torch.addmm(C, v, M, out=u)
            elif low is not None:
                torch.mm(vl, Dl, out=P)
                torch.add(Xs, P, alpha=-step, out=R)
                Rl.copy_(R)
                torch.mm(Rl, DlT, out=Q)
                u.copy_(Q)                              # (a mixed-dtype add is 2x slower)
                u.add_(v)
            else:
                torch.addmm(Xs, v, D, alpha=-step, out=R)
                torch.addmm(v, R, D.T, out=u)
            torch._C._nn.softshrink(u, thresh, out=xn)
            if restart:
                up = ((v - xn) * (xn - x)).sum(dim=1, keepdim=True) > 0
                theta = torch.where(up, torch.ones_like(theta), theta)
                tn = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * theta * theta))
                torch.addcmul(xn, (theta - 1.0) / tn, xn - x, out=vb)
            else:
                tn = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * theta * theta))
                torch.lerp(x, xn, 1.0 + (theta - 1.0) / tn, out=vb)
            v = vb
            if low is not None:
                vl.copy_(vb)
            x, xn, theta = xn, x, tn                    # ping-pong: the old iterate's buffer is reused
    return x


def power_iteration(
    op: Callable[[Tensor], Tensor],
    shape: tuple[int, ...],
    *,
    n_iter: int = 100,
    tol: float = 1e-6,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Largest eigenvalue of a symmetric positive semi-definite linear operator, per sample.

    Typical use: the Lipschitz constant ``||A^T A||`` of a least-squares gradient,
    ``power_iteration(lambda v: A.T @ (A @ v) ..., shape)``.

    Args:
        op: ``(B, ...) -> (B, ...)`` linear, symmetric PSD, acting independently per sample.
        shape: ``(B, ...)`` shape of the vectors ``op`` acts on.
        n_iter: maximum number of iterations.
        tol: stop when the relative change of every estimate is below ``tol``.
        dtype, device: of the random start vector (default dtype / CPU).
        generator: random generator for the start vector (reproducible).

    Returns:
        ``(B,)`` eigenvalue estimates (from below; multiply by ~1.01 for a safe step size).
    """
    check_positive_int(n_iter, "n_iter")
    v = torch.randn(tuple(shape), dtype=dtype or torch.get_default_dtype(), generator=generator)
    v = v.to(device) if device is not None else v
    red = tuple(range(1, v.dim()))
    v = v / v.square().sum(dim=red, keepdim=True).sqrt().clamp(min=1e-30)
    lam = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    with torch.no_grad():
        for _ in range(n_iter):
            w = op(v)
            lam_new = (w * v).sum(dim=red)
            v = w / w.square().sum(dim=red, keepdim=True).sqrt().clamp(min=1e-30)
            done = bool(((lam_new - lam).abs() <= tol * lam_new.abs()).all())
            lam = lam_new
            if done:
                break
    return lam


# --------------------------------------------------------------------------------------------
# Gradient-based solvers (torch.optim)
# --------------------------------------------------------------------------------------------


def _run_torch_optim(energy, y0, opt_factory, max_iter, tol, patience, project, callback, progress,
                     history_every, desc, closure_based, reeval: bool = True) -> SolverResult:
    y = _check_start(y0).requires_grad_(True)
    check_positive_int(max_iter, "max_iter")
    check_nonneg(tol, "tol")
    check_positive_int(patience, "patience")
    check_positive_int(history_every, "history_every")
    opt = opt_factory([y])
    B = y.shape[0]
    history: list[float] = []
    best = math.inf
    stale = 0
    reason = "max_iter"
    bar = _progress(progress, max_iter, desc)
    last = None

    step_energy = [None]

    def closure():
        opt.zero_grad(set_to_none=True)
        e = _energy_vector(energy(y), B)
        total = e.sum()
        total.backward()
        step_energy[0] = e.detach()
        return total

    k = 0
    while k < max_iter:
        k += 1
        if closure_based:
            opt.step(closure)
        else:
            closure()
            opt.step()
        if project is not None:
            with torch.no_grad():
                y.copy_(project(y))
        if reeval or closure_based:
            with torch.no_grad():
                e = _energy_vector(energy(y), B).detach()
        else:  # the energy at the point the step started from (no extra evaluation)
            e = step_energy[0]
        total = float(e.sum())
        last = e
        if not math.isfinite(total):
            raise FloatingPointError(f"{desc}: the energy became {total}; lower the learning rate")
        if k % history_every == 0:
            history.append(total)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(energy=f"{total:.6g}")
        if callback is not None and callback(k, y.detach(), e) is True:
            reason = "callback"
            break
        if tol > 0:
            if not math.isfinite(best) or total < best - tol * max(abs(best), 1e-30):
                best, stale = total, 0
            else:
                stale += 1
                if stale >= patience:
                    reason = "tol"
                    break
    if bar is not None:
        bar.close()
    return SolverResult(x=y.detach(), history=history, n_iter=k, stop_reason=reason,
                        converged=reason in ("tol", "callback"), extra={"energy": last})


def minimize_adam(
    energy: Callable[[Tensor], Tensor],
    y0: Tensor,
    *,
    lr: float = 1e-2,
    max_iter: int = 500,
    tol: float = 1e-6,
    patience: int = 20,
    project: Callable[[Tensor], Tensor] | None = None,
    callback: Callable[[int, Tensor, Tensor], bool | None] | None = None,
    history_every: int = 1,
    progress: bool = False,
    reeval: bool = True,
    **adam_kwargs,
) -> SolverResult:
    """Minimise ``energy(y)`` with Adam (gradient by autograd), batched.

    Args:
        energy: ``y -> (B,)`` per-sample energies (or a scalar total); differentiable.
        y0: ``(B, ...)`` initial point (not modified).
        lr: Adam learning rate (> 0); ``**adam_kwargs`` go to ``torch.optim.Adam``.
        max_iter: iteration limit.
        tol, patience: stop (``"tol"``) when the total energy has not improved on its best value
            by a relative ``tol`` for ``patience`` consecutive iterations (``tol=0`` disables).
        project: ``y -> y`` projection applied after every step (constraints: box, fixed values).
        callback: ``callback(k, y, energy)`` after iteration ``k``; returning ``True`` stops.
        history_every: record the total energy every this many iterations.
        progress: show a tqdm progress bar.
        reeval: evaluate the energy again after each step for the history, ``tol`` and the callback
            (default). ``False`` reports the energy computed for the step instead, the energy at the
            point the step started from (one iteration late): it saves one energy evaluation per
            iteration, for expensive or stochastic energies (e.g. a CNN feature loss with jitter).

    Returns:
        :class:`SolverResult` with ``extra["energy"]`` the last per-sample energies.
    """
    check_nonneg(lr, "lr", strict=True)
    return _run_torch_optim(energy, y0, lambda ps: torch.optim.Adam(ps, lr=lr, **adam_kwargs), max_iter, tol,
                            patience, project, callback, progress, history_every, "adam", False, reeval)


def minimize_lbfgs(
    energy: Callable[[Tensor], Tensor],
    y0: Tensor,
    *,
    lr: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-9,
    patience: int = 3,
    history_size: int = 10,
    line_search: str | None = "strong_wolfe",
    project: Callable[[Tensor], Tensor] | None = None,
    callback: Callable[[int, Tensor, Tensor], bool | None] | None = None,
    history_every: int = 1,
    progress: bool = False,
) -> SolverResult:
    """Minimise ``energy(y)`` with L-BFGS (``torch.optim.LBFGS``), batched.

    The batch is one optimisation problem for L-BFGS (its energy is the sum over samples,
    which is separable, so the per-sample minimisers are found). One iteration is one L-BFGS
    step with its line search. ``project`` is applied after each step (projected L-BFGS, a
    heuristic; prefer proximal solvers for hard constraints).

    Args:
        energy: ``y -> (B,)`` or scalar; differentiable (smooth: use eps-smoothed TV).
        y0: ``(B, ...)`` initial point.
        lr: L-BFGS initial step.
        max_iter, tol, patience, project, callback, history_every, progress: as :func:`minimize_adam`.
        history_size: L-BFGS memory.
        line_search: ``"strong_wolfe"`` or ``None``.

    Returns:
        :class:`SolverResult`.
    """
    check_option(line_search, "line_search", ("strong_wolfe", None))
    check_positive_int(history_size, "history_size")
    check_nonneg(lr, "lr", strict=True)

    def factory(ps):
        return torch.optim.LBFGS(ps, lr=lr, max_iter=1, history_size=history_size,
                                 line_search_fn=line_search, tolerance_grad=0.0, tolerance_change=0.0)

    return _run_torch_optim(energy, y0, factory, max_iter, tol, patience, project, callback, progress,
                            history_every, "lbfgs", True)
