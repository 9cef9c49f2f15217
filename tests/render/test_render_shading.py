"""Interpolation, texture sampling, normals and SH shading: gradchecks and analytic values."""

from __future__ import annotations

import math

import torch

import facerig.render as R


def _scene(dtype=torch.float64):
    verts = torch.tensor([[[1.3, 1.1, 5.0], [9.2, 1.7, 6.0], [2.1, 9.4, 7.0], [9.0, 9.0, 4.0]]], dtype=dtype)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    return verts, faces


def test_interpolate_gradcheck_attrs_and_positions():
    verts, faces = _scene()
    attrs = torch.rand(1, 4, 2, dtype=torch.float64)

    def f(a, v):
        return R.interpolate(a, R.rasterize(v, faces, (10, 10)), faces)

    torch.autograd.gradcheck(f, (attrs.requires_grad_(True), verts.clone().requires_grad_(True)), eps=1e-7, atol=1e-6)
    # batched attributes, K = 2, and unshared (V, C) attributes
    v2 = torch.cat([verts, verts + 0.3])
    fr = R.rasterize(v2, faces, (10, 10), faces_per_pixel=2)
    a2 = torch.rand(2, 4, 3, dtype=torch.float64)
    out = R.interpolate(a2, fr, faces)
    assert out.shape == (2, 10, 10, 2, 3)
    ref = (a2[torch.arange(2)[:, None, None, None, None], faces[fr.pix_to_face.clamp(min=0)]] * fr.bary[..., None]).sum(-2)
    ref = ref * (fr.pix_to_face >= 0)[..., None]
    assert torch.allclose(out, ref)


def test_interpolate_is_exact_for_linear_attributes():
    # orthographic: screen-space barycentrics reproduce the pixel centre from the vertex u, v
    verts, faces = _scene()
    fr = R.rasterize(verts, faces, (10, 10), perspective_correct=False)
    uv = R.interpolate(verts[..., :2], fr, faces, background=-1.0)
    vv, uu = torch.meshgrid(torch.arange(10.0) + 0.5, torch.arange(10.0) + 0.5, indexing="ij")
    m = fr.mask[0]
    assert torch.allclose(uv[0, ..., 0][m], uu.double()[m])
    assert torch.allclose(uv[0, ..., 1][m], vv.double()[m])
    assert bool((uv[0][~m] == -1).all())


def test_texture_sampling_values_and_gradcheck():
    tex = torch.rand(1, 4, 6, 3, dtype=torch.float64)
    # texel centres (OBJ convention: v = 0 is the bottom row)
    r, c = 1, 4
    uv = torch.tensor([[[[(c + 0.5) / 6, 1 - (r + 0.5) / 4]]]], dtype=torch.float64)
    assert torch.allclose(R.sample_texture(tex, uv)[0, 0, 0], tex[0, r, c])
    assert torch.allclose(R.sample_texture(tex, torch.tensor([[[[(c + 0.5) / 6, (r + 0.5) / 4]]]], dtype=torch.float64), flip_v=False)[0, 0, 0], tex[0, r, c])
    # half way between two texels horizontally: their mean
    uv = torch.tensor([[[[(c + 1.0) / 6, 1 - (r + 0.5) / 4]]]], dtype=torch.float64)
    assert torch.allclose(R.sample_texture(tex, uv)[0, 0, 0], 0.5 * (tex[0, r, c] + tex[0, r, c + 1]))
    uvs = (torch.rand(1, 3, 5, 2, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    torch.autograd.gradcheck(lambda t, u: R.sample_texture(t, u), (tex.clone().requires_grad_(True), uvs))


def test_vertex_normals_sphere_and_gradcheck():
    v, f = R.icosphere(3, dtype=torch.float64)
    n = R.vertex_normals(v[None], f)[0]
    assert torch.allclose(n.norm(dim=-1), torch.ones(v.shape[0], dtype=torch.float64))
    assert (n * v).sum(-1).min() > 0.999  # outward and nearly radial
    # area weighting: a fan of two faces of very different areas
    vv = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0.1]]], dtype=torch.float64)
    ff = torch.tensor([[0, 1, 2], [0, 3, 1]])
    n0 = R.vertex_normals(vv, ff)[0, 0]
    a1 = torch.tensor([0, 0, 0.5], dtype=torch.float64)  # normal * area of face 0
    a2 = torch.linalg.cross(vv[0, 3] - vv[0, 0], vv[0, 1] - vv[0, 0]) / 2
    assert torch.allclose(n0, torch.nn.functional.normalize(a1 + a2, dim=0))
    small_v, small_f = R.icosphere(0, dtype=torch.float64)
    torch.autograd.gradcheck(lambda x: R.vertex_normals(x, small_f), (small_v[None].clone().requires_grad_(True),))


def test_sh_basis_constants_and_shading_gradcheck():
    n = torch.nn.functional.normalize(torch.randn(1, 7, 3, dtype=torch.float64), dim=-1)
    Y = R.sh_basis(n)
    x, y, z = n.unbind(-1)
    c0 = math.pi / math.sqrt(4 * math.pi)
    c1 = 2 * math.pi / math.sqrt(3) * math.sqrt(3) / math.sqrt(4 * math.pi)
    c2 = 2 * math.pi / math.sqrt(8) * 3 * math.sqrt(5) / math.sqrt(12 * math.pi)
    ref = torch.stack([torch.full_like(x, c0), -c1 * y, c1 * z, -c1 * x, c2 * x * y, -c2 * y * z,
                       c2 * 0.5 / math.sqrt(3) * (3 * z * z - 1), -c2 * x * z, c2 * 0.5 * (x * x - y * y)], -1)
    assert torch.allclose(Y, ref)
    # ambient-only light 2/sqrt(pi) -> irradiance 1
    g = torch.zeros(1, 9, 3, dtype=torch.float64)
    g[:, 0] = 2 / math.sqrt(math.pi)
    assert torch.allclose(R.sh_irradiance(n, g), torch.ones(1, 7, 3, dtype=torch.float64))
    # (B, 27) Deep3DFaceRecon layout = (B, 3, 9) channel-major
    g27 = torch.randn(1, 27, dtype=torch.float64)
    assert torch.allclose(R.sh_irradiance(n, g27), R.sh_irradiance(n, g27.view(1, 3, 9).transpose(1, 2)))
    alb = torch.rand(1, 7, 3, dtype=torch.float64)
    torch.autograd.gradcheck(
        lambda nn_, a, gg: R.sh_shading(nn_, a, gg),
        (n.clone().requires_grad_(True), alb.requires_grad_(True), torch.randn(1, 9, 3, dtype=torch.float64, requires_grad=True)),
    )


def test_blinn_phong_peak_and_composite():
    n = torch.tensor([[[0.0, 0.0, -1.0]]], dtype=torch.float64)
    p = torch.tensor([[[0.0, 0.0, 5.0]]], dtype=torch.float64)
    light = torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64)  # towards the camera
    assert torch.allclose(R.blinn_phong(n, p, light, 16.0, 0.5), torch.tensor(0.5, dtype=torch.float64))
    off = R.blinn_phong(n, p, torch.tensor([[0.0, 1.0, -1.0]], dtype=torch.float64), 16.0, 0.5)
    assert 0 < off.item() < 0.5
    rgb = torch.rand(1, 2, 2, 3)
    alpha = torch.tensor([[[[1.0], [0.0]], [[0.5], [1.0]]]])
    bg = torch.rand(1, 2, 2, 3)
    out = R.composite(rgb, alpha, bg)
    assert torch.allclose(out[0, 0, 1], bg[0, 0, 1])
    assert torch.allclose(out[0, 1, 0], 0.5 * rgb[0, 1, 0] + 0.5 * bg[0, 1, 0])
