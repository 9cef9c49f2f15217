"""Input validation and NumPy <-> torch conversion shared by the sparse-coding API.

Every public entry point of :mod:`facerig.sparse` accepts NumPy arrays or torch tensors and returns
the same kind it was given (a tensor on the input's device, or a NumPy array). Bad input raises a
``ValueError`` / ``TypeError`` that names the argument and says what was expected.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

__all__ = [
    "check_alpha",
    "check_dictionary",
    "check_positive_int",
    "check_samples",
    "to_output",
]


def _as_tensor(value: Any, name: str, dtype: torch.dtype | None = None,
               device: torch.device | None = None) -> tuple[torch.Tensor, bool]:
    """Return ``(tensor, was_numpy)``; lists / tuples are treated like NumPy input."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        was_numpy = False
    elif isinstance(value, (np.ndarray, list, tuple)) or np.isscalar(value):
        arr = np.asarray(value)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64)
        t = torch.from_numpy(np.ascontiguousarray(arr))
        was_numpy = True
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if dtype is not None or device is not None:
        t = t.to(dtype=dtype if dtype is not None else t.dtype,
                 device=device if device is not None else t.device)
    return t, was_numpy


def check_alpha(alpha: Any, name: str = "alpha") -> float:
    """Validate a regularisation weight: a finite real number >= 0."""
    if isinstance(alpha, torch.Tensor) and alpha.numel() == 1:
        alpha = alpha.item()
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 0, got {type(alpha).__name__}")
    alpha = float(alpha)
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {alpha}")
    return alpha


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """Validate an integer parameter ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_dictionary(dictionary: Any, name: str = "dictionary", dtype: torch.dtype | None = None,
                     device: torch.device | None = None) -> tuple[torch.Tensor, bool]:
    """Validate a dictionary of shape ``(n_atoms, n_features)``.

    Returns ``(D, was_numpy)`` with ``D`` a floating tensor. Raises ``ValueError`` for a wrong
    rank, zero atoms or features, non-finite entries, or an atom of zero norm (such an atom makes
    the Lasso ill-posed: its code is arbitrary).
    """
    D, was_numpy = _as_tensor(dictionary, name, dtype, device)
    if D.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_atoms, n_features), got shape {tuple(D.shape)}")
    if D.shape[0] == 0:
        raise ValueError(f"{name} has zero atoms (shape {tuple(D.shape)}); it needs at least one row")
    if D.shape[1] == 0:
        raise ValueError(f"{name} has zero features (shape {tuple(D.shape)})")
    if not bool(torch.isfinite(D).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    norms = D.norm(dim=1)
    if bool((norms == 0).any()):
        bad = torch.nonzero(norms == 0).flatten()[:5].tolist()
        raise ValueError(f"{name} has atoms (rows) of zero norm, e.g. rows {bad}; remove or "
                         "re-initialise them")
    return D, was_numpy


def check_samples(X: Any, n_features: int | None = None, name: str = "X",
                  dtype: torch.dtype | None = None,
                  device: torch.device | None = None) -> tuple[torch.Tensor, bool]:
    """Validate samples of shape ``(n_samples, n_features)``; returns ``(X, was_numpy)``."""
    T, was_numpy = _as_tensor(X, name, dtype, device)
    if T.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(T.shape)}")
    if T.shape[0] == 0:
        raise ValueError(f"{name} has no samples (shape {tuple(T.shape)})")
    if n_features is not None and T.shape[1] != n_features:
        raise ValueError(f"{name} has {T.shape[1]} features but the dictionary has {n_features} "
                         f"(X must be (n_samples, n_features), dictionary (n_atoms, n_features))")
    if not bool(torch.isfinite(T).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return T, was_numpy


def to_output(t: torch.Tensor, as_numpy: bool) -> Any:
    """Return ``t`` as a NumPy array (``as_numpy``) or as a detached tensor."""
    t = t.detach()
    return t.cpu().numpy() if as_numpy else t
