"""Linear finite-difference operators behind total variation.

Signals are channels-last and batched: a 1-D signal is ``(B, N, C)``, a 2-D image is
``(B, H, W, C)`` (``ndim`` says which). Differences are forward differences with a Neumann
boundary (the difference past the last sample is zero), the discretisation used by Chambolle
(2004) and by ``skimage.restoration.denoise_tv_chambolle``.

``finite_diff`` returns the differences stacked on a new leading axis, ``(ndim, *x.shape)``;
``divergence`` is minus its adjoint, so ``<finite_diff(x), p> == -<x, divergence(p)>``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["finite_diff", "divergence", "check_signal", "TV_LIPSCHITZ"]

#: ||finite_diff||^2 <= 4 * ndim: the Lipschitz constant of x -> finite_diff^T finite_diff x.
TV_LIPSCHITZ = {1: 4.0, 2: 8.0}


def check_signal(x: Tensor, ndim: int, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, N, C)`` (ndim=1) or ``(B, H, W, C)`` (ndim=2)."""
    if ndim not in (1, 2):
        raise ValueError(f"ndim: expected 1 (signals) or 2 (images), got {ndim!r}")
    if x.dim() != ndim + 2:
        layout = "(B, N, C)" if ndim == 1 else "(B, H, W, C)"
        raise ValueError(f"{name}: expected a {ndim}-D signal of shape {layout}, got shape {tuple(x.shape)}")


def _diff_axis(x: Tensor, axis: int) -> Tensor:
    """Forward difference along ``axis`` with a zero last slice (same shape as ``x``)."""
    out = torch.zeros_like(x)
    n = x.shape[axis]
    if n > 1:
        out.narrow(axis, 0, n - 1).copy_(x.narrow(axis, 1, n - 1) - x.narrow(axis, 0, n - 1))
    return out


def _div_axis(p: Tensor, axis: int, out: Tensor | None = None) -> Tensor:
    """Backward difference of ``p`` along ``axis`` (minus the adjoint of ``_diff_axis``).

    The last slice of ``p`` along ``axis`` is ignored (its difference is zero by construction).
    The result is added to ``out`` when given.
    """
    n = p.shape[axis]
    if out is None:
        out = torch.zeros_like(p)
    if n > 1:
        head = p.narrow(axis, 0, n - 1)
        out.narrow(axis, 0, n - 1).add_(head)
        out.narrow(axis, 1, n - 1).sub_(head)
    return out


def finite_diff(x: Tensor, ndim: int = 2) -> Tensor:
    """Forward differences of a batched signal along its spatial axes.

    Args:
        x: ``(B, N, C)`` for ``ndim=1`` or ``(B, H, W, C)`` for ``ndim=2``; any float dtype/device.
        ndim: number of spatial axes (1 or 2).

    Returns:
        ``(ndim, *x.shape)``: entry ``d`` holds ``x[i+1] - x[i]`` along spatial axis ``d``
        (rows first), zero on the last slice (Neumann boundary).
    """
    check_signal(x, ndim)
    return torch.stack([_diff_axis(x, 1 + d) for d in range(ndim)])


def divergence(p: Tensor, ndim: int = 2) -> Tensor:
    """Discrete divergence, minus the adjoint of :func:`finite_diff`.

    Args:
        p: ``(ndim, *x.shape)`` a field of differences (see :func:`finite_diff`).
        ndim: number of spatial axes (1 or 2).

    Returns:
        ``x.shape`` tensor with ``<finite_diff(x), p> == -<x, divergence(p)>`` for every ``x``.
    """
    if p.dim() < 1 or p.shape[0] != ndim:
        raise ValueError(f"p: expected a leading axis of size ndim={ndim}, got shape {tuple(p.shape)}")
    check_signal(p[0], ndim, "p[0]")
    out = torch.zeros_like(p[0])
    for d in range(ndim):
        _div_axis(p[d], 1 + d, out)
    return out


def pointwise_norm(g: Tensor, isotropic: bool = True, channels: str = "separate", eps: float = 0.0) -> Tensor:
    """The norm inside total variation, taken at every sample.

    Args:
        g: ``(ndim, B, ..., C)`` differences (from :func:`finite_diff`).
        isotropic: ``True`` takes the Euclidean norm over the ``ndim`` directions, ``False`` the
            absolute value of each direction (anisotropic TV).
        channels: ``"separate"`` treats channels independently (TV is the sum over channels,
            as ``denoise_tv_chambolle(..., channel_axis=-1)``); ``"coupled"`` takes the
            Euclidean norm over channels as well (vectorial TV).
        eps: smoothing, ``sqrt(|.|^2 + eps^2)`` instead of ``|.|`` (differentiable at 0).

    Returns:
        The norms, broadcastable to ``g``: ``(1, B, ..., C)`` (isotropic, separate),
        ``(1, B, ..., 1)`` (isotropic, coupled), ``(ndim, B, ..., C)`` (anisotropic, separate) or
        ``(ndim, B, ..., 1)`` (anisotropic, coupled).
    """
    dims = []
    if isotropic:
        dims.append(0)
    if channels == "coupled":
        dims.append(g.dim() - 1)
    if not dims:
        return (g.square() + eps * eps).sqrt() if eps > 0 else g.abs()
    sq = g.square().sum(dim=dims, keepdim=True)
    return (sq + eps * eps).sqrt() if eps > 0 else sq.sqrt()
