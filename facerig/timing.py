"""Timing of repeated calls, shared by the benchmarks (``tools/bench_*.py``).

:func:`time_runs` calls ``fn`` ``runs`` times after ``warmup`` untimed calls and returns a
:class:`Timings` with the wall-clock and process-CPU seconds of every run (CPU time counts all
threads of this process, not worker processes). ``sync`` (e.g. ``torch.cuda.synchronize``) is
called after each call so GPU work is inside the measurement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["Timings", "time_runs"]


@dataclass
class Timings:
    """Seconds per run: ``wall`` (runs,) wall clock, ``cpu`` (runs,) process CPU time; ``result``: the
    last call's return value."""

    wall: np.ndarray
    cpu: np.ndarray
    result: Any = field(default=None, repr=False)

    @property
    def median(self) -> float:
        """Median wall-clock seconds."""
        return float(np.median(self.wall))

    @property
    def best(self) -> float:
        """Fastest wall-clock seconds."""
        return float(np.min(self.wall))

    @property
    def median_cpu(self) -> float:
        """Median process CPU seconds."""
        return float(np.median(self.cpu))

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of the wall-clock seconds."""
        return float(np.percentile(self.wall, q))


def time_runs(fn: Callable[[], Any], runs: int, warmup: int = 0, sync: Callable[[], None] | None = None) -> Timings:
    """Call ``fn()`` ``warmup`` times untimed, then ``runs`` times timed; see :class:`Timings`."""
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs: expected an int >= 1, got {runs!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup: expected an int >= 0, got {warmup!r}")
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    wall, cpu, out = [], [], None
    for _ in range(runs):
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = fn()
        if sync is not None:
            sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return Timings(np.asarray(wall), np.asarray(cpu), out)
