"""What the solvers share: :class:`SolverResult` and the checks of their inputs (private helpers)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from facerig.energy._checks import check_finite

__all__ = ["SolverResult"]


@dataclass
class SolverResult:
    """What every solver returns.

    Attributes:
        x: the solution, same shape as the initial point.
        history: total energy (summed over the batch) at each recorded iteration
            (every ``history_every`` iterations where the solver offers it).
        n_iter: number of iterations performed.
        stop_reason: ``"tol"`` (relative energy change below ``tol``), ``"max_iter"``,
            ``"callback"`` (the callback returned ``True``), ``"gap"`` (duality gap below
            tolerance), ``"step"`` (step/damping became too small to progress).
        converged: ``True`` when a convergence criterion (not the iteration limit) stopped it.
        extra: solver-specific values (e.g. final per-sample energies ``"energy"``, step sizes).
    """

    x: Tensor
    history: list[float] = field(default_factory=list)
    n_iter: int = 0
    stop_reason: str = "max_iter"
    converged: bool = False
    extra: dict = field(default_factory=dict)


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def _per_sample_energy(e: Tensor, batch: int) -> Tensor:
    """Energy as a ``(B,)`` tensor, or a 0-d tensor when the callable returned the batch total."""
    e = e.detach()
    if e.dim() == 0:
        return e
    if e.shape != (batch,):
        raise ValueError(f"f: expected the energy to be a scalar or of shape ({batch},), got {tuple(e.shape)}")
    return e


def _rel_change(prev: Tensor, cur: Tensor) -> float:
    """Largest relative energy change over the batch."""
    scale = torch.maximum(prev.abs(), cur.abs()).clamp(min=1e-30)
    return float(((prev - cur).abs() / scale).max())


def _check_start(y0, name: str = "y0") -> Tensor:
    if not isinstance(y0, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (B, ...)")
    if y0.dim() < 1:
        raise ValueError(f"{name}: expected at least one (batch) dimension")
    check_finite(y0, name)
    return y0.detach().clone()


def _energy_vector(e: Tensor, batch: int, name: str = "energy") -> Tensor:
    if e.dim() == 0:
        return e
    if e.shape != (batch,):
        raise ValueError(f"{name}: expected a scalar or a ({batch},) tensor, got shape {tuple(e.shape)}")
    return e
