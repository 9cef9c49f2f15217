"""Argument validation shared by the energy core (internal).

Every public entry point of :mod:`facerig.energy` validates its inputs with these helpers so
that bad input raises ``ValueError`` / ``TypeError`` naming the argument and what was expected.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor


def as_tensor(x, name: str, *, dtype: torch.dtype | None = None, device=None) -> Tensor:
    """Convert ``x`` (tensor, NumPy array, number) to a floating tensor, naming ``name`` on error.

    Integer NumPy images (``uint8``) are scaled to [0, 1]; other integer inputs are cast.
    Tensors keep their dtype and device unless ``dtype`` / ``device`` are given.
    """
    if isinstance(x, Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        if x.dtype == np.uint8:
            t = torch.from_numpy(x.astype(np.float32) / 255.0)
        elif x.dtype == np.uint16:
            t = torch.from_numpy(x.astype(np.float32) / 65535.0)
        else:
            t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, (int, float)):
        t = torch.tensor(float(x))
    else:
        raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if t.dtype == torch.bool or not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if dtype is not None or device is not None:
        t = t.to(dtype=dtype or t.dtype, device=device or t.device)
    return t


def check_finite(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` when ``x`` holds NaN or Inf."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or Inf values; expected finite numbers")


def check_nonneg(value, name: str, *, strict: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` (number or tensor) is finite and >= 0 (> 0 if strict)."""
    t = value if isinstance(value, Tensor) else torch.as_tensor(float(value))
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    bad = (t <= 0) if strict else (t < 0)
    if bool(bad.any()):
        what = "positive" if strict else "non-negative"
        shown = value if not isinstance(value, Tensor) or value.numel() == 1 else "a tensor with bad entries"
        raise ValueError(f"{name}: must be {what}, got {shown}")


def check_option(value, name: str, options: Iterable) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``options``."""
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{name}: unknown option {value!r}; expected one of {', '.join(map(repr, options))}")


def check_positive_int(value, name: str, *, minimum: int = 1) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")


def check_broadcast(a: Tensor, b_shape: torch.Size | tuple, name: str, target: str) -> None:
    """Raise ``ValueError`` unless ``a`` broadcasts to ``b_shape`` without changing it."""
    try:
        out = torch.broadcast_shapes(a.shape, tuple(b_shape))
    except RuntimeError:
        out = None
    if out != tuple(b_shape):
        raise ValueError(
            f"{name}: shape {tuple(a.shape)} does not broadcast to the shape of {target} {tuple(b_shape)}"
        )


def per_sample(value, x: Tensor, name: str) -> Tensor | float:
    """Return a scalar as float or a per-sample ``(B,)`` tensor reshaped to ``(B, 1, ..., 1)``.

    Used for step sizes and weights that may differ per batch element.
    """
    if isinstance(value, Tensor):
        if value.numel() == 1:
            return float(value)
        if value.dim() != 1 or value.shape[0] != x.shape[0]:
            raise ValueError(
                f"{name}: expected a number or a tensor of shape ({x.shape[0]},) (one per sample), "
                f"got shape {tuple(value.shape)}"
            )
        return value.to(dtype=x.dtype, device=x.device).reshape((-1,) + (1,) * (x.dim() - 1))
    return float(value)
