"""Cameras, rotation parametrisations and convention conversions."""

from __future__ import annotations

import math

import pytest
import torch

import facerig.render as R
from facerig.render import transforms as T


def random_rotations(n, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=dtype), dim=-1)
    angle = torch.rand(n, 1, generator=g, dtype=dtype) * (math.pi - 1e-3)
    return axis * angle


def test_axis_angle_matrix_round_trip_and_orthonormal():
    aa = random_rotations(64)
    Rm = T.axis_angle_to_matrix(aa)
    eye = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    assert torch.allclose(Rm @ Rm.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(Rm), torch.ones(64, dtype=torch.float64))
    assert torch.allclose(T.matrix_to_axis_angle(Rm), aa, atol=1e-9)
    # Rodrigues vs matrix exponential of the skew matrix
    assert torch.allclose(Rm, torch.linalg.matrix_exp(T.skew(aa)), atol=1e-12)
    # small angles (Taylor branch) too
    small = aa * 1e-5
    assert torch.allclose(T.axis_angle_to_matrix(small), torch.linalg.matrix_exp(T.skew(small)), atol=1e-15)
    assert torch.allclose(T.matrix_to_axis_angle(T.axis_angle_to_matrix(small)), small, atol=1e-12)


def test_axis_angle_gradient_at_zero_is_exact():
    aa = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    J = torch.autograd.functional.jacobian(lambda a: T.axis_angle_to_matrix(a), aa)  # (1,3,3,1,3)
    for k in range(3):
        e = torch.zeros(1, 3, dtype=torch.float64)
        e[0, k] = 1
        assert torch.allclose(J[0, :, :, 0, k], T.skew(e)[0])
    assert torch.isfinite(J).all()
    torch.autograd.gradcheck(T.axis_angle_to_matrix, (torch.full((2, 3), 1e-4, dtype=torch.float64, requires_grad=True),))
    torch.autograd.gradcheck(T.axis_angle_to_matrix, (random_rotations(3).requires_grad_(True),))


def test_quaternion_6d_euler_round_trips():
    Rm = T.axis_angle_to_matrix(random_rotations(64))
    q = T.matrix_to_quaternion(Rm)
    assert torch.allclose(q.norm(dim=-1), torch.ones(64, dtype=torch.float64))
    assert torch.allclose(T.quaternion_to_matrix(q), Rm, atol=1e-12)
    assert torch.allclose(T.axis_angle_to_quaternion(T.quaternion_to_axis_angle(q)), q, atol=1e-12)
    d6 = T.matrix_to_rotation_6d(Rm)
    assert torch.allclose(T.rotation_6d_to_matrix(d6), Rm, atol=1e-12)
    # 6-D -> matrix is a projection: any (non-degenerate) 6-vector gives a rotation
    Rn = T.rotation_6d_to_matrix(torch.randn(10, 6, dtype=torch.float64))
    assert torch.allclose(Rn @ Rn.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(10, 3, 3), atol=1e-12)
    ypr = (torch.rand(64, 3, dtype=torch.float64) - 0.5) * torch.tensor([3.0, 6.0, 6.0], dtype=torch.float64)
    Re = T.euler_to_matrix(ypr)
    assert torch.allclose(T.matrix_to_euler(Re), ypr, atol=1e-10)
    assert torch.allclose(T.euler_to_matrix(T.matrix_to_euler(Rm)), Rm, atol=1e-10)
    # convention: yaw only = rotation about y
    Ry = T.euler_to_matrix(torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(Ry, T.axis_angle_to_matrix(torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64)))


def test_rigid_transforms():
    Rm = T.axis_angle_to_matrix(random_rotations(4))
    t = torch.randn(4, 3, dtype=torch.float64)
    x = torch.randn(4, 10, 3, dtype=torch.float64)
    y = T.transform_points(x, Rm, t)
    Ri, ti = T.invert_rigid(Rm, t)
    assert torch.allclose(T.transform_points(y, Ri, ti), x, atol=1e-12)
    Rc, tc = T.compose_rigid(Ri, ti, Rm, t)
    assert torch.allclose(Rc, torch.eye(3, dtype=torch.float64).expand(4, 3, 3), atol=1e-12)
    assert torch.allclose(tc, torch.zeros(4, 3, dtype=torch.float64), atol=1e-12)
    M = T.rigid_matrix(Rm, t)
    xh = torch.cat([x, torch.ones(4, 10, 1, dtype=torch.float64)], -1)
    assert torch.allclose((xh @ M.transpose(1, 2))[..., :3], y)


@pytest.mark.parametrize("kind", ["perspective", "orthographic"])
def test_project_unproject_round_trip(kind):
    pts = torch.randn(2, 50, 3, dtype=torch.float64) + torch.tensor([0.0, 0.0, 6.0], dtype=torch.float64)
    if kind == "perspective":
        cam = R.PerspectiveCamera(torch.tensor([500.0, 400.0]), torch.tensor([510.0, 390.0]), 112.0, 100.0)
    else:
        cam = R.OrthographicCamera.weak_perspective(500.0, 6.0, 112.0, 100.0)
    uvz = cam.project(pts)
    assert torch.allclose(cam.unproject(uvz[..., :2], uvz[..., 2]), pts, atol=1e-10)
    if kind == "perspective":
        # the principal point projects to (cx, cy); OpenCV: +x right, +y down
        c = cam.project(torch.tensor([[[0.0, 0.0, 3.0], [1.0, 1.0, 3.0]]], dtype=torch.float64))
        assert torch.allclose(c[0, 0, :2], torch.tensor([112.0, 100.0], dtype=torch.float64))
        assert c[0, 1, 0] > 112 and c[0, 1, 1] > 100


def test_opengl_projection_matches_pixels():
    H, W = 120, 160
    cam = R.PerspectiveCamera(150.0, 140.0, 70.0, 65.0)
    pts = torch.randn(1, 20, 3, dtype=torch.float64) + torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64)
    uv = cam.project(pts)[..., :2]
    P = cam.opengl_projection((H, W), 0.1, 100.0).double()
    Rm, t = torch.eye(3, dtype=torch.float64)[None], torch.zeros(1, 3, dtype=torch.float64)
    V = R.opencv_to_opengl_view(Rm, t)
    xh = torch.cat([pts, torch.ones(1, 20, 1, dtype=torch.float64)], -1)
    clip = xh @ (P @ V).transpose(1, 2)
    ndc = clip[..., :3] / clip[..., 3:]
    assert torch.allclose((ndc[..., 0] + 1) / 2 * W, uv[..., 0], atol=1e-9)
    assert torch.allclose((1 - ndc[..., 1]) / 2 * H, uv[..., 1], atol=1e-9)
    assert bool(((ndc[..., 2] > -1) & (ndc[..., 2] < 1)).all())
    ortho = R.OrthographicCamera(30.0, 30.0, 80.0, 60.0)
    Po = ortho.opengl_projection((H, W)).double()
    clip = xh @ (Po @ V).transpose(1, 2)
    uvo = ortho.project(pts)
    assert torch.allclose((clip[..., 0] + 1) / 2 * W, uvo[..., 0], atol=1e-9)
    assert torch.allclose((1 - clip[..., 1]) / 2 * H, uvo[..., 1], atol=1e-9)


def test_pytorch3d_conversion_reproduces_opencv_projection():
    H, W = 100, 140
    Rm = T.axis_angle_to_matrix(random_rotations(2))
    t = torch.tensor([[0.1, -0.2, 6.0], [0.3, 0.1, 8.0]], dtype=torch.float64)
    K = R.PerspectiveCamera(torch.tensor([120.0, 90.0]), torch.tensor([125.0, 95.0]), torch.tensor([60.0, 75.0]), torch.tensor([45.0, 52.0])).intrinsics(torch.float64)
    X = torch.randn(2, 15, 3, dtype=torch.float64)
    cv = R.PerspectiveCamera(K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]).project(T.transform_points(X, Rm, t))
    p = R.opencv_to_pytorch3d(Rm, t, K, (H, W))
    # pytorch3d's own equations: row-vector view transform, then NDC (+x left, +y up), s = min(H, W)/2
    Xv = X @ p["R"] + p["T"][:, None]
    x_ndc = p["focal_length"][:, None, 0] * Xv[..., 0] / Xv[..., 2] + p["principal_point"][:, None, 0]
    y_ndc = p["focal_length"][:, None, 1] * Xv[..., 1] / Xv[..., 2] + p["principal_point"][:, None, 1]
    s = min(H, W) / 2
    assert torch.allclose(W / 2 - x_ndc * s, cv[..., 0], atol=1e-9)
    assert torch.allclose(H / 2 - y_ndc * s, cv[..., 1], atol=1e-9)


def test_camera_validation():
    cam = R.PerspectiveCamera(1.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="points"):
        cam.project(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="aa"):
        T.axis_angle_to_matrix(torch.zeros(2, 4))
