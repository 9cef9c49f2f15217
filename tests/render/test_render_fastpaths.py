"""The CPU fast paths (corner-major face gathers, channel-wise scatters, packed-key decoding)
against plain dense PyTorch references, values and gradients, batched."""

from __future__ import annotations

import torch

import facerig.render as R


def _batched_sphere(dtype=torch.float64):
    v, f = R.icosphere(2, dtype=dtype)
    g = torch.Generator().manual_seed(3)
    verts = torch.stack([v * 1.0, v * torch.tensor([1.2, 0.8, 1.0], dtype=dtype)]) + 0.05 * torch.randn(2, *v.shape, generator=g, dtype=dtype)
    verts = verts + torch.tensor([0.0, 0.0, 4.0], dtype=dtype)
    return verts, f


def test_face_and_vertex_normals_match_dense_reference_batched():
    verts, faces = _batched_sphere()
    verts.requires_grad_(True)
    tri = verts[:, faces]  # (B, F, 3 corners, 3)
    fn_ref = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    vn_ref = torch.zeros_like(verts).index_add(1, faces[:, 0], fn_ref).index_add(1, faces[:, 1], fn_ref).index_add(1, faces[:, 2], fn_ref)
    vn_ref = vn_ref / vn_ref.norm(dim=-1, keepdim=True)
    fn = R.face_normals(verts, faces, normalize=False)
    vn = R.vertex_normals(verts, faces)
    assert fn.shape == fn_ref.shape and vn.shape == vn_ref.shape
    assert torch.allclose(fn, fn_ref, atol=1e-12)
    assert torch.allclose(R.face_normals(verts, faces), fn_ref / fn_ref.norm(dim=-1, keepdim=True), atol=1e-12)
    assert torch.allclose(vn, vn_ref, atol=1e-12)
    w = torch.randn_like(vn)
    g, = torch.autograd.grad((vn * w).sum(), verts)
    g_ref, = torch.autograd.grad((vn_ref * w).sum(), verts)
    assert torch.allclose(g, g_ref, atol=1e-10)


def test_interpolate_gradients_match_dense_reference_batched():
    verts, faces = _batched_sphere()
    cam = R.PerspectiveCamera(40.0, 40.0, 16.0, 16.0)
    vpix = cam.project(verts).detach().requires_grad_(True)
    attrs = torch.rand(2, verts.shape[1], 5, dtype=torch.float64, requires_grad=True)
    fr = R.rasterize(vpix, faces, (32, 32))
    # decoded faces: -1 exactly on the background, valid ids elsewhere
    cov = fr.pix_to_face >= 0
    assert cov.any() and (~cov).any()
    assert int(fr.pix_to_face.min()) == -1 and int(fr.pix_to_face.max()) < faces.shape[0]
    out = R.interpolate(attrs, fr, faces, background=0.25)
    p2f = fr.pix_to_face.clamp(min=0)
    corner = attrs[torch.arange(2)[:, None, None, None], faces[p2f]]  # (B, H, W, 3, C)
    ref = (corner * fr.bary[..., None]).sum(-2)
    ref = torch.where(cov[..., None], ref, torch.full_like(ref, 0.25))
    assert torch.allclose(out, ref, atol=1e-12)
    w = torch.randn_like(out)
    ga, gv = torch.autograd.grad((out * w).sum(), (attrs, vpix), retain_graph=True)
    ga_ref, gv_ref = torch.autograd.grad((ref * w).sum(), (attrs, vpix))
    assert torch.allclose(ga, ga_ref, atol=1e-10)
    assert torch.allclose(gv, gv_ref, atol=1e-8)
