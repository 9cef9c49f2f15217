"""End-to-end rendering: antialiasing gradients, silhouette fitting, SH light recovery."""

from __future__ import annotations

import math

import pytest
import torch

import facerig.render as R
from facerig.render import transforms as T


def _triangle_alpha(scale, dtype=torch.float64):
    base = torch.tensor([[[8.3, 6.2, 5.0], [27.1, 10.4, 5.0], [12.6, 28.8, 5.0]]], dtype=dtype)
    centre = base.mean(1, keepdim=True)
    verts = centre + (base - centre) * scale
    faces = torch.tensor([[0, 2, 1]])
    fr = R.rasterize(verts, faces, (36, 36))
    alpha = fr.mask[..., None].to(dtype)
    return R.antialias(alpha, fr, verts, faces), verts


def test_antialias_coverage_approximates_area_and_its_gradient():
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    aa, verts = _triangle_alpha(scale)
    p = verts[0, :, :2].detach()
    area = 0.5 * abs(float((p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[1, 1] - p[0, 1]) * (p[2, 0] - p[0, 0])))
    s = aa.sum()
    assert abs(float(s.detach()) - area) / area < 0.02  # antialiased coverage ~ exact area
    (g,) = torch.autograd.grad(s, scale)
    assert float(g) == pytest.approx(2 * area, rel=0.1)  # d(area)/d(scale) at scale 1
    # antialiasing changes only pixels next to the silhouette
    fr = R.rasterize(verts.detach(), torch.tensor([[0, 2, 1]]), (36, 36))
    changed = (aa[0, ..., 0] - fr.mask[0].double()).abs() > 0
    interior = torch.nn.functional.max_pool2d((~fr.mask[0]).double()[None, None], 3, 1, 1)[0, 0] == 0
    assert not bool((changed & interior).any())


def test_antialias_occlusion_edge_gets_gradient():
    # a near square in front of a far square: moving the near one changes the image at its edge
    near = torch.tensor([[6.0, 6.0, 2.0], [16.0, 6.0, 2.0], [16.0, 16.0, 2.0], [6.0, 16.0, 2.0]], dtype=torch.float64)
    far = torch.tensor([[1.0, 1.0, 5.0], [23.0, 1.0, 5.0], [23.0, 23.0, 5.0], [1.0, 23.0, 5.0]], dtype=torch.float64)
    faces = torch.tensor([[0, 2, 1], [0, 3, 2], [4, 6, 5], [4, 7, 6]])
    shift = torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    verts = torch.cat([near + shift, far])[None]
    fr = R.rasterize(verts, faces, (24, 24))
    color = torch.where(fr.pix_to_face[..., None] < 2, 1.0, 0.2).to(torch.float64) * fr.mask[..., None]
    img = R.antialias(color, fr, verts, faces)
    (g,) = torch.autograd.grad(img.sum(), shift)
    # translation keeps the bright area constant; at most the corner pixel where the quad's
    # diagonal meets the silhouette is missed (only the front pixel's triangle is examined)
    assert abs(float(g[0])) <= 0.8 + 1e-9
    right = torch.autograd.grad(R.antialias(color, fr, verts, faces)[0, :, 12:].sum(), shift)[0]
    # moving right brings bright (1.0) over dark (0.2) along a 10-pixel edge: d/dx = 10 * 0.8
    assert float(right[0]) == pytest.approx(8.0, rel=0.11)


def _blob(dtype=torch.float32):
    v, f = R.icosphere(2, dtype=dtype)
    v = v * torch.tensor([1.6, 0.9, 0.7], dtype=dtype)
    v[:, 0] += 0.35 * (v[:, 1] > 0).to(dtype) * v[:, 0]  # asymmetric: no silhouette symmetry
    return v, f


def test_silhouette_optimisation_recovers_pose():
    torch.manual_seed(0)
    v, f = _blob()
    cam = R.PerspectiveCamera(80.0, 80.0, 40.0, 40.0)
    size = (80, 80)
    adj = R.face_adjacency(f)
    aa_true = torch.tensor([[0.15, -0.25, 0.35]])
    t_true = torch.tensor([[0.0, 0.0, 8.0]])

    def silhouette(aa, t):
        vc = T.transform_points(v[None], T.axis_angle_to_matrix(aa), t)
        vp = cam.project(vc)
        fr = R.rasterize(vp, f, size)
        return R.antialias(fr.mask[..., None].float(), fr, vp, f, adj)

    with torch.no_grad():
        target = silhouette(aa_true, t_true)
    aa = torch.zeros(1, 3, requires_grad=True)
    t = torch.tensor([[1.2, -1.0, 8.0]], requires_grad=True)  # (12, -10) pixels off
    init_px = (cam.project(t[:, None].detach()) - cam.project(t_true[:, None]))[0, 0, :2].norm()
    assert init_px >= 10
    opt = torch.optim.Adam([{"params": [aa], "lr": 0.05}, {"params": [t], "lr": 0.08}])
    for it in range(200):
        opt.zero_grad()
        loss = (silhouette(aa, t) - target).square().mean()
        loss.backward()
        opt.step()
        if it == 100:
            for g in opt.param_groups:
                g["lr"] *= 0.3
    err_px = (cam.project(t[:, None].detach()) - cam.project(t_true[:, None]))[0, 0, :2].norm()
    Rerr = T.axis_angle_to_matrix(aa.detach()) @ T.axis_angle_to_matrix(aa_true).transpose(1, 2)
    ang = math.degrees(float(T.matrix_to_axis_angle(Rerr).norm()))
    assert err_px < 0.2, err_px
    assert ang < 1.0, ang


def test_sh_light_recovered_from_rendered_sphere():
    v, f = R.icosphere(4, dtype=torch.float64)
    cam = R.PerspectiveCamera(120.0, 120.0, 48.0, 48.0)
    gamma = torch.zeros(1, 9, 3, dtype=torch.float64)
    gamma[:, 0] = torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64)
    gamma[:, 1:] = 0.15 * torch.randn(1, 8, 3, dtype=torch.float64)
    verts = v[None] * 2.0 + torch.tensor([0.0, 0.0, 6.0], dtype=torch.float64)
    out = R.render_mesh(verts, f, cam, (96, 96), colors=torch.ones(1, v.shape[0], 3, dtype=torch.float64),
                        sh_coeffs=gamma, shading="pixel", antialias=False)
    m = out.fragments.mask[0]
    n = torch.nn.functional.normalize(R.interpolate(R.vertex_normals(verts, f), out.fragments, f), dim=-1)[0][m]
    Y = R.sh_basis(n)  # (P, 9)
    sol = torch.linalg.lstsq(Y, out.image[0][m]).solution  # (9, 3)
    assert torch.allclose(sol, gamma[0], atol=1e-6)


def test_render_mesh_outputs_and_options():
    v, f = R.icosphere(2)
    B = 2
    verts = v[None].repeat(B, 1, 1) * 1.5 + torch.tensor([0.0, 0.0, 6.0])
    cam = R.PerspectiveCamera(60.0, 60.0, 32.0, 24.0)
    bg = torch.rand(B, 48, 64, 3)
    colors = torch.rand(B, v.shape[0], 3, requires_grad=True)
    gamma = torch.zeros(B, 9, 3)
    gamma[:, 0] = 2 / math.sqrt(math.pi)
    gamma.requires_grad_(True)
    out = R.render_mesh(verts, f, cam, (48, 64), colors=colors, sh_coeffs=gamma, background=bg)
    assert out.image.shape == (B, 48, 64, 3) and out.alpha.shape == (B, 48, 64, 1)
    hard = out.fragments.mask
    far = torch.nn.functional.max_pool2d(hard.float()[:, None], 3, 1, 1)[:, 0] == 0
    assert torch.allclose(out.image[far], bg[far])  # background away from the silhouette
    assert bool((out.alpha[..., 0][far] == 0).all())
    interior = torch.nn.functional.max_pool2d((~hard).float()[:, None], 3, 1, 1)[:, 0] == 0
    assert bool((out.alpha[..., 0][interior] == 1).all())
    # ambient light of irradiance 1: the image is the interpolated albedo inside
    ref = R.interpolate(colors, out.fragments, f)
    assert torch.allclose(out.image[interior], ref[interior], atol=1e-5)
    out.image.sum().backward()
    assert colors.grad.abs().sum() > 0 and gamma.grad.abs().sum() > 0
    # pixel shading, specular, texture and the module wrapper agree on shapes and run in float64
    uv = (v[:, :2] * 0.5 + 0.5).double()
    tex = torch.rand(16, 16, 3, dtype=torch.float64)
    r = R.Renderer(f, (48, 64), shading="pixel")
    out2 = r(verts.double(), cam, uvs=uv, texture=tex, sh_coeffs=gamma.detach().double(),
             specular={"light_dir": torch.tensor([[0.0, -1.0, -1.0]] * B, dtype=torch.float64)})
    assert out2.image.dtype == torch.float64 and torch.isfinite(out2.image).all()
    # unlit textured render equals the texture sampled at the interpolated uvs
    out3 = R.render_mesh(verts.double(), f, cam, (48, 64), uvs=uv, texture=tex, antialias=False)
    uvp = R.interpolate(uv, out3.fragments, f)
    ref3 = R.sample_texture(tex, uvp) * out3.fragments.mask[..., None]
    assert torch.allclose(out3.image, ref3)
    # orthographic camera works through the same path
    ortho = R.OrthographicCamera.weak_perspective(60.0, 6.0, 32.0, 24.0)
    out4 = R.render_mesh(verts, f, ortho, (48, 64))
    assert abs(int(out4.fragments.mask.sum()) - int(hard.sum())) < 0.2 * int(hard.sum())
    with pytest.raises(ValueError, match="shading"):
        R.render_mesh(verts, f, cam, (48, 64), shading="flat")


def test_soft_rasterize_distances_and_blend():
    verts = torch.tensor([[[4.0, 4.0, 5.0], [14.0, 4.0, 5.0], [4.0, 14.0, 5.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 2, 1]])
    sf = R.soft_rasterize(verts, faces, (18, 18), faces_per_pixel=2, sigma=0.5, blur_radius=2.0)
    assert sf.pix_to_face.shape == (1, 18, 18, 2) and sf.dists.shape == (1, 18, 18, 2)
    assert bool((sf.bary >= 0).all()) and bool((sf.bary <= 1).all())  # clipped to the face
    # pixel (row 8, col 2): centre (2.5, 8.5), 1.5 px left of the edge u = 4 -> d^2 = 2.25
    assert sf.pix_to_face[0, 8, 2, 0] == 0
    assert float(sf.dists[0, 8, 2, 0]) == pytest.approx(2.25)
    # inside: negative squared distance to the nearest edge; (row 5, col 5) centre (5.5, 5.5)
    assert float(sf.dists[0, 5, 5, 0]) == pytest.approx(-(1.5 ** 2))
    # farther than the blur radius: no face
    assert sf.pix_to_face[0, 8, 0, 0] == -1 and sf.pix_to_face[0, 0, 17, 0] == -1
    # hard coverage is the set of non-positive distances
    hard = R.rasterize(verts, faces, (18, 18)).mask[0]
    assert torch.equal((sf.dists[0, ..., 0] <= 0) & (sf.pix_to_face[0, ..., 0] >= 0), hard)
    # blend: the alpha of a pixel outside the triangle gets a gradient w.r.t. the vertices
    v = verts.clone().requires_grad_(True)
    sf = R.soft_rasterize(v, faces, (18, 18), faces_per_pixel=2, sigma=0.5)
    colors = R.interpolate(torch.ones(1, 3, 3, dtype=torch.float64), sf, faces)
    img, alpha = R.softmax_blend(colors, sf, sigma=0.5, background=0.0)
    assert img.shape == (1, 18, 18, 3) and alpha.shape == (1, 18, 18, 1)
    (g,) = torch.autograd.grad(alpha[0, 8, 2, 0], v)
    assert g[0, :, 0].sum() < 0  # moving the left edge left (-u) increases this pixel's coverage
    a = alpha.detach()
    assert float(a[0, 6, 6, 0]) > 0.99 and float(a[0, 8, 2, 0]) < 0.1  # d^2 = -6.25 and 2.25


def test_soft_silhouette_gradcheck():
    verts = torch.tensor([[[4.2, 4.1, 5.0], [14.3, 4.6, 6.0], [4.7, 13.9, 7.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 2, 1]])

    def f(x):
        sf = R.soft_rasterize(x, faces, (18, 18), faces_per_pixel=1, sigma=0.7)
        return R.softmax_blend(torch.ones(1, 18, 18, 1, 1, dtype=torch.float64), sf, sigma=0.7)[1]

    torch.autograd.gradcheck(f, (verts.clone().requires_grad_(True),), eps=1e-7, atol=1e-5)


def test_antialias_sphere_rim_thin_triangles():
    # near the silhouette of a smooth mesh the triangles are thin and foreshortened: the search
    # must walk across them to the real silhouette edge, so most rim pixels get fractional alpha
    v, f = R.icosphere(4, dtype=torch.float64)
    c = torch.tensor([0.1, -0.05, 3.0], dtype=torch.float64)
    cam = R.PerspectiveCamera(64.0, 64.0, 32.0, 32.0)
    vp = cam.project(v[None] + c)
    fr = R.rasterize(vp, f, (64, 64))
    a = R.antialias(fr.mask[..., None].double(), fr, vp, f)[0, ..., 0]
    n = 8  # supersampled exact coverage of the true sphere (ray-sphere test)
    s = (torch.arange(64 * n, dtype=torch.float64) + 0.5) / n
    yy, xx = torch.meshgrid(s, s, indexing="ij")
    d = torch.stack([(xx - 32) / 64, (yy - 32) / 64, torch.ones_like(xx)], -1)
    disc = (d * c).sum(-1) ** 2 - (d * d).sum(-1) * (c.dot(c) - 1)
    area = float((disc >= 0).double().sum()) / n / n
    assert abs(float(a.sum()) - area) / area < 0.01
    assert int(((a > 0) & (a < 1)).sum()) >= 90  # perimeter ~ 142 pixels
