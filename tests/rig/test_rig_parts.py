"""facerig.rig pieces: deformation transfer, jitter, keyframes, interpolation over lost frames."""

from __future__ import annotations

import numpy as np
import pytest

from facerig.model import load_model
from facerig.rig import deformation_transfer, jitter, select_keyframes
from facerig.rig.pipeline import _interpolate_lost


@pytest.fixture(scope="module")
def model():
    return load_model("default")


def test_transfer_onto_itself_and_rigid_copies(model):
    S0 = model.mean.double().numpy()
    D = model.expression_basis.double().numpy()[:6]
    f = model.faces.numpy()
    np.testing.assert_allclose(deformation_transfer(S0, D, S0, f), D, atol=1e-5 * np.abs(D).max())
    # a scaled, moved target: the deltas scale with it
    out = deformation_transfer(S0, D, 1.3 * S0 + np.array([3.0, -1.0, 2.0]), f)
    c = lambda a: a - a.mean(1, keepdims=True)  # noqa: E731  (equal up to a translation ...)
    np.testing.assert_allclose(c(out), c(1.3 * D), atol=1e-4 * np.abs(D).max())
    assert np.abs(out - 1.3 * D).max() < 0.005 * np.abs(D).max()  # (... which is small)
    # a stretched face: the result minimises the transfer objective (brute-force comparisons)
    from facerig.rig.transfer import triangle_frames

    T0 = S0 @ np.diag([1.2, 1.0, 0.9])
    out = deformation_transfer(S0, D, T0, f)
    Q = triangle_frames(S0[None] + D, f) @ np.linalg.inv(triangle_frames(S0, f))[None]
    want = (Q @ triangle_frames(T0, f)[None])[..., :2]

    def objective(deltas):
        return ((triangle_frames(T0[None] + deltas, f)[..., :2] - want) ** 2).sum()

    best = objective(out)
    rng = np.random.default_rng(0)
    assert best < objective(D @ np.diag([1.2, 1.0, 0.9])) and best < objective(D)
    for _ in range(3):
        assert best < objective(out + 1e-3 * rng.normal(size=out.shape))


def test_transfer_bad_input(model):
    S0 = model.mean.numpy()
    with pytest.raises(ValueError, match="source_shapes"):
        deformation_transfer(S0, S0, S0, model.faces.numpy())


def test_jitter_is_the_mean_acceleration():
    t = np.arange(10, dtype=float)
    lin = np.stack([2 * t, -t], 1)[:, None]  # (T, 1, 2) constant velocity: no jitter
    assert jitter(lin) == pytest.approx(0.0, abs=1e-12)
    quad = np.stack([0.5 * t ** 2, 0 * t], 1)[:, None]  # constant acceleration 1
    assert jitter(quad) == pytest.approx(1.0)
    alt = ((-1.0) ** t)[:, None]  # (T, K) weights: |1 - 2(-1) + 1| = 4
    assert jitter(alt) == pytest.approx(4.0)
    valid = np.ones(10, bool)
    valid[5] = False  # triples touching frame 5 are skipped
    spike = np.zeros((10, 1))
    spike[5] = 7.0
    assert jitter(spike, valid) == pytest.approx(0.0)
    assert np.isnan(jitter(np.zeros((2, 3))))


def test_keyframes_are_diverse():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 30, 2))
    poses = np.repeat(base, 20, 0) + rng.normal(scale=1e-3, size=(20, 30, 2))
    poses[7, :10] += 0.8   # two distinct expressions
    poses[15, 10:] -= 0.8
    found = np.ones(20, bool)
    found[15] = False      # lost frames are never picked
    k = select_keyframes(poses * 50 + 100, found, k=3)
    assert len(k) == 3 and 7 in k and 15 not in k
    assert list(select_keyframes(poses, np.zeros(20, bool), k=3)) == []


def test_interpolate_lost():
    v = np.array([[0.0], [9.0], [9.0], [3.0], [9.0]])
    found = np.array([True, False, False, True, False])
    np.testing.assert_allclose(_interpolate_lost(v, found)[:, 0], [0, 1, 2, 3, 3])


def test_shape_prior_scales_the_expression_prior_and_validates(model):
    import torch

    from facerig.face import FaceDecoder
    from facerig.rig import FrameTracker, RigOptions
    from facerig.rig.track import LANDMARK_SHAPE_PRIOR

    dec = FaceDecoder(model)
    plain = FrameTracker(dec, (100, 100), 250.0)
    tr = FrameTracker(dec, (100, 100), 250.0, shape_prior={"eyeLook*": 4.0, "jawOpen": 9.0, "eyeLookIn_L": 100.0})
    names = list(model.expression_names)
    ratio = (plain.prior_exp.scale / tr.prior_exp.scale).square()  # prior factor per shape
    assert ratio[names.index("jawOpen")] == pytest.approx(9.0)
    assert ratio[names.index("eyeLookIn_L")] == pytest.approx(4.0)  # the first matching pattern wins
    assert ratio[names.index("eyeLookUp_R")] == pytest.approx(4.0)
    assert ratio[names.index("mouthSmile_L")] == pytest.approx(1.0)
    # the energy of a code grows by exactly the factor for a prior-only change of that weight
    y = torch.zeros(1, sum(dec.sizes.values()), dtype=torch.float64)
    y[0, tr.sl["expression"].start + names.index("jawOpen")] = 0.4
    assert float(tr.prior_exp(None, y)) == pytest.approx(9.0 * float(plain.prior_exp(None, y)))
    with pytest.raises(ValueError, match="shape_prior"):
        FrameTracker(dec, (100, 100), 250.0, shape_prior={"jawOpen": 0.0})
    assert all(any(n.startswith(p.rstrip("*")) for n in names) for p in LANDMARK_SHAPE_PRIOR)  # no dead patterns
    with pytest.raises(ValueError, match="identity_fit"):
        RigOptions(identity_fit="median")


def test_rig_options_key_fit_is_a_typed_fit_options():
    """RigOptions.key_fit holds a FitOptions: by default a copy of KEYFRAME_FIT (not shared between
    instances); a dict is converted with the fitter's defaults for the keys it lacks; else ValueError."""
    from facerig.face import FitOptions
    from facerig.rig import RigOptions
    from facerig.rig.pipeline import KEYFRAME_FIT

    a, b = RigOptions(), RigOptions()
    assert isinstance(a.key_fit, FitOptions) and a.key_fit == KEYFRAME_FIT and a.key_fit is not b.key_fit
    a.key_fit.crop_size = 200
    assert b.key_fit.crop_size == KEYFRAME_FIT.crop_size == 224
    c = RigOptions(key_fit={"photo_iterations": 3})
    assert c.key_fit == FitOptions(photo_iterations=3)
    assert RigOptions(key_fit=None).key_fit == FitOptions()
    with pytest.raises(ValueError, match="key_fit"):
        RigOptions(key_fit=3)


def test_smooth_tracks_zero_phase():
    from facerig.rig.track import smooth_tracks

    T = 40
    t = np.arange(T, dtype=float)
    lin = np.stack([np.stack([2 * t + 1, -t], 1)] * 3, 1)  # (T, 3, 2) constant velocity
    ok = np.ones(T, bool)
    out = smooth_tracks(lin, ok, [0.0, 1.5, 3.0])
    np.testing.assert_allclose(out[10:-10], lin[10:-10], atol=1e-9)  # no lag inside (symmetric kernel)
    np.testing.assert_array_equal(out[:, 0], lin[:, 0])  # sigma 0: untouched
    spike = np.zeros((T, 1, 1))
    spike[20] = 1.0
    out = smooth_tracks(spike, ok, 2.0)
    k = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    np.testing.assert_allclose(out[14:27, 0, 0], k / k.sum(), atol=1e-12)  # the normalised Gaussian
    ok[20] = False  # an invalid frame is left out of its neighbours' averages and kept as it was
    out = smooth_tracks(spike + 5.0, ok, 2.0)
    np.testing.assert_allclose(out[ok], 5.0)
    np.testing.assert_allclose(out[20], 6.0)
    with pytest.raises(ValueError, match="tracks"):
        smooth_tracks(np.zeros((5, 2)), np.ones(5, bool), 1.0)


def test_tracker_jacobian_is_the_finite_difference_one(model):
    """The tracker's closed-form Jacobian (landmark rows from the fitter's _vertex_jacobian,
    diagonal prior / sparsity / temporal rows) matches central differences of its residuals."""
    import torch

    from facerig.face import FaceDecoder, stacked_residuals
    from facerig.rig import FrameTracker

    dec = FaceDecoder(model, dtype=torch.float64)
    tr = FrameTracker(dec, (120, 160), 300.0, sigma=2.0, w_sparse=5.0, w_expression=5.0, eye_weight=5.0,
                      contour_weight=0.1, shape_prior={"jawOpen": 3.0})
    g = torch.Generator().manual_seed(0)
    y_true = tr.initial_code([0.1, 0.2, 0.05], [0.5, -0.3, 50.0],
                             torch.rand(1, model.n_expression, generator=g, dtype=torch.float64) * 0.3)
    lm = tr.landmarks2d(y_true) + np.random.default_rng(0).normal(0, 0.5, (468, 2))
    y0 = tr.initial_code([0.05, 0.15, 0.0], [0.0, 0.0, 48.0])
    y_prev, _ = tr.fit_landmarks(lm, y0, None)  # sets the contour correspondences
    sl = tr.sl
    tr.t_exp.mean, tr.t_rot.mean, tr.t_trans.mean = (y0[:, sl[k]] for k in ("expression", "rotation", "translation"))
    obs = tr.last_obs
    p = tr._pack(y_prev) + 0.02
    for energy in (tr.energy_cold, tr.energy_warm):
        J = tr._jacobian(energy, obs, y_prev, p)[0]
        f = lambda q: stacked_residuals(energy, obs, tr._unpack(q, y_prev))[0]  # noqa: E731
        h = 1e-6
        E = torch.eye(p.shape[1], dtype=torch.float64)
        J_fd = torch.stack([(f(p + h * E[i:i + 1]) - f(p - h * E[i:i + 1])) / (2 * h) for i in range(p.shape[1])], 1)
        assert J.shape == J_fd.shape
        assert float((J - J_fd).abs().max()) < 1e-4 * float(J_fd.abs().max())


def test_photometric_step_sees_the_open_jaw(model):
    """Landmarks that miss an opening jaw (a detector's bias) leave jawOpen low; the photometric
    step on the rendered frame (the pipeline's priors) moves it toward the jaw the pixels show."""
    import torch

    from facerig.face import FaceDecoder
    from facerig.rig import FrameTracker
    from facerig.rig.track import LANDMARK_SHAPE_PRIOR

    dec = FaceDecoder(model)
    H = W = 160
    tr = FrameTracker(dec, (H, W), 330.0, sigma=1.0, w_expression=5.0, w_sparse=5.0, eye_weight=5.0, lip_weight=5.0,
                      contour_weight=0.1, shape_prior=LANDMARK_SHAPE_PRIOR, photo_size=64, photo_iterations=4,
                      w_landmarks_photo=0.1)
    j = list(model.expression_names).index("jawOpen")

    def code(jaw):
        w = torch.zeros(1, model.n_expression)
        w[0, j] = jaw
        return tr.initial_code([0.0, 0.1, 0.0], [0.0, 0.5, 50.0], w)

    with torch.no_grad():
        img = tr.photo_dec(code(0.6), (H, W), tr.pp, background=torch.full((1, H, W, 3), 0.35)).image
    rgb = (img[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    lm = tr.landmarks2d(code(0.1))  # the biased detector: the jaw barely open
    y, _ = tr.fit_landmarks(lm, code(0.1), None)
    y = tr.fit_light(rgb, y)
    jaw0 = float(y[0, tr.sl["expression"]][j])
    y2 = tr.refine_photometric(rgb, lm, y, warm=False)
    jaw1 = float(y2[0, tr.sl["expression"]][j])
    assert jaw0 < 0.15 and 0.2 < jaw1 < 0.7, (jaw0, jaw1)
    others = y2[0, tr.sl["expression"]].clone()
    others[j] = 0
    assert float(others.max()) < 0.25  # no other shape takes the motion
    assert tr.refine_photometric(rgb, lm, y, warm=False).equal(y2)  # deterministic (resume relies on it)
    tr.photo_size = 0
    assert tr.refine_photometric(rgb, lm, y).equal(y)  # off: the landmark answer
