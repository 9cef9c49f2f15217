"""Gatys et al. (2016): style transfer by minimising the energy over the image with L-BFGS.

The solver is the core's :func:`facerig.energy.minimize_lbfgs`; this module only builds the energy
function ``y -> E(y)`` (with masks and an optional extra term, e.g. the temporal term of video).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from facerig.energy import SolverResult, minimize_lbfgs
from facerig.style.energy import StyleEnergy, StyleTargets
from facerig.style.post import apply_mask

__all__ = ["gatys"]


def gatys(energy: StyleEnergy, targets: StyleTargets, *, iterations: int = 200, init: str | Tensor = "content",
          intensity: float = 1.0, layer_weights=None, mask: Tensor | None = None,
          extra: Callable[[Tensor], Tensor] | None = None, seed: int = 0, progress: bool = False,
          callback=None) -> SolverResult:
    """Minimise ``E(y)`` over the image ``y`` with L-BFGS (strong-Wolfe line search).

    Args:
        energy: the :class:`StyleEnergy`.
        targets: :meth:`StyleEnergy.targets` of the content ``(B, H, W, 3)``.
        iterations: L-BFGS iterations (each one line search, a few energy evaluations).
        init: ``"content"`` (start from the content image), ``"noise"`` (uniform noise, seeded) or
            an ``(B, H, W, 3)`` start (e.g. the previous video frame's result).
        intensity, layer_weights: see :meth:`StyleEnergy.breakdown`.
        mask: ``(B, H, W)`` in [0, 1]: where the style applies; the solution is
            ``mask * y + (1 - mask) * content`` and the style term uses the masked statistics.
        extra: an additional term ``y -> (B,)`` added to the energy (e.g. temporal consistency).
        seed: seed of the noise start.
        progress, callback: as :func:`facerig.energy.minimize_lbfgs`.

    Returns:
        :class:`~facerig.energy.SolverResult`; ``x`` is the stylised ``(B, H, W, 3)`` clamped to
        [0, 1] (with the mask applied), ``history`` the total energy per iteration.
    """
    c = targets.image
    if isinstance(init, Tensor):
        if init.shape != c.shape:
            raise ValueError(f"init: shape {tuple(init.shape)} does not match the content's {tuple(c.shape)}")
        y0 = init.to(c)
    elif init == "content":
        y0 = c.clone()
    elif init == "noise":
        g = torch.Generator().manual_seed(seed)
        y0 = torch.rand(c.shape, generator=g).to(c)
    else:
        raise ValueError(f"init: expected 'content', 'noise' or a tensor, got {init!r}")

    def f(y: Tensor) -> Tensor:
        ym = apply_mask(y, c, mask)
        e = energy(ym, targets, intensity, layer_weights, mask)
        return e if extra is None else e + extra(ym)

    res = minimize_lbfgs(f, y0, max_iter=iterations, tol=0.0, progress=progress, callback=callback)
    res.x = apply_mask(res.x, c, mask).clamp(0, 1)
    return res
