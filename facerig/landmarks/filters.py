"""The One-Euro filter (Casiez, Roussel & Vogel, CHI 2012) for jittery landmark streams.

An adaptive first-order low-pass filter: its cutoff frequency rises with the signal's speed, so
slow motion (where jitter is visible) is smoothed strongly and fast motion (where lag is visible)
lightly::

    dx_hat  = lowpass(dx / dt, alpha(d_cutoff))
    cutoff  = min_cutoff + beta * |dx_hat|
    x_hat   = lowpass(x, alpha(cutoff)),   alpha(fc) = 1 / (1 + 1 / (2 pi fc dt))

Tuning (from the paper): set ``beta = 0`` and lower ``min_cutoff`` until jitter at rest is
acceptable, then raise ``beta`` until the lag during fast motion is acceptable.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["OneEuroFilter"]


def _alpha(cutoff, dt: float):
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Element-wise One-Euro filter for arrays of any fixed shape.

    Parameters
    ----------
    min_cutoff : float > 0
        Cutoff frequency at rest, in Hz (lower = smoother and more lag at rest).
    beta : float >= 0
        Speed coefficient: the cutoff grows by ``beta * |speed|`` Hz, with speed in
        (signal units) per second. It has the inverse unit of the signal: rescale it when you
        rescale the signal.
    d_cutoff : float > 0
        Cutoff frequency (Hz) of the speed estimate.

    Call :meth:`__call__` with successive samples and their times in seconds (strictly increasing);
    the first sample passes through unchanged. :meth:`reset` forgets the state.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if not (np.isfinite(min_cutoff) and min_cutoff > 0):
            raise ValueError(f"min_cutoff must be a positive frequency in Hz, got {min_cutoff!r}")
        if not (np.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be >= 0, got {beta!r}")
        if not (np.isfinite(d_cutoff) and d_cutoff > 0):
            raise ValueError(f"d_cutoff must be a positive frequency in Hz, got {d_cutoff!r}")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget the filter state (the next sample passes through unchanged)."""
        self._x = None
        self._dx = None
        self._t = None

    def __call__(self, x, t: float) -> np.ndarray:
        """Filter one sample.

        ``x``: array-like of any shape (constant between calls), ``t``: its time in seconds.
        Returns the filtered sample as float64 with ``x``'s shape.
        """
        x = np.asarray(x, dtype=np.float64)
        t = float(t)
        if self._x is None:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"x changed shape from {self._x.shape} to {x.shape}; call reset() first")
        dt = t - self._t
        if not dt > 0:
            raise ValueError(f"timestamps must increase strictly: got t={t} after t={self._t}")
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1.0 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x = a * x + (1.0 - a) * self._x
        self._t = t
        return self._x.copy()
