"""One-Euro filter: analytic behaviour, jitter reduction, bounded lag."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facerig.landmarks import OneEuroFilter

DT = 1.0 / 30.0


def _run(filt, xs, dt=DT):
    return np.array([filt(x, k * dt) for k, x in enumerate(xs)])


def test_beta_zero_is_an_exponential_smoother():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(50, 4, 3))
    out = _run(OneEuroFilter(min_cutoff=2.0, beta=0.0), xs)
    a = 1.0 / (1.0 + 1.0 / (2 * math.pi * 2.0 * DT))
    ref = [xs[0]]
    for x in xs[1:]:
        ref.append(a * x + (1 - a) * ref[-1])
    np.testing.assert_allclose(out, np.array(ref), rtol=1e-12, atol=1e-12)
    assert out.shape == xs.shape


def test_constant_signal_passes_unchanged():
    out = _run(OneEuroFilter(1.0, 3.0), [np.array([3.0, -7.0])] * 20)
    np.testing.assert_allclose(out, [[3.0, -7.0]] * 20, atol=1e-12)


def test_reduces_jitter_on_slow_noisy_signal():
    rng = np.random.default_rng(1)
    t = np.arange(300) * DT
    truth = 5.0 * np.sin(2 * math.pi * 0.2 * t)
    noisy = truth + rng.normal(scale=1.0, size=t.shape)
    err = {}
    for beta in (0.0, 0.05):
        out = _run(OneEuroFilter(min_cutoff=1.0, beta=beta), noisy[:, None])[:, 0]
        err[beta] = np.sqrt(np.mean((out - truth)[30:] ** 2))
        # frame-to-frame jitter drops a lot
        assert np.std(np.diff(out[30:])) < 0.35 * np.std(np.diff(noisy[30:]))
    raw_err = np.sqrt(np.mean((noisy - truth)[30:] ** 2))
    assert err[0.05] < 0.7 * raw_err
    # the speed term lowers the lag while the signal moves: better than a fixed cutoff
    assert err[0.05] < 0.85 * err[0.0]


def test_lag_on_a_ramp_is_bounded_and_shrinks_with_beta():
    v = 300.0  # units per second
    xs = v * np.arange(90) * DT
    lag0 = xs[-1] - _run(OneEuroFilter(min_cutoff=1.0, beta=0.0), xs[:, None])[-1, 0]
    # steady-state lag of a first-order low-pass on a ramp: v * tau / dt * dt = v * tau
    tau = 1.0 / (2 * math.pi * 1.0)
    assert lag0 == pytest.approx(v * tau, rel=0.02)
    lag = xs[-1] - _run(OneEuroFilter(min_cutoff=1.0, beta=0.05), xs[:, None])[-1, 0]
    assert 0 < lag < 0.2 * lag0
    # after a step the adaptive filter converges within a few frames
    step = np.r_[np.zeros(10), np.full(20, 100.0)]
    out = _run(OneEuroFilter(min_cutoff=1.0, beta=0.05), step[:, None])[:, 0]
    assert abs(out[10 + 5] - 100.0) < 5.0


def test_validation_and_reset():
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(min_cutoff=0.0)
    with pytest.raises(ValueError, match="beta"):
        OneEuroFilter(beta=-1.0)
    f = OneEuroFilter()
    f(np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="increase"):
        f(np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="shape"):
        f(np.zeros(4), 1.0)
    f.reset()
    np.testing.assert_array_equal(f(np.ones(4), 0.0), np.ones(4))
