"""Cameras: OpenCV pinhole perspective and orthographic / weak perspective.

Frame conventions
-----------------
* **Camera frame (facerig, OpenCV):** x right, y down, z forward (the camera looks along +z).
  World -> camera is ``X_cam = R @ X_world + t`` (see :mod:`facerig.render.transforms`).
* **Pixel frame:** x (column) right, y (row) down, origin at the top-left corner of the image, so
  pixel row i, column j has its centre at ``(j + 0.5, i + 0.5)``. Focal lengths and principal
  point are in pixels.
* :meth:`PerspectiveCamera.project` returns ``(u, v, z)`` with ``z`` the view depth (camera-space
  Z, same unit as the input, larger = farther). That is exactly what
  :func:`facerig.render.rasterize` takes; use ``perspective_correct=camera.perspective_correct``.

Other conventions (the matrices are documented in the functions):
* OpenGL eye frame = ``diag(1, -1, -1) @`` OpenCV camera frame (y up, looking along -z);
  :meth:`PerspectiveCamera.opengl_projection` gives the matching 4x4 clip matrix.
* pytorch3d: camera frame = ``diag(-1, -1, 1) @`` OpenCV camera frame (x left, y up, z forward),
  row-vector convention ``X_cam = X_world @ R + T``; :func:`opencv_to_pytorch3d` converts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "PerspectiveCamera",
    "OrthographicCamera",
    "OPENCV_TO_OPENGL",
    "OPENCV_TO_PYTORCH3D",
    "opencv_to_opengl_view",
    "opencv_to_pytorch3d",
]

#: Axis flip from the OpenCV camera frame to the OpenGL eye frame: ``X_gl = diag(1,-1,-1) X_cv``.
OPENCV_TO_OPENGL = (1.0, -1.0, -1.0)
#: Axis flip from the OpenCV camera frame to pytorch3d's view frame: ``X_p3d = diag(-1,-1,1) X_cv``.
OPENCV_TO_PYTORCH3D = (-1.0, -1.0, 1.0)


def _as_param(x, name, ref=None):
    """Turn a float or tensor into a 1-D tensor (B,) (B may be 1, broadcast later)."""
    if isinstance(x, torch.Tensor):
        if x.ndim > 1:
            raise ValueError(f"{name} must be a scalar or a (B,) tensor, got shape {tuple(x.shape)}")
        return x.reshape(-1)
    if isinstance(x, (int, float)):
        kw = {} if ref is None else {"dtype": ref.dtype, "device": ref.device}
        return torch.tensor([float(x)], **kw)
    raise TypeError(f"{name} must be a float or a torch.Tensor, got {type(x).__name__}")


def _check_points(points, name="points", n=3):
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
    if points.ndim != 3 or points.shape[-1] != n:
        raise ValueError(f"{name} must have shape (B, N, {n}), got {tuple(points.shape)}")


@dataclass
class PerspectiveCamera:
    """OpenCV pinhole camera ``u = fx X/Z + cx``, ``v = fy Y/Z + cy`` (pixels).

    Attributes:
        fx, fy: focal lengths in pixels, floats or (B,) tensors.
        cx, cy: principal point in pixels (the image centre is ``(W/2, H/2)``), floats or (B,).
    """

    fx: torch.Tensor | float
    fy: torch.Tensor | float
    cx: torch.Tensor | float
    cy: torch.Tensor | float

    perspective_correct = True

    @classmethod
    def from_fov(cls, fov_y_deg: float, image_size, dtype=None, device=None) -> "PerspectiveCamera":
        """Square-pixel camera with vertical field of view ``fov_y_deg`` centred on an (H, W) image."""
        H, W = image_size
        f = 0.5 * H / math.tan(math.radians(fov_y_deg) / 2)
        kw = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        return cls(*(torch.tensor([v], **kw) for v in (f, f, W / 2.0, H / 2.0)))

    def _params(self, ref: torch.Tensor):
        out = []
        for name in ("fx", "fy", "cx", "cy"):
            p = _as_param(getattr(self, name), name, ref).to(dtype=ref.dtype, device=ref.device)
            out.append(p[:, None])  # (B or 1, 1) broadcast over points
        return out

    def intrinsics(self, dtype=None, device=None) -> torch.Tensor:
        """The (B, 3, 3) intrinsic matrix ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``."""
        ref = torch.empty(0, dtype=dtype or torch.get_default_dtype(), device=device)
        fx, fy, cx, cy = (p[:, 0] for p in self._params(ref))
        B = max(fx.shape[0], fy.shape[0], cx.shape[0], cy.shape[0])
        K = torch.zeros(B, 3, 3, dtype=ref.dtype, device=ref.device)
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = fx, fy, cx, cy, 1.0
        return K

    def project(self, points: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
        """Camera-space points (B, N, 3) -> pixel-space vertices (B, N, 3) ``(u, v, depth)``.

        ``depth`` is camera-space Z. Points behind the camera (Z < 0) are projected with the same
        formula (their pixel position is mirrored), which keeps ``(u Z, v Z, Z)`` linear in camera
        space: the rasteriser relies on that to clip triangles against the near plane exactly.
        ``|Z| < eps`` is replaced by ``eps`` to avoid infinities.
        """
        _check_points(points)
        fx, fy, cx, cy = self._params(points)
        X, Y, Z = points.unbind(-1)
        Zs = torch.where(Z.abs() < eps, torch.full_like(Z, eps), Z)
        return torch.stack(torch.broadcast_tensors(fx * X / Zs + cx, fy * Y / Zs + cy, Z), dim=-1)

    __call__ = project

    def unproject(self, pixels: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Pixel positions (B, N, 2) and depths (B, N) -> camera-space points (B, N, 3)."""
        _check_points(pixels, "pixels", 2)
        fx, fy, cx, cy = self._params(pixels)
        u, v = pixels.unbind(-1)
        return torch.stack(torch.broadcast_tensors((u - cx) / fx * depth, (v - cy) / fy * depth, depth), dim=-1)

    def opengl_projection(self, image_size, znear: float = 0.1, zfar: float = 1000.0) -> torch.Tensor:
        """(B, 4, 4) OpenGL clip matrix P such that ``P @ [X_gl, 1]`` gives clip coordinates.

        ``X_gl = diag(1, -1, -1) X_cv`` (see :func:`opencv_to_opengl_view`); NDC x right, y up in
        [-1, 1] spanning the pixel edges, so NDC ``x = 2u/W - 1`` and ``y = 1 - 2v/H``::

            [[2fx/W, 0,      1 - 2cx/W,           0],
             [0,     2fy/H,  2cy/H - 1,           0],
             [0,     0,     -(f+n)/(f-n),  -2fn/(f-n)],
             [0,     0,     -1,                   0]]
        """
        H, W = image_size
        ref = self.fx if isinstance(self.fx, torch.Tensor) else torch.empty(0)
        fx, fy, cx, cy = (p[:, 0] for p in self._params(ref))
        B = max(fx.shape[0], fy.shape[0], cx.shape[0], cy.shape[0])
        P = torch.zeros(B, 4, 4, dtype=fx.dtype, device=fx.device)
        P[:, 0, 0] = 2 * fx / W
        P[:, 0, 2] = 1 - 2 * cx / W
        P[:, 1, 1] = 2 * fy / H
        P[:, 1, 2] = 2 * cy / H - 1
        P[:, 2, 2] = -(zfar + znear) / (zfar - znear)
        P[:, 2, 3] = -2 * zfar * znear / (zfar - znear)
        P[:, 3, 2] = -1
        return P


@dataclass
class OrthographicCamera:
    """Orthographic / weak-perspective camera ``u = sx X + cx``, ``v = sy Y + cy``, depth = Z.

    Attributes:
        sx, sy: scales in pixels per length unit (floats or (B,)). A weak-perspective camera of
            focal length f at reference depth z_ref is ``sx = sy = f / z_ref``.
        cx, cy: pixel position of the camera axis (floats or (B,)).

    Use ``rasterize(..., perspective_correct=False)``: depth and attributes are affine in screen
    space for this camera.
    """

    sx: torch.Tensor | float
    sy: torch.Tensor | float
    cx: torch.Tensor | float
    cy: torch.Tensor | float

    perspective_correct = False

    @classmethod
    def weak_perspective(cls, focal, z_ref, cx, cy) -> "OrthographicCamera":
        """Weak perspective: scale ``focal / z_ref`` (floats or (B,) tensors)."""
        s = focal / z_ref
        return cls(s, s, cx, cy)

    def _params(self, ref):
        return [
            _as_param(getattr(self, n), n, ref).to(dtype=ref.dtype, device=ref.device)[:, None]
            for n in ("sx", "sy", "cx", "cy")
        ]

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Camera-space points (B, N, 3) -> pixel-space vertices (B, N, 3) ``(u, v, Z)``."""
        _check_points(points)
        sx, sy, cx, cy = self._params(points)
        X, Y, Z = points.unbind(-1)
        return torch.stack(torch.broadcast_tensors(sx * X + cx, sy * Y + cy, Z), dim=-1)

    __call__ = project

    def unproject(self, pixels: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Pixel positions (B, N, 2) and depths (B, N) -> camera-space points (B, N, 3)."""
        _check_points(pixels, "pixels", 2)
        sx, sy, cx, cy = self._params(pixels)
        u, v = pixels.unbind(-1)
        return torch.stack(torch.broadcast_tensors((u - cx) / sx, (v - cy) / sy, depth), dim=-1)

    def opengl_projection(self, image_size, znear: float = 0.1, zfar: float = 1000.0) -> torch.Tensor:
        """(B, 4, 4) OpenGL orthographic clip matrix for eye coordinates ``diag(1,-1,-1) X_cv``::

            [[2sx/W, 0,     0,          2cx/W - 1],
             [0,     2sy/H, 0,          1 - 2cy/H],
             [0,     0,    -2/(f-n),   -(f+n)/(f-n)],
             [0,     0,     0,          1]]
        """
        H, W = image_size
        ref = self.sx if isinstance(self.sx, torch.Tensor) else torch.empty(0)
        sx, sy, cx, cy = (p[:, 0] for p in self._params(ref))
        B = max(sx.shape[0], sy.shape[0], cx.shape[0], cy.shape[0])
        P = torch.zeros(B, 4, 4, dtype=sx.dtype, device=sx.device)
        P[:, 0, 0] = 2 * sx / W
        P[:, 0, 3] = 2 * cx / W - 1
        P[:, 1, 1] = 2 * sy / H
        P[:, 1, 3] = 1 - 2 * cy / H
        P[:, 2, 2] = -2 / (zfar - znear)
        P[:, 2, 3] = -(zfar + znear) / (zfar - znear)
        P[:, 3, 3] = 1
        return P


def opencv_to_opengl_view(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """OpenCV world->camera (R (B,3,3), t (B,3)) -> OpenGL 4x4 view matrix (B, 4, 4).

    ``V = diag(1, -1, -1, 1) @ [[R, t], [0, 1]]``: the OpenGL eye frame has y up and looks down -z.
    """
    from .transforms import rigid_matrix

    M = rigid_matrix(R, t)
    flip = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=M.dtype, device=M.device)
    return flip[:, None] * M


def opencv_to_pytorch3d(R: torch.Tensor, t: torch.Tensor, K: torch.Tensor, image_size) -> dict:
    """Convert an OpenCV camera to pytorch3d ``PerspectiveCameras`` arguments (NDC, ``in_ndc=True``).

    Same maths as pytorch3d's ``cameras_from_opencv_projection``:
    ``R_p3d = R^T`` with its first two columns negated, ``T_p3d = diag(-1, -1, 1) t`` (pytorch3d
    multiplies row vectors: ``X_view = X_world @ R_p3d + T_p3d``; its view frame is x left, y up,
    z forward), ``focal_length = (fx, fy) / s`` and ``principal_point = -((cx, cy) - (W, H)/2) / s``
    with ``s = min(H, W) / 2``.

    Args:
        R: (B, 3, 3), t: (B, 3) world->camera (OpenCV); K: (B, 3, 3) intrinsics; image_size (H, W).

    Returns:
        dict with ``R`` (B,3,3), ``T`` (B,3), ``focal_length`` (B,2), ``principal_point`` (B,2).
    """
    H, W = image_size
    s = min(H, W) / 2.0
    focal = torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=-1) / s
    c0 = torch.tensor([W / 2.0, H / 2.0], dtype=K.dtype, device=K.device)
    pp = -(K[:, :2, 2] - c0) / s
    flip = torch.tensor(OPENCV_TO_PYTORCH3D, dtype=R.dtype, device=R.device)
    R_p3d = R.transpose(1, 2) * flip  # negate the first two columns
    T_p3d = t * flip
    return {"R": R_p3d, "T": T_p3d, "focal_length": focal, "principal_point": pp}
