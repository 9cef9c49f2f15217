"""Face energy terms: values against brute force, residual forms, gradients (float64 gradcheck)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facerig.energy.terms import huber
from facerig.face import (CodePrior, FaceObservation, LandmarkTerm, PhotometricTerm, TemporalTerm, contour_correspondence,
                          contour_normals, face_energy, robust_residual, stacked_residuals)
from facerig.landmarks import MEDIAPIPE_FACE_OVAL


def _code(dec, yaw=0.3, dtype=torch.float64, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = dec.model
    code = dec.zero_code(1, image_size=size, dtype=dtype)
    code.identity = (torch.randn(1, m.n_identity, generator=g, dtype=dtype) * m.identity_std.to(dtype) * 0.5)
    code.expression = torch.rand(1, m.n_expression, generator=g, dtype=dtype) * 0.2
    code.albedo = torch.randn(1, m.n_albedo, generator=g, dtype=dtype) * m.albedo_std.to(dtype) * 0.3
    code.rotation = torch.tensor([[0.1, yaw, 0.05]], dtype=dtype)
    code.sh[:, 1:4] = 0.3
    return code


def _obs(dec, code, size, noise=1.5, with_image=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    dt = code.identity.dtype
    pp = torch.tensor([[size / 2 + 1.0, size / 2 - 2.0]], dtype=dt)
    ids = dec.model.landmarks_mediapipe468.indices
    lm = dec.landmarks2d(code, (size, size), pp, kind="mediapipe468").detach()
    lm = lm + noise * torch.randn(lm.shape, generator=g, dtype=dt)
    contour = torch.as_tensor(MEDIAPIPE_FACE_OVAL)
    w = torch.ones(468, dtype=dt)
    w[contour] = 0.5
    image = None
    if with_image:
        out = dec(code, (size, size), pp)
        image = (out.image + 0.05 * torch.rand(out.image.shape, generator=g, dtype=dt)).clamp(0, 1).detach()
    return FaceObservation(landmarks=lm, vertex_ids=ids[None].clone(), image_size=(size, size), principal_point=pp,
                           weights=w, contour=contour, normals=contour_normals(lm[:, contour], True), image=image)


def test_robust_residual_squares_to_huber():
    e = torch.linspace(-10, 10, 401, dtype=torch.float64)[None]
    for delta in (0.5, 3.0):
        r = robust_residual(e, delta)
        assert torch.allclose(r.square().sum(1), huber(e, delta=delta), rtol=1e-12)
        assert torch.equal(torch.sign(r), torch.sign(e))
    assert torch.allclose(robust_residual(e, None).square().sum(1), 0.5 * e.square().sum(1))


def test_landmark_term_brute_force_and_residuals(decoder64):
    dec = decoder64
    code = _code(dec)
    obs = _obs(dec, code, 96, noise=4.0)
    term = LandmarkTerm(dec, sigma=2.0, delta=1.5, tangent_weight=0.25)
    y = code.to_vector()
    # brute force: project every landmark vertex by hand
    verts = dec.vertices(code)[0]
    K = torch.tensor([[float(code.focal), 0, float(obs.principal_point[0, 0])],
                      [0, float(code.focal), float(obs.principal_point[0, 1])], [0, 0, 1]], dtype=torch.float64)
    p = verts @ K.T
    p = p[:, :2] / p[:, 2:]
    e = (p - obs.landmarks[0]) / 2.0
    c = obs.contour
    n = obs.normals[0]
    t = torch.stack([n[:, 1], -n[:, 0]], -1)
    ec = e[c]
    e[c] = torch.stack([(ec * n).sum(-1), (ec * t).sum(-1) * math.sqrt(0.25)], -1)
    a = e.abs()
    h = torch.where(a <= 1.5, 0.5 * e ** 2, 1.5 * (a - 0.75))
    expected = (h * obs.weights[:, None]).sum()
    assert torch.allclose(term(obs, y)[0], expected, rtol=1e-10)
    assert bool((a > 1.5).any()) and bool((a <= 1.5).any())  # both Huber regimes are exercised
    r = term.residuals(obs, y)
    assert r.shape == (1, 936)
    assert torch.allclose(r.square().sum(1), term(obs, y), rtol=1e-10)
    # pixel errors: plain 2D distances to the detections
    assert torch.allclose(term.pixel_errors(obs, y)[0], (p - obs.landmarks[0]).norm(dim=-1), rtol=1e-10)


def test_stacked_residuals_match_the_energy(decoder64):
    dec = decoder64
    codes = [_code(dec, yaw=0.1 * k, seed=k) for k in range(3)]
    from facerig.model import GraphicCode
    y = torch.cat([c.to_vector() for c in codes])
    obs0 = [_obs(dec, c, 80, seed=k) for k, c in enumerate(codes)]
    obs = FaceObservation(landmarks=torch.cat([o.landmarks for o in obs0]), vertex_ids=torch.cat([o.vertex_ids for o in obs0]),
                          image_size=(80, 80), principal_point=torch.cat([o.principal_point for o in obs0]),
                          weights=obs0[0].weights, contour=obs0[0].contour, normals=torch.cat([o.normals for o in obs0]))
    E = face_energy(dec, landmarks=1.5, identity=2.0, expression=3.0, albedo=0.5, temporal=4.0,
                    temporal_scales={"expression": 0.25, "rotation": 0.1, "translation": 2.0})
    r = stacked_residuals(E, obs, y)
    parts = E.breakdown(obs, y)
    assert torch.allclose(r.square().sum(1), parts["total"], rtol=1e-10)
    assert set(parts) == {"landmarks", "identity", "expression", "albedo", "temporal", "total"}
    m = dec.model
    sl = GraphicCode.slices(dec.sizes)
    assert torch.allclose(parts["identity"], 2.0 * ((y[:, sl["identity"]] / m.identity_std) ** 2).sum(1))
    d = torch.cat([(y[1:, sl["expression"]] - y[:-1, sl["expression"]]) / 0.25,
                   (y[1:, sl["rotation"]] - y[:-1, sl["rotation"]]) / 0.1,
                   (y[1:, sl["translation"]] - y[:-1, sl["translation"]]) / 2.0], 1)
    assert parts["temporal"][0] == 0
    assert torch.allclose(parts["temporal"][1:], 4.0 * d.square().sum(1))
    with pytest.raises(ValueError, match="photometric"):
        stacked_residuals(face_energy(dec, photometric=1.0), obs, y)


@pytest.mark.parametrize("which", ["landmarks", "prior", "temporal"])
def test_term_gradients_gradcheck(decoder64, which):
    dec = decoder64
    code = _code(dec)
    obs = _obs(dec, code, 64, noise=3.0)
    if which == "landmarks":
        term = LandmarkTerm(dec, sigma=1.0, delta=2.0)
    elif which == "prior":
        term = CodePrior(dec.sizes, "expression", dec.model.expression_std, mean=0.1)
    else:
        term = TemporalTerm(dec.sizes, scales={"expression": 0.3})
    y0 = code.to_vector()
    if which == "temporal":
        y0 = torch.cat([y0, y0 + 0.01 * torch.randn_like(y0)])
    # a random 12-dimensional subspace of the code (all parts: identity ... sh)
    g = torch.Generator().manual_seed(3)
    basis = torch.randn(12, y0.shape[1], generator=g, dtype=torch.float64) * 0.05
    a = torch.zeros(12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: term(obs, y0 + a @ basis).sum(), (a,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_photometric_term_gradient_and_value(decoder64):
    dec = decoder64
    code = _code(dec, yaw=0.2)
    obs = _obs(dec, code, 48, with_image=True)
    term = PhotometricTerm(dec, eps=0.05)
    y = code.to_vector()
    # value: mean over covered skin pixels of the per-channel Charbonnier loss
    out = dec(y, (48, 48), obs.principal_point)
    w = out.skin * out.alpha
    d = out.image - obs.image
    expected = (w * ((d ** 2 + 0.05 ** 2).sqrt() - 0.05)).sum() / w.sum()
    assert torch.allclose(term(obs, y)[0], expected, rtol=1e-10)
    # gradient w.r.t. the light and albedo (coverage does not change: the energy is smooth there)
    from facerig.model import GraphicCode
    sl = GraphicCode.slices(dec.sizes)
    idx = torch.cat([torch.arange(sl["albedo"].start, sl["albedo"].start + 4), torch.arange(sl["sh"].start, sl["sh"].stop, 4)])
    a = torch.zeros(len(idx), dtype=torch.float64, requires_grad=True)

    def f(a):
        return term(obs, y.index_add(1, idx, a[None] * 0.1)).sum()

    assert torch.autograd.gradcheck(f, (a,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_photometric_term_clamp_ignores_overexposure(decoder64):
    """clamp=True compares the render clipped to [0, 1] (a saturated photo): an over-exposed render of
    a white photo costs nothing, the unclamped term charges the excess, and both agree when nothing
    saturates."""
    from facerig.face import ambient_sh, face_energy

    dec = decoder64
    code = _code(dec, yaw=0.1)
    code.sh = ambient_sh(1, 10.0, dtype=torch.float64)  # irradiance 10: every skin pixel is over-exposed
    obs = _obs(dec, code, 48, with_image=True)
    obs.image = torch.ones_like(obs.image)
    y = code.to_vector()
    assert float(PhotometricTerm(dec, eps=0.05, clamp=True)(obs, y)[0]) < 1e-12
    assert float(PhotometricTerm(dec, eps=0.05)(obs, y)[0]) > 0.5
    code.sh = ambient_sh(1, 0.5, dtype=torch.float64)  # dim light: nothing clips
    y = code.to_vector()
    obs.image = torch.full_like(obs.image, 0.2)
    a = PhotometricTerm(dec, eps=0.05, clamp=True)(obs, y)
    assert torch.allclose(a, PhotometricTerm(dec, eps=0.05)(obs, y), rtol=1e-12)
    e = face_energy(dec, landmarks=0, photometric=1.0, identity=0, expression=0, albedo=0, photo_eps=0.05,
                    photo_clamp=True)
    assert e.terms["photometric"].clamp and torch.allclose(e(obs, y), a)


def test_contour_normals_of_a_circle_are_radial():
    th = torch.linspace(0, 2 * math.pi, 37, dtype=torch.float64)[:-1]
    pts = torch.stack([10 + 5 * th.cos(), 20 + 5 * th.sin()], -1)[None]
    n = contour_normals(pts, closed=True)
    radial = torch.stack([th.cos(), th.sin()], -1)[None]
    assert torch.allclose((n * radial).sum(-1).abs(), torch.ones(1, 36, dtype=torch.float64), atol=1e-9)
    n_open = contour_normals(pts[:, :10], closed=False)
    assert torch.allclose(n_open.norm(dim=-1), torch.ones(1, 10, dtype=torch.float64))


def test_contour_correspondence_picks_silhouette_vertices(decoder):
    dec = decoder
    code = dec.zero_code(1, image_size=200)
    code.rotation = torch.tensor([[0.0, 0.8, 0.0]])  # ~46 deg yaw
    verts = dec.vertices(code)
    pix = dec.project(verts, code.focal, (200, 200))
    oval = torch.as_tensor(MEDIAPIPE_FACE_OVAL)
    # "detections" on the image-space outline of the projected face: the convex hull
    from scipy.spatial import ConvexHull
    xy = pix[0, :, :2].numpy()
    hull = xy[ConvexHull(xy).vertices]
    own = pix[0, oval, :2]
    targets = torch.as_tensor(hull[np.argmin(((own.numpy()[:, None] - hull[None]) ** 2).sum(-1), 1)], dtype=torch.float32)[None]
    ids = contour_correspondence(pix, verts, dec.faces, targets, oval)
    d_new = (pix[0, ids[0], :2] - targets[0]).norm(dim=-1)
    d_own = (own - targets[0]).norm(dim=-1)
    assert bool((d_new <= d_own + 1e-6).all())
    assert float(d_new.mean()) < 0.5 * float(d_own.mean())  # the far side slides onto the silhouette
    changed = ids[0] != oval
    assert bool(changed.any()) and bool((~changed).any())
