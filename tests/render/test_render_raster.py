"""Rasteriser tests: analytic scenes and an independent brute-force ray-casting reference."""

from __future__ import annotations

import pytest
import torch

import facerig.render as R

F32_BARY_TOL = 1e-5


# ----------------------------------------------------------------------------------------------
# slow references kept in the tests
# ----------------------------------------------------------------------------------------------
def ref_raycast(verts_cam, faces, K_int, H, W, z_near=1e-3, k=1, cull=False):
    """Brute force, loop over faces: Moller-Trumbore ray/triangle intersection per pixel.

    verts_cam (V, 3) camera space (OpenCV), K_int = (fx, fy, cx, cy). Returns (H, W, k) face ids
    (nearest first), (H, W, k, 3) barycentrics, (H, W, k) depth. Independent of the rasteriser's
    maths (no projection of vertices at all), so it also checks near-plane clipping.
    """
    fx, fy, cx, cy = K_int
    vv, uu = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    d = torch.stack([(uu - cx) / fx, (vv - cy) / fy, torch.ones_like(uu)], -1).reshape(-1, 3)  # ray dirs, z = 1
    P = d.shape[0]
    hits_z, hits_f, hits_b = [], [], []
    vc = verts_cam.double()
    for f in range(faces.shape[0]):
        a, b, c = vc[faces[f]]
        if cull and torch.dot(torch.linalg.cross(b - a, c - a), a) >= 0:  # normal points away from camera
            continue
        e1, e2 = b - a, c - a
        pvec = torch.linalg.cross(d, e2.expand_as(d), dim=-1)
        det = pvec @ e1
        ok = det.abs() > 1e-14
        inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
        tvec = -a  # ray origin is the camera centre
        bu = (pvec @ tvec) * inv
        qvec = torch.linalg.cross(tvec.expand_as(d), e1.expand_as(d), dim=-1)
        bv = (d * qvec).sum(-1) * inv
        t = (qvec @ e2) * inv  # depth, since d_z = 1
        inside = ok & (bu >= 0) & (bv >= 0) & (bu + bv <= 1) & (t >= z_near)
        z = torch.where(inside, t, torch.full_like(t, float("inf")))
        hits_z.append(z)
        hits_f.append(torch.full((P,), f))
        hits_b.append(torch.stack([1 - bu - bv, bu, bv], -1))
    Z = torch.stack(hits_z, 1)
    Fi = torch.stack(hits_f, 1)
    Bc = torch.stack(hits_b, 1)
    order = torch.argsort(Z, dim=1, stable=True)[:, :k]
    z = torch.gather(Z, 1, order)
    fi = torch.gather(Fi, 1, order)
    bc = torch.gather(Bc, 1, order[..., None].expand(-1, -1, 3))
    empty = torch.isinf(z)
    fi = torch.where(empty, -1, fi)
    return fi.view(H, W, k), bc.view(H, W, k, 3), z.view(H, W, k)


def ref_raster_2d(verts_pix, faces, H, W):
    """Brute force orthographic reference: 2-D edge functions, depth linear in screen space."""
    vv, uu = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    best = torch.full((H, W), float("inf"), dtype=torch.float64)
    face = torch.full((H, W), -1)
    bary = torch.zeros(H, W, 3, dtype=torch.float64)
    vp = verts_pix.double()
    for f in range(faces.shape[0]):
        p = vp[faces[f]]
        area = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[1, 1] - p[0, 1]) * (p[2, 0] - p[0, 0])
        if area == 0:
            continue
        ls = []
        for i in range(3):
            j, k = (i + 1) % 3, (i + 2) % 3
            ls.append(((p[j, 0] - uu) * (p[k, 1] - vv) - (p[j, 1] - vv) * (p[k, 0] - uu)) / area)
        l = torch.stack(ls, -1)
        z = (l * p[:, 2]).sum(-1)
        inside = (l >= 0).all(-1) & (z < best)
        best = torch.where(inside, z, best)
        face = torch.where(inside, f, face)
        bary = torch.where(inside[..., None], l, bary)
    return face, bary


def random_mesh(n_faces, H, W, seed, depth=(4.0, 8.0), size=0.25):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n_faces, 1, 3, generator=g, dtype=torch.float64)
    centres[..., 2] = depth[0] + (depth[1] - depth[0]) * centres[..., 2]
    centres[..., :2] = (centres[..., :2] - 0.5) * 1.2 * centres[..., 2:]
    offs = (torch.rand(n_faces, 3, 3, generator=g, dtype=torch.float64) - 0.5) * size * centres[..., 2:]
    verts = (centres + offs).reshape(-1, 3)
    faces = torch.arange(3 * n_faces).view(n_faces, 3)
    return verts, faces


CAM = dict(fx=40.0, fy=44.0, cx=24.0, cy=20.0)
H0, W0 = 40, 48


def project(verts_cam, dtype=torch.float64):
    cam = R.PerspectiveCamera(CAM["fx"], CAM["fy"], CAM["cx"], CAM["cy"])
    return cam.project(verts_cam[None].to(dtype))


# ----------------------------------------------------------------------------------------------
# analytic scenes
# ----------------------------------------------------------------------------------------------
def test_one_triangle_coverage_hand_computed():
    # right triangle (1,1), (9,1), (1,9) in pixel coordinates, constant depth
    verts = torch.tensor([[[1.0, 1.0, 5.0], [9.0, 1.0, 5.0], [1.0, 9.0, 5.0]]])
    faces = torch.tensor([[0, 1, 2]])
    fr = R.rasterize(verts, faces, (12, 12))
    # centre (j+.5, i+.5) inside <=> j+.5 >= 1, i+.5 >= 1, (j+.5)+(i+.5) <= 10  <=> j, i >= 1, i + j <= 9
    expected = torch.zeros(12, 12, dtype=torch.bool)
    for i in range(12):
        for j in range(12):
            expected[i, j] = i >= 1 and j >= 1 and i + j <= 9
    assert fr.pix_to_face.dtype == torch.int64
    assert fr.pix_to_face.shape == (1, 12, 12)
    assert torch.equal(fr.pix_to_face[0] == 0, expected)
    assert int(expected.sum()) == 36
    assert torch.all(fr.pix_to_face[0][~expected] == -1)
    assert torch.allclose(fr.zbuf[0][expected], torch.tensor(5.0))
    assert torch.all(fr.zbuf[0][~expected] == -1)
    # barycentrics at pixel (row 3, col 2): centre (2.5, 3.5) -> b1 = 1.5/8, b2 = 2.5/8
    assert torch.allclose(fr.bary[0, 3, 2], torch.tensor([1 - 4.0 / 8, 1.5 / 8, 2.5 / 8]), atol=1e-6)
    assert torch.all(fr.bary[0][~expected] == 0)


def test_two_overlapping_triangles_depth_order():
    tri = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    near = torch.cat([tri, torch.full((3, 1), 2.0)], 1)
    far = torch.cat([tri + torch.tensor([2.0, 2.0]), torch.full((3, 1), 7.0)], 1)
    for order in ([near, far], [far, near]):
        verts = torch.cat(order)[None]
        faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
        fr = R.rasterize(verts, faces, (14, 14))
        near_id = 0 if order[0] is near else 1
        p = fr.pix_to_face[0]
        # pixel (row 3, col 3): centre (3.5, 3.5) inside both -> the near one
        assert p[3, 3] == near_id
        assert fr.zbuf[0, 3, 3] == pytest.approx(2.0)
        # pixel (row 9, col 4): centre (4.5, 9.5): outside near (sum 14 > 10), inside far (2.5+7.5 <= 10)
        assert p[9, 4] == 1 - near_id
        assert fr.zbuf[0, 9, 4] == pytest.approx(7.0)
        assert p[13, 13] == -1


def test_quad_split_in_two_no_holes_no_overlap():
    verts = torch.tensor([[[2.0, 2.0, 3.0], [12.0, 2.0, 3.0], [12.0, 12.0, 3.0], [2.0, 12.0, 3.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    fr = R.rasterize(verts, faces, (16, 16))
    p = fr.pix_to_face[0]
    ii, jj = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    inside = (ii >= 2) & (ii <= 11) & (jj >= 2) & (jj <= 11)
    assert torch.equal(p >= 0, inside)  # exactly the 100 centres of the square, no holes
    assert int((p >= 0).sum()) == 100
    # strictly above the diagonal v < u (x > y) -> face 0; strictly below -> face 1
    assert torch.all(p[inside & (jj > ii)] == 0)
    assert torch.all(p[inside & (jj < ii)] == 1)


def test_whole_image_triangle_and_bary_reproduce_positions():
    cam = R.PerspectiveCamera(50.0, 50.0, 32.0, 24.0)
    # a tilted triangle much larger than the view frustum, all in front of the camera
    verts_cam = torch.tensor([[[-40.0, -40.0, 6.0], [60.0, -30.0, 9.0], [-30.0, 70.0, 12.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    fr = R.rasterize(cam.project(verts_cam), faces, (48, 64))
    assert bool((fr.pix_to_face == 0).all())
    assert torch.allclose(fr.bary.sum(-1), torch.ones(1, 48, 64, dtype=torch.float64))
    # perspective-correct barycentrics interpolate the 3-D point seen through the pixel centre
    pts = R.interpolate(verts_cam, fr, faces)
    vv, uu = torch.meshgrid(torch.arange(48, dtype=torch.float64) + 0.5, torch.arange(64, dtype=torch.float64) + 0.5, indexing="ij")
    proj = cam.project(pts.reshape(1, -1, 3)).view(48, 64, 3)
    assert torch.allclose(proj[..., 0], uu, atol=1e-9)
    assert torch.allclose(proj[..., 1], vv, atol=1e-9)
    assert torch.allclose(proj[..., 2], fr.zbuf[0], atol=1e-9)


def test_subpixel_triangles():
    # 0.3-pixel triangles: around a pixel centre they cover it, between centres they cover nothing
    faces, verts = [], []
    small = torch.tensor([[-0.15, -0.1], [0.15, -0.1], [0.0, 0.2]])
    for n, (x, y) in enumerate([(3.5, 2.5), (6.0, 6.0), (8.5, 7.5), (1.0, 8.5)]):
        p = small + torch.tensor([x, y])
        verts.append(torch.cat([p, torch.full((3, 1), 4.0)], 1))
        faces.append([3 * n, 3 * n + 1, 3 * n + 2])
    fr = R.rasterize(torch.cat(verts)[None], torch.tensor(faces), (10, 10))
    p = fr.pix_to_face[0]
    assert int((p >= 0).sum()) == 2
    assert p[2, 3] == 0 and p[7, 8] == 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_random_meshes_match_bruteforce(dtype):
    agree = total = 0
    for seed in range(3):
        vc, faces = random_mesh(60, H0, W0, seed)
        fr = R.rasterize(project(vc, dtype), faces, (H0, W0))
        rf, rb, rz = ref_raycast(vc, faces, (CAM["fx"], CAM["fy"], CAM["cx"], CAM["cy"]), H0, W0)
        p = fr.pix_to_face[0]
        same = p == rf[..., 0]
        agree += int(same.sum())
        total += same.numel()
        m = same & (p >= 0)
        tol = 1e-9 if dtype == torch.float64 else F32_BARY_TOL
        assert torch.allclose(fr.bary[0][m].double(), rb[..., 0, :][m], atol=tol)
        assert torch.allclose(fr.zbuf[0][m].double(), rz[..., 0][m], rtol=1e-5 if dtype == torch.float32 else 1e-10)
        assert int(m.sum()) > 300
    assert agree / total >= 0.999


def test_batch_and_chunking_consistent():
    vc0, faces = random_mesh(80, H0, W0, 5)
    vc1, _ = random_mesh(80, H0, W0, 6)
    vp = torch.cat([project(vc0), project(vc1)])
    full = R.rasterize(vp, faces, (H0, W0))
    chunked = R.rasterize(vp, faces, (H0, W0), max_candidates=257)
    assert torch.equal(full.pix_to_face, chunked.pix_to_face)
    assert torch.allclose(full.bary, chunked.bary)
    single = R.rasterize(vp[1:], faces, (H0, W0))
    assert torch.equal(full.pix_to_face[1:], single.pix_to_face)


def test_orthographic_mode_matches_2d_reference():
    g = torch.Generator().manual_seed(3)
    n = 40
    verts = torch.rand(n, 1, 3, generator=g, dtype=torch.float64) * torch.tensor([W0, H0, 5.0]) + torch.tensor([0, 0, 1.0])
    verts = (verts + (torch.rand(n, 3, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([14.0, 14.0, 2.0])).reshape(-1, 3)
    faces = torch.arange(3 * n).view(n, 3)
    fr = R.rasterize(verts[None], faces, (H0, W0), perspective_correct=False)
    rf, rb = ref_raster_2d(verts, faces, H0, W0)
    same = fr.pix_to_face[0] == rf
    assert same.float().mean() >= 0.999
    m = same & (rf >= 0)
    assert torch.allclose(fr.bary[0][m], rb[m], atol=1e-9)


def test_near_plane_clipping_matches_raycast():
    # triangles crossing z_near = 1 (one and two vertices behind it, one vertex behind the camera)
    vc = torch.tensor(
        [[-1.0, -0.5, 0.5], [1.0, -0.5, 3.0], [0.0, 1.0, 3.0],
         [-0.5, 0.2, 2.0], [0.6, 0.4, 0.4], [0.2, -0.6, -0.5]],
        dtype=torch.float64,
    )
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    for z_near in (1.0, 0.6):
        fr = R.rasterize(project(vc), faces, (H0, W0), z_near=z_near)
        rf, rb, rz = ref_raycast(vc, faces, (CAM["fx"], CAM["fy"], CAM["cx"], CAM["cy"]), H0, W0, z_near=z_near)
        p = fr.pix_to_face[0]
        assert (p == rf[..., 0]).float().mean() >= 0.995
        m = (p == rf[..., 0]) & (p >= 0)
        assert int(m.sum()) > 50
        assert torch.allclose(fr.zbuf[0][m], rz[..., 0][m], rtol=1e-9)
        assert fr.zbuf[0][m].min() >= z_near - 1e-12
        assert torch.allclose(fr.bary[0][m], rb[..., 0, :][m], atol=1e-9)
    # a triangle entirely behind the near plane is not drawn
    fr = R.rasterize(project(vc), faces, (H0, W0), z_near=5.0)
    assert bool((fr.pix_to_face == -1).all())


def test_backface_culling():
    v, f = R.icosphere(2, dtype=torch.float64)
    cam = R.PerspectiveCamera(40.0, 40.0, 24.0, 20.0)
    vp = cam.project((v + torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64))[None])
    a = R.rasterize(vp, f, (H0, W0))
    b = R.rasterize(vp, f, (H0, W0), cull_backfaces=True)
    assert torch.equal(a.pix_to_face, b.pix_to_face)  # closed convex mesh: back faces are hidden anyway
    # reversed winding: the near hemisphere is culled, the inside of the far one is seen
    c = R.rasterize(vp, f.flip(1), (H0, W0), cull_backfaces=True)
    m = a.pix_to_face >= 0
    assert torch.equal(c.pix_to_face >= 0, m)
    assert bool((c.zbuf[m] > a.zbuf[m]).all())
    # a single triangle: drawn when its outward (counter-clockwise) normal faces the camera
    tri = torch.tensor([[[-0.5, -0.5, 3.0], [0.5, -0.5, 3.0], [0.0, 0.5, 3.0]]], dtype=torch.float64)
    n = torch.linalg.cross(tri[0, 1] - tri[0, 0], tri[0, 2] - tri[0, 0])
    assert n[2] > 0  # normal along +z, away from the camera: a back face
    one = torch.tensor([[0, 1, 2]])
    assert bool((R.rasterize(cam.project(tri), one, (H0, W0), cull_backfaces=True).pix_to_face == -1).all())
    assert int((R.rasterize(cam.project(tri), one.flip(1), (H0, W0), cull_backfaces=True).pix_to_face == 0).sum()) > 20
    # with K = 2 and no culling the second layer on the sphere is the back face
    k2 = R.rasterize(vp, f, (H0, W0), faces_per_pixel=2)
    inside = k2.pix_to_face[..., 0] >= 0
    assert (k2.pix_to_face[..., 1][inside] >= 0).float().mean() > 0.95


def test_k_nearest_ordering_matches_bruteforce():
    vc, faces = random_mesh(60, H0, W0, 11, size=0.6)
    K = 3
    fr = R.rasterize(project(vc), faces, (H0, W0), faces_per_pixel=K, max_candidates=500)
    assert fr.pix_to_face.shape == (1, H0, W0, K)
    assert fr.bary.shape == (1, H0, W0, K, 3)
    assert fr.zbuf.shape == (1, H0, W0, K)
    rf, rb, rz = ref_raycast(vc, faces, (CAM["fx"], CAM["fy"], CAM["cx"], CAM["cy"]), H0, W0, k=K)
    p = fr.pix_to_face[0]
    assert (p == rf).float().mean() >= 0.999
    z = fr.zbuf[0]
    both = (p[..., 1:] >= 0)
    assert bool((z[..., 1:][both] >= z[..., :-1][both]).all())  # nearest first
    assert int((p[..., 2] >= 0).sum()) > 20
    m = (p == rf) & (p >= 0)
    assert torch.allclose(fr.bary[0][m], rb[m], atol=1e-9)
    # first layer equals the K = 1 result
    assert torch.equal(R.rasterize(project(vc), faces, (H0, W0)).pix_to_face[0], p[..., 0])


def test_bary_gradcheck_wrt_vertices():
    verts = torch.tensor([[[1.3, 1.1, 5.0], [9.2, 1.7, 6.0], [2.1, 9.4, 7.0], [9.0, 9.0, 4.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    for persp in (True, False):
        def f(v):
            fr = R.rasterize(v, faces, (11, 11), perspective_correct=persp)
            return fr.bary, fr.zbuf
        torch.autograd.gradcheck(f, (verts.clone().requires_grad_(True),), eps=1e-7, atol=1e-6)


def test_large_image_memory_bounded():
    # a full-image quad at 1024 x 1024, processed in chunks of 2^18 candidates
    verts = torch.tensor([[[-5.0, -5.0, 2.0], [1030.0, -5.0, 2.0], [1030.0, 1030.0, 2.0], [-5.0, 1030.0, 2.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    fr = R.rasterize(verts, faces, (1024, 1024), max_candidates=1 << 18)
    assert bool((fr.pix_to_face >= 0).all())


def test_input_validation():
    faces = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match="verts"):
        R.rasterize(torch.zeros(3, 3), faces, (4, 4))
    with pytest.raises(ValueError, match="faces"):
        R.rasterize(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 5]]), (4, 4))
    with pytest.raises(ValueError, match="image_size"):
        R.rasterize(torch.zeros(1, 3, 3), faces, (0, 4))
    with pytest.raises(TypeError, match="faces"):
        R.rasterize(torch.zeros(1, 3, 3), faces.float(), (4, 4))
    with pytest.raises(ValueError, match="faces_per_pixel"):
        R.rasterize(torch.zeros(1, 3, 3), faces, (4, 4), faces_per_pixel=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    vc, faces = random_mesh(60, H0, W0, 1)
    vp = project(vc, torch.float32)
    a = R.rasterize(vp, faces, (H0, W0))
    b = R.rasterize(vp.cuda(), faces.cuda(), (H0, W0))
    assert (a.pix_to_face == b.pix_to_face.cpu()).float().mean() > 0.999
