"""facerig.timing: run counts, warm-up, wall vs CPU clocks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from facerig.timing import time_runs


def test_time_runs_counts_and_clocks():
    calls = []

    def sleep():  # 20 ms of wall time, almost no CPU time
        calls.append(1)
        time.sleep(0.02)
        return len(calls)

    t = time_runs(sleep, runs=3, warmup=2)
    assert len(calls) == 5 and t.result == 5 and t.wall.shape == t.cpu.shape == (3,)
    assert t.best >= 0.02 and t.median >= t.best and t.percentile(100) == pytest.approx(t.wall.max())
    assert t.median_cpu < 0.015  # sleeping costs (almost) no CPU time

    def spin():  # ~20 ms of CPU time
        t0 = time.process_time()
        while time.process_time() - t0 < 0.02:
            pass

    s = time_runs(spin, runs=2)
    assert np.all(s.cpu >= 0.02) and np.all(s.wall >= 0.0)
    synced = []
    time_runs(lambda: None, runs=2, warmup=1, sync=lambda: synced.append(1))
    assert len(synced) == 3  # once after the warm-up, once per run
    with pytest.raises(ValueError, match="runs"):
        time_runs(sleep, runs=0)
    with pytest.raises(ValueError, match="warmup"):
        time_runs(sleep, runs=1, warmup=-1)
