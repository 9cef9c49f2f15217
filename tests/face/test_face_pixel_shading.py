"""Opt-in per-pixel (Phong-style) SH shading: the decoder's render and the LM stage's closed-form Jacobian."""

from __future__ import annotations

import pytest
import torch

from facerig.face import FaceDecoder, FitOptions


def _problem(B=1, seed=1):
    from test_face_fit import _random_problem  # the Jacobian tests' random problem (same folder)

    dec = FaceDecoder("default", dtype=torch.float64)
    dec.skin_weight = torch.ones_like(dec.skin_weight)
    pk, p, obs = _random_problem(dec, B=B, seed=seed)
    return dec, pk, p, obs


def test_decoder_pixel_shading_matches_the_renderer():
    """FaceDecoder(shading="pixel") = render_mesh(shading="pixel") on the same mesh; the default is
    the per-vertex render; under ambient light both equal the interpolated albedo."""
    from facerig.face.decoder import make_camera
    from facerig.render import render_mesh

    dec, pk, p, obs = _problem(B=2)
    code = dec.as_code(pk.unpack(p))
    pix = dec(code, (160, 160), obs.principal_point, shading="pixel")
    vtx = dec(code, (160, 160), obs.principal_point)
    assert torch.equal(vtx.image, dec(code, (160, 160), obs.principal_point, shading="vertex").image)
    assert torch.equal(pix.image, FaceDecoder(dec.model, shading="pixel")(code, (160, 160), obs.principal_point).image)
    ref = render_mesh(vtx.verts_cam, dec.faces, make_camera(code.focal, (160, 160), obs.principal_point), (160, 160),
                      colors=vtx.albedo, sh_coeffs=code.sh, shading="pixel", antialias=False)
    assert torch.allclose(pix.image, ref.image, atol=1e-10)
    d = (pix.image - vtx.image).abs()
    assert float(d.max()) > 1e-3  # the two shadings differ under a non-ambient light
    code.sh = code.sh * 0
    code.sh[:, 0] = 1 / 0.28209479177387814  # irradiance 1
    a = dec(code, (160, 160), obs.principal_point, shading="pixel").image
    b = dec(code, (160, 160), obs.principal_point).image
    assert torch.allclose(a, b, atol=1e-12)
    with pytest.raises(ValueError, match="shading"):
        dec(code, (160, 160), shading="phong")
    with pytest.raises(ValueError, match="shading"):
        FaceDecoder(dec.model, shading="flat")
    with pytest.raises(ValueError, match="photo_shading"):
        FitOptions(photo_shading="phong")
    assert FitOptions().photo_shading == "vertex" and FaceDecoder(dec.model).shading == "vertex"


def test_vertex_normal_and_albedo_jacobian_matches_autograd():
    """vertex_jacobian(normals=True): (u, v, z, unit normal, albedo) and its Jacobian = torch.func's."""
    from facerig.energy.solvers import batched_jacobian
    from facerig.face import fit as F
    from facerig.render import vertex_normals

    dec, pk, p, obs = _problem(B=2, seed=0)
    m = dec.model

    def plain(q):
        c = dec.as_code(pk.unpack(q))
        verts = c.transform(m.shape(c.identity, c.expression))
        pix = dec.project(verts, c.focal, (160, 160), obs.principal_point)
        return torch.cat([pix, vertex_normals(verts, dec.faces), m.albedo(c.albedo)], -1).reshape(q.shape[0], -1)

    v_ref, J_ref = batched_jacobian(plain, p, "forward")
    vals, J = F.vertex_jacobian(dec, pk, p, pk.unpack(p), (160, 160), obs.principal_point, depth=True, normals=True)
    assert vals.shape[-1] == 9 and J.shape[2] == 9
    assert torch.allclose(vals.reshape(p.shape[0], -1), v_ref, atol=1e-9)
    assert torch.allclose(J.reshape(J_ref.shape), J_ref, atol=1e-6 * float(J_ref.abs().max()))


@pytest.mark.parametrize("subdivide,erode", [(0, 0), (1, 1)])
def test_pixel_shading_lm_jacobian_matches_finite_differences(subdivide, erode):
    """Photometric rows with per-pixel shading (interpolated normals and albedo, per-pixel SH) against
    central differences of the rendered residuals, for every parameter group (frozen visibility:
    a handful of rows whose covering triangle changes within +-h may jump)."""
    from facerig.face import face_energy
    from facerig.face import fit as F

    dec, pk, p, obs = _problem()
    dec = F.subdivided_decoder(dec, subdivide)
    dec.skin_weight = torch.ones_like(dec.skin_weight)
    e_rest = face_energy(dec, landmarks=0.3, identity=1.0, expression=1.0, albedo=1.0, sigma=2.0)
    prob = F.PhotometricLM(dec, obs, pk, e_rest, 20000.0, 0.02, 64, erode=erode, shading="pixel")
    prob.set_support(p)
    r0 = prob.residual(p)
    J = prob.jacobian(p)
    assert J.shape == (1, r0.shape[1], p.shape[1])
    # the per-pixel residuals are not the per-vertex ones (the option does something)
    vprob = F.PhotometricLM(dec, obs, pk, e_rest, 20000.0, 0.02, 64, erode=erode)
    vprob.set_support(p)
    assert float((vprob.residual(p) - r0).abs().max()) > 1e-3
    h = 1e-6
    sl = pk.layout
    cols = [sl[k][0].start for k in ("identity", "expression", "albedo", "rotation", "translation", "sh")]
    cols += [sl["expression"][0].start + 3, sl["albedo"][0].start + 7, sl["rotation"][0].start + 1,
             sl["translation"][0].start + 2, sl["sh"][0].start + 5, sl["sh"][0].start + 22]
    for col in cols:
        dp = torch.zeros_like(p)
        dp[:, col] = h
        fd = (prob.residual(p + dp) - prob.residual(p - dp)) / (2 * h)
        err = (fd - J[..., col]).abs()
        assert float(fd.abs().max()) > 0, col
        assert int((err > 1e-4 * float(fd.abs().max()) + 1e-6).sum()) <= 3, col


def test_synthetic_renderer_pixel_shading_option():
    """FaceRenderer / SyntheticFaces(shading="pixel"): same geometry and coverage, different shading."""
    import numpy as np

    from facerig.face.synthetic import FaceRenderer, SyntheticFaces

    dec = FaceDecoder("default")
    gv = SyntheticFaces(dec, size=96, photos=[np.full((96, 96, 3), 128, np.uint8)])
    gp = SyntheticFaces(dec, size=96, photos=gv.photos, shading="pixel")
    code, *_ = gv.random_code(np.random.default_rng(3))
    a, b = gv.render(code).astype(int), gp.render(code).astype(int)
    assert ((a > 0).any(-1) == (b > 0).any(-1)).mean() > 0.999 and np.abs(a - b).max() > 2
    with pytest.raises(ValueError, match="shading"):
        FaceRenderer.for_model(dec.model, shading="flat")
