"""Rotations and batched rigid transforms.

Conventions
-----------
* Rotation matrices act on column vectors: ``x' = R @ x``. Batched points ``(B, N, 3)`` are
  transformed with :func:`transform_points` as ``x @ R^T + t``.
* Axis-angle vectors ``(..., 3)``: direction = axis, norm = angle in radians (right-hand rule).
* 6-D representation (Zhou et al., CVPR 2019, "On the continuity of rotation representations"):
  the first two **columns** of R, concatenated ``(R[:, 0], R[:, 1])`` -> ``(..., 6)``.
* Yaw / pitch / roll ``(..., 3)`` in radians, in the OpenCV camera frame (x right, y down,
  z forward): pitch about x, yaw about y, roll about z, composed as
  ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (pitch applied first).
* Quaternions ``(..., 4)`` are ``(w, x, y, z)``, real part first.

All functions are differentiable, follow the input's device and dtype and accept any leading
batch shape.
"""

from __future__ import annotations

import torch

__all__ = [
    "skew",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "quaternion_to_axis_angle",
    "axis_angle_to_quaternion",
    "rotation_6d_to_matrix",
    "matrix_to_rotation_6d",
    "euler_to_matrix",
    "matrix_to_euler",
    "transform_points",
    "compose_rigid",
    "invert_rigid",
    "rigid_matrix",
]

_SMALL = 1e-6  # squared-angle threshold under which Taylor series are used


def _check_last(x: torch.Tensor, n: int, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(f"{name} must have shape (..., {n}), got {tuple(x.shape)}")


def _check_mat(R: torch.Tensor, name: str = "R") -> None:
    if not isinstance(R, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(R).__name__}")
    if R.ndim < 2 or R.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape (..., 3, 3), got {tuple(R.shape)}")


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrix ``[v]_x`` of ``v`` (..., 3) -> (..., 3, 3), so ``[v]_x w = v x w``."""
    _check_last(v, 3, "v")
    z = torch.zeros_like(v[..., 0])
    x, y, w = v.unbind(-1)
    return torch.stack([z, -w, y, w, z, -x, -y, x, z], dim=-1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: axis-angle (..., 3) [rad] -> rotation matrix (..., 3, 3).

    ``R = I + A [r]_x + B [r]_x^2`` with ``A = sin(t)/t`` and ``B = (1 - cos t)/t^2``; both are
    replaced by their Taylor series for ``t^2 < 1e-6``, so the value and the gradient at
    ``aa = 0`` are exact (``dR/dr_k = [e_k]_x``) and never NaN.
    """
    _check_last(aa, 3, "aa")
    t2 = (aa * aa).sum(-1)
    small = t2 < _SMALL
    t2_safe = torch.where(small, torch.ones_like(t2), t2)
    t = t2_safe.sqrt()
    A = torch.where(small, 1.0 - t2 / 6.0 + t2 * t2 / 120.0, torch.sin(t) / t)
    B = torch.where(small, 0.5 - t2 / 24.0 + t2 * t2 / 720.0, (1.0 - torch.cos(t)) / t2_safe)
    K = skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(K.shape)
    return eye + A[..., None, None] * K + B[..., None, None] * (K @ K)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> unit quaternion (..., 4) ``(w, x, y, z)`` with ``w >= 0``.

    Shepperd's method: the four candidate formulas are all evaluated and the best-conditioned one
    (largest denominator) is picked per element, so it is stable for every rotation.
    """
    _check_mat(R)
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    q_abs = torch.stack(
        [1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22],
        dim=-1,
    )
    q_abs = torch.sqrt(torch.clamp(q_abs, min=1e-12))  # = 2 |q_k|
    cands = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    ) / (2.0 * q_abs[..., :, None])
    idx = q_abs.argmax(dim=-1)
    q = torch.gather(cands, -2, idx[..., None, None].expand(idx.shape + (1, 4))).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Quaternion (..., 4) ``(w, x, y, z)`` (normalised internally) -> rotation matrix (..., 3, 3)."""
    _check_last(q, 4, "q")
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))


def quaternion_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """Quaternion (..., 4) ``(w, x, y, z)`` -> axis-angle (..., 3), angle in [0, pi]."""
    _check_last(q, 4, "q")
    q = torch.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    n2 = (v * v).sum(-1)
    small = n2 < _SMALL * 1e-2
    n = torch.where(small, torch.ones_like(n2), n2).sqrt()
    angle = 2.0 * torch.atan2(n, q[..., 0])
    w = q[..., 0]
    # small |v|: angle/|v| ~ 2/w * (1 + |v|^2/(3 w^2))
    scale = torch.where(small, 2.0 / w * (1.0 + n2 / (3.0 * w * w)), angle / n)
    return v * scale[..., None]


def axis_angle_to_quaternion(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3) -> unit quaternion (..., 4) ``(w, x, y, z)``."""
    _check_last(aa, 3, "aa")
    t2 = (aa * aa).sum(-1)
    small = t2 < _SMALL
    t = torch.where(small, torch.ones_like(t2), t2).sqrt()
    half_sinc = torch.where(small, 0.5 - t2 / 48.0, torch.sin(t / 2) / t)
    w = torch.where(small, 1.0 - t2 / 8.0, torch.cos(t / 2))
    return torch.cat([w[..., None], aa * half_sinc[..., None]], dim=-1)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi] (via quaternions)."""
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """6-D representation (..., 6) -> rotation matrix (..., 3, 3) by Gram-Schmidt.

    ``d6 = (a1, a2)``; ``b1 = a1/|a1|``, ``b2`` = normalised part of ``a2`` orthogonal to ``b1``,
    ``b3 = b1 x b2``; the columns of R are ``(b1, b2, b3)`` (Zhou et al. 2019).
    """
    _check_last(d6, 6, "d6")
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> 6-D representation (..., 6): its first two columns."""
    _check_mat(R)
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def _rx(a):
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(a.shape + (3, 3))


def _ry(a):
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(a.shape + (3, 3))


def _rz(a):
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(a.shape + (3, 3))


def euler_to_matrix(ypr: torch.Tensor) -> torch.Tensor:
    """Yaw, pitch, roll (..., 3) [rad] -> ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (..., 3, 3).

    Axes are those of the OpenCV camera frame: pitch about x (nodding), yaw about y (shaking the
    head), roll about z (tilting).
    """
    _check_last(ypr, 3, "ypr")
    yaw, pitch, roll = ypr.unbind(-1)
    return _rz(roll) @ _ry(yaw) @ _rx(pitch)


def matrix_to_euler(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> yaw, pitch, roll (..., 3), inverse of :func:`euler_to_matrix`.

    Yaw is returned in [-pi/2, pi/2]; at gimbal lock (|yaw| = pi/2) pitch is set to 0.
    """
    _check_mat(R)
    cy = torch.sqrt(R[..., 2, 1] ** 2 + R[..., 2, 2] ** 2)
    yaw = torch.atan2(-R[..., 2, 0], cy)
    lock = cy < 1e-7
    pitch = torch.where(lock, torch.zeros_like(yaw), torch.atan2(R[..., 2, 1], R[..., 2, 2]))
    roll = torch.where(
        lock, torch.atan2(-R[..., 0, 1], R[..., 1, 1]), torch.atan2(R[..., 1, 0], R[..., 0, 0])
    )
    return torch.stack([yaw, pitch, roll], dim=-1)


def transform_points(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """Rigid (or linear) transform of batched points: ``points @ R^T + t``.

    Args:
        points: (B, N, 3) (or (N, 3)).
        R: (B, 3, 3) or (3, 3) rotation (any 3x3 matrix works).
        t: (B, 3) or (3,) translation, optional. Same length unit as ``points``.

    Returns:
        (B, N, 3) transformed points.
    """
    _check_last(points, 3, "points")
    _check_mat(R)
    out = points @ R.transpose(-1, -2)
    if t is not None:
        _check_last(t, 3, "t")
        out = out + t[..., None, :]
    return out


def compose_rigid(R1, t1, R2, t2):
    """Compose two rigid transforms: first (R2, t2) then (R1, t1).

    Returns ``(R1 @ R2, R1 @ t2 + t1)`` with shapes (B, 3, 3) and (B, 3).
    """
    _check_mat(R1, "R1")
    _check_mat(R2, "R2")
    return R1 @ R2, (R1 @ t2[..., None])[..., 0] + t1


def invert_rigid(R, t):
    """Inverse of ``x -> R x + t``: returns ``(R^T, -R^T t)`` of shapes (B, 3, 3) and (B, 3)."""
    _check_mat(R)
    Rt = R.transpose(-1, -2)
    return Rt, -(Rt @ t[..., None])[..., 0]


def rigid_matrix(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Homogeneous 4x4 matrix ``[[R, t], [0, 1]]`` (..., 4, 4) from R (..., 3, 3) and t (..., 3)."""
    _check_mat(R)
    _check_last(t, 3, "t")
    top = torch.cat([R, t[..., None]], dim=-1)
    bottom = torch.zeros(top.shape[:-2] + (1, 4), dtype=R.dtype, device=R.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)
