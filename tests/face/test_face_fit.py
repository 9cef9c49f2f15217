"""Fitting: synthetic round trips, the decoder's projections, landmark maps, results and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facerig.face import FitOptions, NoFaceError, fit_frames, fit_image
from facerig.landmarks import MEDIAPIPE468_TO_IBUG68, to_ibug68
from facerig.render import axis_angle_to_matrix, matrix_to_axis_angle

SIZE = 256
FOCAL = 640.0
# exact (noise-free) landmarks: a landmark noise scale of 1 px and weak priors
CLEAN = dict(sigma=1.0, w_identity=2.0, w_expression=2.0)


def _truth(dec, yaw_deg, pitch_deg, seed):
    g = torch.Generator().manual_seed(seed)
    s = dec.model.sample(1, g, expression_scale=0.4)
    code = dec.zero_code(1, image_size=SIZE)
    code.identity, code.expression, code.albedo = s["identity"], s["expression"], s["albedo"] * 0.5
    R = axis_angle_to_matrix(torch.tensor([0.0, np.radians(yaw_deg), 0.0])) @ axis_angle_to_matrix(
        torch.tensor([np.radians(pitch_deg), 0.0, 0.0]))
    code.rotation = matrix_to_axis_angle(R)[None].float()
    code.translation = code.translation + torch.tensor([[1.0, -0.5, 15.0]])
    code.focal[:] = FOCAL
    code.sh[:, 1:4] = 0.4
    return code


_DETAILED = {}


def _render(dec, code, detail=False):
    """The face of ``code`` on the model's 468-vertex mesh, or (``detail``) on its detail surface."""
    if detail:
        from facerig.face import FaceDecoder
        dec = _DETAILED.setdefault(id(dec), FaceDecoder(dec.model.detailed()))
    with torch.no_grad():
        out = dec(code, (SIZE, SIZE), antialias_edges=True, background=0.3)
    return (out.image[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)


def _angle_deg(r1, r2):
    R = axis_angle_to_matrix(r1.double()) @ axis_angle_to_matrix(r2.double()).transpose(-1, -2)
    return float(np.degrees(torch.linalg.norm(matrix_to_axis_angle(R))))


@pytest.mark.parametrize("yaw,pitch,seed", [(25.0, 10.0, 0), (-45.0, -15.0, 1)])
def test_round_trip_from_ground_truth_landmarks(decoder, yaw, pitch, seed):
    dec = decoder
    code = _truth(dec, yaw, pitch, seed)
    img = _render(dec, code)
    with torch.no_grad():
        lm468 = dec.landmarks2d(code, (SIZE, SIZE), kind="mediapipe468")[0].numpy()
        lm68 = dec.landmarks2d(code, (SIZE, SIZE), kind="ibug68")[0].numpy()
    # the image is drawn on the 468-vertex mesh: the fitter renders that mesh too (no detail level)
    fit = fit_image(img, dec, landmarks=lm468, focal=FOCAL, options=FitOptions(photo_iterations=3, photo_subdivide=0, **CLEAN),
                    keep_stages=True)
    assert _angle_deg(fit.code.rotation, code.rotation) < 2.0
    # depth trades off against the face's size (identity): within 5 % of the distance
    assert float((fit.code.translation - code.translation).norm()) < 0.05 * float(code.translation.norm())
    assert fit.landmark_error_px < 1.0
    assert float(np.linalg.norm(fit.landmarks68 - lm68, axis=1).mean()) < 1.0
    assert fit.landmarks68.shape == (68, 2) and fit.detected68.shape == (68, 2)
    # the shape stage recovers identity + expression better than the mean face with the same pose
    gt = dec.vertices(code)[0].detach().numpy()
    from facerig.model.geometry import umeyama

    def err(v):
        v = v.double().numpy()
        s, R, t = umeyama(v, gt)
        return np.linalg.norm(v @ (s * R).T + t - gt, axis=1).mean()

    assert err(fit.stages["landmarks"]) < 0.6 * err(fit.stages["pose"])
    assert set(fit.energies) >= {"landmarks", "photometric", "identity", "expression", "albedo", "total"}
    assert fit.timings["total"] > 0


def test_detail_level_round_trip(decoder):
    """A face drawn on the model's detail surface: the default fit (detail level from 120 px)
    recovers pose and landmarks, and its shape beats the same fit on the 468-vertex mesh only."""
    dec = decoder
    assert dec.model.has_detail
    code = _truth(dec, 25.0, 10.0, 0)
    img = _render(dec, code, detail=True)
    with torch.no_grad():
        lm468 = dec.landmarks2d(code, (SIZE, SIZE), kind="mediapipe468")[0].numpy()
    gt = dec.vertices(code)[0].detach().double().numpy()
    from facerig.model.geometry import umeyama

    def err(v):
        v = v.double().numpy()
        s, R, t = umeyama(v, gt)
        return np.linalg.norm(v @ (s * R).T + t - gt, axis=1).mean()

    fits = {sub: fit_image(img, dec, landmarks=lm468, focal=FOCAL, options=FitOptions(photo_iterations=5, photo_subdivide=sub, **CLEAN))
            for sub in (0, 1)}
    assert _angle_deg(fits[1].code.rotation, code.rotation) < 1.5
    assert fits[1].landmark_error_px < 1.0
    assert fits[1].landmark_error_px < 0.7 * fits[0].landmark_error_px
    assert err(fits[1].vertices.reshape(-1, 3)) < err(fits[0].vertices.reshape(-1, 3))


def test_round_trip_sparse_landmarks(decoder):
    dec = decoder
    code = _truth(dec, 15.0, -5.0, 2)
    with torch.no_grad():
        lm68 = dec.landmarks2d(code, (SIZE, SIZE), kind="ibug68")[0].numpy()
    fit = fit_image(np.zeros((SIZE, SIZE, 3), np.uint8), dec, landmarks=lm68, focal=FOCAL,
                    options=FitOptions(landmarks="sparse", photo_iterations=0, **CLEAN))
    assert _angle_deg(fit.code.rotation, code.rotation) < 4.0  # 68 points, 17 of them sliding
    assert fit.landmark_error_px < 1.0
    assert fit.landmark_error_dense_px is None


def test_fitted_landmarks_map_back_to_a_resized_input(decoder):
    """The crop/camera bookkeeping is exact: fitting a 2x upsampled photo gives 2x the landmarks."""
    dec = decoder
    code = _truth(dec, 10.0, 5.0, 3)
    with torch.no_grad():
        lm468 = dec.landmarks2d(code, (SIZE, SIZE), kind="mediapipe468")[0].numpy()
    opts = FitOptions(photo_iterations=0)
    a = fit_image(np.zeros((SIZE, SIZE, 3), np.uint8), dec, landmarks=lm468, focal=FOCAL, options=opts)
    b = fit_image(np.zeros((2 * SIZE, 2 * SIZE), np.uint8), dec, landmarks=2 * lm468, focal=2 * FOCAL, options=opts)
    assert b.image_size == (2 * SIZE, 2 * SIZE)
    assert np.abs(b.landmarks68 - 2 * a.landmarks68).max() < 0.05
    assert torch.allclose(a.vertices, b.vertices, atol=1e-2)


def test_ibug68_map_is_consistent(decoder):
    m = decoder.model
    assert m.landmarks_ibug68.indices.tolist() == list(MEDIAPIPE468_TO_IBUG68)
    assert to_ibug68(np.arange(468)[:, None]).ravel().tolist() == list(MEDIAPIPE468_TO_IBUG68)
    code = decoder.zero_code(2, image_size=128)
    code.rotation[1] = torch.tensor([0.1, -0.4, 0.0])
    with torch.no_grad():
        l68 = decoder.landmarks2d(code, (128, 160), kind="ibug68")
        l468 = decoder.landmarks2d(code, (128, 160), kind="mediapipe468")
        out = decoder(code, (128, 160))
    assert torch.equal(l68, to_ibug68(l468))
    # landmarks are the projected vertices; the default principal point is the image centre
    assert torch.allclose(out.landmarks, out.verts_pix[:, m.landmarks_ibug68.indices, :2])
    v = out.verts_cam[0, 4]
    f = float(code.focal[0])
    assert torch.allclose(out.verts_pix[0, 4, :2], torch.stack([f * v[0] / v[2] + 80, f * v[1] / v[2] + 64]), atol=1e-3)
    assert 0.1 < float(out.alpha.mean()) < 0.9 and float(out.skin.max()) <= 1.0 + 1e-5


def test_sh_ambient_agrees_with_model_and_renderer(decoder):
    from facerig.face import SH_AMBIENT
    from facerig.model import SH_UNIT_AMBIENT
    from facerig.render import sh_irradiance

    assert abs(SH_AMBIENT - SH_UNIT_AMBIENT) < 1e-9
    n = torch.nn.functional.normalize(torch.randn(1, 50, 3), dim=-1)
    assert torch.allclose(sh_irradiance(n, decoder.zero_code(1).sh), torch.ones(1, 50, 3), atol=1e-6)


def test_no_face_raises(decoder):
    with pytest.raises(NoFaceError, match="no face"):
        fit_image(np.full((120, 160, 3), 128, np.uint8), decoder)


def test_bad_landmarks_argument(decoder):
    with pytest.raises(ValueError, match="landmarks"):
        fit_image(np.zeros((64, 64, 3), np.uint8), decoder, landmarks=np.zeros((10, 2)))


def test_fit_frames_shares_identity(decoder):
    dec = decoder
    base = _truth(dec, 0.0, 0.0, 4)
    lms, imgs = [], []
    for k, yaw in enumerate((-20.0, 0.0, 25.0)):
        code = _truth(dec, yaw, 5.0, 4)
        code.identity = base.identity
        code.expression = base.expression * (0.5 + 0.5 * k)
        imgs.append(_render(dec, code))
        with torch.no_grad():
            lms.append(dec.landmarks2d(code, (SIZE, SIZE), kind="mediapipe468")[0].numpy())
    res = fit_frames(imgs, dec, landmarks=lms, focal=FOCAL, options=FitOptions(photo_iterations=5, **CLEAN))
    assert len(res.frames) == 3
    ids = torch.stack([f.code.identity[0] for f in res.frames])
    assert torch.allclose(ids, ids[0].expand_as(ids))
    albs = torch.stack([f.code.albedo[0] for f in res.frames])
    assert torch.allclose(albs, albs[0].expand_as(albs))
    assert "temporal" in res.energies
    for f, lm in zip(res.frames, lms):
        assert f.landmark_error_px < 1.5
    rots = [f.code.rotation for f in res.frames]
    assert _angle_deg(rots[0], rots[2]) > 35  # per-frame pose


def test_fit_result_serialises(decoder):
    code = _truth(decoder, 5.0, 0.0, 5)
    with torch.no_grad():
        lm = decoder.landmarks2d(code, (SIZE, SIZE), kind="mediapipe468")[0].numpy()
    fit = fit_image(_render(decoder, code), decoder, landmarks=lm, focal=FOCAL, options=FitOptions(photo_iterations=2))
    d = json.loads(json.dumps(fit.to_dict()))
    assert d["model"] == "default" and len(d["landmarks68"]) == 68 and len(d["code"]["sh"]) == 9
    assert d["camera"]["K"][0][2] == SIZE / 2
    ov = fit.render(np.zeros((SIZE, SIZE, 3), np.uint8))
    assert ov.shape == (SIZE, SIZE, 3) and ov.dtype == np.uint8 and ov.max() > 0


def test_huge_grayscale_photo_maps_back(decoder):
    """A 2560 px grayscale photo is fitted on a crop; the results are in the input's pixels."""
    import cv2
    from skimage import data

    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    big = cv2.resize(gray, (2560, 2560), interpolation=cv2.INTER_CUBIC)
    fit = fit_image(big, decoder, iterations=0)
    assert fit.image_size == (2560, 2560)
    assert fit.landmark_error_px < 3.0 * 5  # px at 5x the original resolution
    lm = fit.landmarks68 / 5.0  # the astronaut's face sits near (220, 160) in the 512 px original
    assert 170 < lm[:, 0].mean() < 280 and 100 < lm[:, 1].mean() < 230
    rgba = np.dstack([data.astronaut(), np.full((512, 512), 255, np.uint8)])
    fit2 = fit_image(rgba, decoder, iterations=0)
    assert np.abs(fit2.landmarks68 - lm).mean() < 3.0


# ------------------------------------------------------------------ closed-form Jacobians of the LM stages
def _random_problem(dec, B=2, seed=0):
    """A random code batch, its packer over all stage-3 parts and a landmark observation (float64)."""
    from facerig.face import FaceObservation, contour_normals
    from facerig.face import fit as F
    from facerig.landmarks import MEDIAPIPE_FACE_OVAL

    m = dec.model
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    code = dec.zero_code(B, image_size=160, dtype=dt)
    code.identity = torch.randn(B, m.n_identity, generator=g, dtype=dt) * m.identity_std
    code.expression = torch.rand(B, m.n_expression, generator=g, dtype=dt) * 0.3
    code.albedo = torch.randn(B, m.n_albedo, generator=g, dtype=dt) * m.albedo_std * 0.5
    code.rotation = torch.tensor([[0.2, 0.5, -0.1], [-0.1, -0.3, 0.05]], dtype=dt)[:B]
    code.translation[:, 2] = 70.0
    code.focal[:] = 400.0
    code.sh = code.sh + torch.randn(B, 9, 3, generator=g, dtype=dt) * 0.2
    y = code.to_vector()
    parts = ("identity", "expression", "albedo", "rotation", "translation", "sh")
    pk = F.ParameterPacker(y, dec.sizes, F.parameter_scales(dec, parts, 80))
    pp = torch.tensor([[80.0, 80.0], [70.0, 90.0]], dtype=dt)[:B]
    lm = dec.landmarks2d(code, (160, 160), pp, kind="mediapipe468") + torch.randn(B, 468, 2, generator=g, dtype=dt) * 4
    contour = torch.as_tensor(MEDIAPIPE_FACE_OVAL)
    w = torch.ones(468, dtype=dt)
    w[contour] = 0.5
    obs = FaceObservation(landmarks=lm, vertex_ids=m.landmarks_mediapipe468.indices[None].expand(B, -1).clone(),
                          image_size=(160, 160), principal_point=pp, weights=w, contour=contour,
                          normals=contour_normals(lm[:, contour], True),
                          image=torch.rand(B, 160, 160, 3, generator=g, dtype=dt))
    return pk, pk.pack(y), obs


def test_vertex_and_landmark_jacobians_match_autograd(decoder64):
    """The hand-written forward-mode Jacobians equal torch.func's (float64, to rounding)."""
    from facerig.energy.solvers import batched_jacobian
    from facerig.face import face_energy, stacked_residuals
    from facerig.face import fit as F
    from facerig.render import sh_irradiance, vertex_normals

    dec = decoder64
    m = dec.model
    pk, p, obs = _random_problem(dec)

    def plain(q):  # (u, v, z, r, g, b) of every vertex
        c = dec.as_code(pk.unpack(q))
        verts = c.transform(m.shape(c.identity, c.expression))
        pix = dec.project(verts, c.focal, (160, 160), obs.principal_point)
        col = m.albedo(c.albedo) * sh_irradiance(vertex_normals(verts, dec.faces), c.sh)
        return torch.cat([pix, col], -1).reshape(p.shape[0], -1)

    v_ref, J_ref = batched_jacobian(plain, p, "forward")
    vals, J = F.vertex_jacobian(dec, pk, p, pk.unpack(p), (160, 160), obs.principal_point, depth=True)
    assert torch.allclose(vals.reshape(p.shape[0], -1), v_ref, atol=1e-9)
    assert torch.allclose(J.reshape(J_ref.shape), J_ref, atol=1e-6 * float(J_ref.abs().max()))

    e = face_energy(dec, landmarks=0.3, identity=1.0, expression=2.0, albedo=1.0, sigma=2.0, delta=1.0)
    _, Jr_ref = batched_jacobian(lambda q: stacked_residuals(e, obs, pk.unpack(q)), p, "forward")
    Jr = F.stacked_jacobian(e, obs, pk, p, vals[..., :2], J[:, :, :2])
    assert torch.allclose(Jr, Jr_ref, atol=1e-7 * float(Jr_ref.abs().max()))


@pytest.mark.parametrize("subdivide,erode,scheme", [(0, 0, "midpoint"), (1, 1, "midpoint"), (1, 0, "butterfly"), (1, 0, "detail")])
def test_photometric_lm_jacobian_matches_finite_differences(subdivide, erode, scheme):
    """Photometric rows (perspective-correct barycentrics, frozen visibility, Charbonnier root, clamp)
    against central differences of the rendered residuals, also on a subdivided render mesh with the
    silhouette eroded. The skin mask is made uniform: the fitter (like PhotometricTerm) treats the
    mask weights as constants."""
    from facerig.face import FaceDecoder, face_energy
    from facerig.face import fit as F

    dec = FaceDecoder("default", dtype=torch.float64)
    dec.skin_weight = torch.ones_like(dec.skin_weight)
    pk, p, obs = _random_problem(dec, B=1, seed=1)
    dec = F.subdivided_decoder(dec, subdivide, scheme)
    assert dec.model.n_vertices == (468 if subdivide == 0 else 468 + 1365) and dec.sizes == FaceDecoder("default").sizes
    dec.skin_weight = torch.ones_like(dec.skin_weight)
    e_rest = face_energy(dec, landmarks=0.3, identity=1.0, expression=1.0, albedo=1.0, sigma=2.0)
    prob = F.PhotometricLM(dec, obs, pk, e_rest, 20000.0, 0.02, 64, erode=erode)
    prob.set_support(p)
    r0 = prob.residual(p)
    J = prob.jacobian(p)
    assert J.shape == (1, r0.shape[1], p.shape[1])
    h = 1e-6
    for col in (0, 3, 100, 130, 160, 175, 178, 185):  # identity, expression, albedo, rotation, translation, sh
        dp = torch.zeros_like(p)
        dp[:, col] = h
        fd = (prob.residual(p + dp) - prob.residual(p - dp)) / (2 * h)
        err = (fd - J[..., col]).abs()
        # a pixel whose covering triangle changes within +-h jumps: allow a handful of such rows
        assert int((err > 1e-4 * float(fd.abs().max()) + 1e-6).sum()) <= 3, col


def test_photo_rounds_and_option_checks():
    o = FitOptions(photo_schedule=[[80, 6, 0.2], [160, 3, 0.0]])
    assert o.photo_schedule == ((80, 6, 0.2), (160, 3, 0.0)) and o.photo_rounds() == [(80, 6, 0.2), (160, 3, 0.0)]
    assert FitOptions(photo_schedule=o.photo_schedule, photo_iterations=3).photo_rounds() == [(80, 2, 0.2), (160, 1, 0.0)]
    for n in (0, 1, 7, 40):
        assert sum(r[1] for r in FitOptions(photo_iterations=n).photo_rounds()) == n
    assert FitOptions().adam_iterations == 40 and FitOptions(photo_iterations=5).adam_iterations == 5
    with pytest.raises(ValueError, match="photo_schedule"):
        FitOptions(photo_schedule=((80, 6),))
    with pytest.raises(ValueError, match="photo_solver"):
        FitOptions(photo_solver="sgd")
    with pytest.raises(ValueError, match="photo_iterations"):
        FitOptions(photo_iterations=-1)
    with pytest.raises(ValueError, match="photo_eps"):
        FitOptions(photo_eps=0.0)
    with pytest.raises(ValueError, match="photo_erode"):
        FitOptions(photo_erode=-1)
    with pytest.raises(ValueError, match="photo_subdivide"):
        FitOptions(photo_subdivide=1.5)
    with pytest.raises(ValueError, match="photo_subdivide_scheme"):
        FitOptions(photo_subdivide_scheme="loop")


def test_butterfly_subdivision_interpolates_and_is_linear_in_the_code():
    """The butterfly model keeps the original vertices (same code -> same coarse vertices), its new
    vertices move with a translation of the mesh (stencil weights sum to 0), it is linear in the code (the
    closed-form Jacobians rely on that), and it rounds the surface: on a sphere-like patch the new
    vertices lie closer to the sphere than the midpoints."""
    from facerig.face import FaceDecoder
    from facerig.face import fit as F

    dec = FaceDecoder("default", dtype=torch.float64)
    bf = F.subdivided_decoder(dec, 1, "butterfly")
    mid = F.subdivided_decoder(dec, 1)
    assert bf is F.subdivided_decoder(dec, 1, "butterfly") and bf is not mid
    g = torch.Generator().manual_seed(0)
    code = dec.zero_code(2, image_size=160)
    code.identity = torch.randn(2, dec.sizes["identity"], generator=g, dtype=torch.float64) * dec.model.identity_std
    code.expression = torch.rand(2, dec.sizes["expression"], generator=g, dtype=torch.float64) * 0.3
    vb, vm, v0 = bf.vertices(code), mid.vertices(code), dec.vertices(code)
    assert torch.allclose(vb[:, :468], v0) and torch.allclose(vm[:, :468], v0)
    assert float((vb - vm).norm(dim=-1).max()) > 0.05  # cm: the surface really changes
    # linearity in the code: shape(a + b) - mean = (shape(a) - mean) + (shape(b) - mean)
    m = bf.model
    a, b = code.identity[:1], code.identity[1:]
    z = torch.zeros_like(code.expression[:1])
    lhs = m.shape(a + b, z) - m.mean
    assert torch.allclose(lhs, (m.shape(a, z) - m.mean) + (m.shape(b, z) - m.mean), atol=1e-9)
    # stencil: linear precision and rounding on a unit sphere through the mesh's vertices
    idx, w = F.butterfly_stencil(dec.model.faces, 468)
    assert torch.allclose(w.sum(1), torch.zeros(len(w), dtype=w.dtype))  # translation-invariant
    assert float((w.abs().sum(1) > 0).double().mean()) > 0.85  # complete stencils away from the rim
    sph = torch.nn.functional.normalize(dec.model.mean - dec.model.mean.mean(0), dim=1)
    sphere = dec.model.__class__(mean=sph, faces=dec.model.faces)
    full = w.abs().sum(1) > 0
    r_bf = F.butterfly_model(sphere).mean[468:][full].norm(dim=1)
    r_mid = sphere.subdivide(1).mean[468:][full].norm(dim=1)
    assert float((1 - r_bf).abs().mean()) < 0.5 * float((1 - r_mid).abs().mean())


def test_photometric_stage_corrects_noisy_landmarks(decoder):
    """With landmarks 3 px off (noise), the photometric LM stage recovers the shape better than the
    landmark-only fit, and lowers the photometric energy."""
    dec = decoder
    code = _truth(dec, 20.0, 5.0, 6)
    img = _render(dec, code)
    with torch.no_grad():
        lm468 = dec.landmarks2d(code, (SIZE, SIZE), kind="mediapipe468")[0].numpy()
    rng = np.random.default_rng(0)
    noisy = lm468 + rng.normal(0, 3.0, lm468.shape)
    fit = fit_image(img, dec, landmarks=noisy, focal=FOCAL, keep_stages=True)
    gt = dec.vertices(code)[0].detach().double().numpy()
    from facerig.model.geometry import umeyama

    def err(v):
        v = v.double().numpy()
        s, R, t = umeyama(v, gt)
        return np.linalg.norm(v @ (s * R).T + t - gt, axis=1).mean()

    assert err(fit.stages["photometric"]) < 0.8 * err(fit.stages["landmarks"])
    lm_only = fit_image(img, dec, landmarks=noisy, focal=FOCAL, iterations=0)
    assert fit.energies["photometric"] < 0.7 * lm_only.energies["photometric"]


def test_photometric_exclude_drops_exactly_the_group_pixels():
    """``photo_exclude=("mouth_opening",)``: the LM photometric mask is zero exactly on the pixels whose
    visible triangle belongs to the group (here also after midpoint subdivision, whose face groups
    repeat 4x) and unchanged elsewhere; unknown groups are ignored; a bad value is a ValueError."""
    from facerig.face import FaceDecoder, face_energy
    from facerig.face import fit as F

    base = FaceDecoder("default", dtype=torch.float64)
    pk, p, obs = _random_problem(base, B=1, seed=2)
    for levels in (0, 1):
        dec = F.subdivided_decoder(base, levels)
        ex = F.excluded_faces(dec, FitOptions(photo_exclude=("mouth_opening", "no_such_group")))
        grp = dec.model.face_groups["mouth_opening"]
        assert ex is not None and ex.shape == (dec.model.n_faces,) and int(ex.sum()) == int(grp.sum() if grp.dtype == torch.bool else len(grp))
        assert F.excluded_faces(dec, FitOptions()) is None
        e_rest = face_energy(dec, landmarks=0.0, identity=1.0, expression=1.0, albedo=1.0, sigma=2.0)
        plain = F.PhotometricLM(dec, obs, pk, e_rest, 1.0, 0.01, 160)
        masked = F.PhotometricLM(dec, obs, pk, e_rest, 1.0, 0.01, 160, exclude_faces=ex)
        with torch.no_grad():
            out = plain._render(p)
        plain.sel = masked.sel = torch.arange(160 * 160)[None]
        plain.flag = masked.flag = torch.ones(1, 160 * 160, dtype=torch.float64)
        m0, _, _ = plain._photo_parts(out)
        m1, _, _ = masked._photo_parts(out)
        p2f = out.fragments.pix_to_face.reshape(1, -1)
        in_group = (p2f >= 0) & ex[p2f.clamp(min=0)]
        assert int(in_group.sum()) > 0 and bool((m0[in_group] > 0).any())  # the mouth is visible and was in the term
        assert bool((m1[in_group] == 0).all()) and torch.equal(m1[~in_group], m0[~in_group])
    with pytest.raises(ValueError, match="photo_exclude"):
        FitOptions(photo_exclude="mouth_opening")


def test_photometric_refine_adam_lowers_each_images_energy_and_shares_in_joint_mode(decoder64):
    """The Adam variant of the photometric stage (fitter's photo_solver="adam", joint multi-frame
    fits, the encoder's refine_codes(solver="adam")): every image's energy goes down (each keeps
    its best iterate), and joint=True returns one identity and albedo for the batch."""
    from facerig.face import face_energy, init_light_albedo, photometric_refine_adam
    from facerig.model import GraphicCode

    dec = decoder64
    pk, p, obs = _random_problem(dec, B=2, seed=3)
    opts = FitOptions()
    energy = face_energy(dec, landmarks=opts.w_landmarks_photo, photometric=opts.w_photometric,
                         identity=opts.w_identity_photo, expression=opts.w_expression_photo, albedo=opts.w_albedo,
                         sigma=opts.sigma, delta=opts.delta, photo_clamp=opts.photo_clamp)
    y0 = init_light_albedo(dec, obs, pk.unpack(p))
    e0 = energy(obs, y0)
    y = photometric_refine_adam(dec, obs, y0, opts, iterations=6, energy=energy, init_light=False)
    e = energy(obs, y)
    assert e.shape == (2,) and bool((e < e0).all())
    yj = photometric_refine_adam(dec, obs, y0, opts, iterations=3, joint=True)
    sl = GraphicCode.slices(dec.sizes)
    for part in ("identity", "albedo"):
        assert torch.equal(yj[0, sl[part]], yj[1, sl[part]])
    assert not torch.equal(yj[0, sl["expression"]], yj[1, sl["expression"]])
    with pytest.raises(ValueError):
        FitOptions(photo_solver="sgd")
