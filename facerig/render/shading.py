"""Normals, spherical-harmonics (SH) Lambertian shading, Blinn-Phong specular, compositing.

SH illumination
---------------
Second-order real SH (9 functions) with the constants of MoFA / Deep3DFaceRecon: for a unit
normal ``n = (x, y, z)`` the irradiance basis is ``Y_k(n) * a_k * c_k``::

    k  function              a (Lambertian band factor)   c (SH normalisation)
    0  1                     pi                            1/sqrt(4 pi)
    1  -y                    2 pi / sqrt(3)                sqrt(3) / sqrt(4 pi)
    2   z                    2 pi / sqrt(3)                sqrt(3) / sqrt(4 pi)
    3  -x                    2 pi / sqrt(3)                sqrt(3) / sqrt(4 pi)
    4   x y                  2 pi / sqrt(8)                3 sqrt(5) / sqrt(12 pi)
    5  -y z                  2 pi / sqrt(8)                3 sqrt(5) / sqrt(12 pi)
    6  (3 z^2 - 1) / (2 sqrt 3)  2 pi / sqrt(8)            3 sqrt(5) / sqrt(12 pi)
    7  -x z                  2 pi / sqrt(8)                3 sqrt(5) / sqrt(12 pi)
    8  (x^2 - y^2) / 2       2 pi / sqrt(8)                3 sqrt(5) / sqrt(12 pi)

and a colour channel's irradiance is ``sum_k gamma[k, ch] * basis_k(n)``; the shaded colour is
``albedo * irradiance``. Coefficients ``gamma`` are (B, 9, 3) (basis, RGB channel), or (B, 27)
laid out as Deep3DFaceRecon does (9 red, 9 green, 9 blue). The ambient-only light
``gamma[:, 0, :] = 1 / (a_0 c_0) = 2 / sqrt(pi)`` gives irradiance 1 (shaded colour = albedo).
The basis is evaluated on normals in whatever frame they are given; :func:`facerig.render.render_mesh`
passes camera-frame (OpenCV: x right, y down, z forward) normals. Deep3DFaceRecon's coefficients
live in a frame with y up and z towards the viewer: convert normals with ``diag(1, -1, -1)`` to use them.
"""

from __future__ import annotations

import math

import torch

from ._ops import gather_face_corners, vertex_major_face_index

__all__ = [
    "SH_CONSTANTS",
    "face_normals",
    "vertex_normals",
    "sh_basis",
    "sh_irradiance",
    "sh_shading",
    "sh_basis_grad",
    "pixel_sh_shading",
    "SHADINGS",
    "check_shading",
    "blinn_phong",
    "composite",
]

_A = (math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0))
_C = (1 / math.sqrt(4 * math.pi), math.sqrt(3.0) / math.sqrt(4 * math.pi), 3 * math.sqrt(5.0) / math.sqrt(12 * math.pi))
#: The 9 products ``a_k * c_k`` (times the fixed polynomial factors) of the basis above.
SH_CONSTANTS = (
    _A[0] * _C[0],
    _A[1] * _C[1],
    _A[2] * _C[2],
)


def _face_normals_rows(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unnormalised face normals as contiguous coordinate rows (3, B*F)."""
    p = gather_face_corners(verts, faces)  # (3 coordinates, 3 corners, B*F)
    e1 = p[:, 1] - p[:, 0]
    e2 = p[:, 2] - p[:, 0]
    return e1.roll(-1, 0) * e2.roll(1, 0) - e1.roll(1, 0) * e2.roll(-1, 0)


def face_normals(verts: torch.Tensor, faces: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Face normals ``(v1 - v0) x (v2 - v0)`` (B, F, 3); unnormalised they have length 2 * area."""
    B = verts.shape[0]
    n = _face_normals_rows(verts, faces)
    if normalize:
        n = _normalize_rows(n, 1e-20)
    return n.t().reshape(B, faces.shape[0], 3)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (B, V, 3) of meshes (B, V, 3) with faces (F, 3).

    Each vertex gets the sum of the (area-weighted) normals of its faces, normalised. Outward for
    counter-clockwise (right-handed) winding. Differentiable.
    """
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must have shape (B, V, 3), got {tuple(verts.shape)}")
    B, V, _ = verts.shape
    fn = _face_normals_rows(verts, faces)  # (3, B*F)
    idx = vertex_major_face_index(faces, B, V).view(3, -1)
    acc = torch.zeros(3, B * V, dtype=fn.dtype, device=fn.device)
    for k in range(3):
        acc = acc.index_add(1, idx[k], fn)
    return _normalize_rows(acc, 1e-20).t().reshape(B, V, 3)


def _normalize_rows(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``normalize(x, dim=0)`` for (3, N) (explicit rows: a dim-0 norm of 3 rows is slow on the CPU)."""
    sq = torch.addcmul(torch.addcmul(x[0] * x[0], x[1], x[1]), x[2], x[2])
    return x / sq.sqrt().clamp_min(eps)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """The 9 SH irradiance basis values (..., 9) of unit normals (..., 3) (table in the module doc)."""
    if normals.shape[-1] != 3:
        raise ValueError(f"normals must have shape (..., 3), got {tuple(normals.shape)}")
    x, y, z = normals.unbind(-1)
    k0, k1, k2 = SH_CONSTANTS
    return torch.stack(
        [
            torch.full_like(x, k0),
            -k1 * y,
            k1 * z,
            -k1 * x,
            k2 * x * y,
            -k2 * y * z,
            k2 * 0.5 / math.sqrt(3.0) * (3 * z * z - 1),
            -k2 * x * z,
            k2 * 0.5 * (x * x - y * y),
        ],
        dim=-1,
    )


def sh_basis_grad(normals: torch.Tensor) -> torch.Tensor:
    """Derivatives (..., 3, 9) of :func:`sh_basis` w.r.t. the normal's components: entry ``[..., j, k]``
    is ``d basis_k / d n_j`` at the normals (..., 3) (the basis polynomials differentiated as
    functions on R^3, i.e. without the unit-length constraint; project with ``I - n n^T`` for that)."""
    if normals.shape[-1] != 3:
        raise ValueError(f"normals must have shape (..., 3), got {tuple(normals.shape)}")
    x, y, z = normals.unbind(-1)
    _k0, k1, k2 = SH_CONSTANTS
    zero = torch.zeros_like(x)
    c6 = k2 * 0.5 / math.sqrt(3.0)
    dx = torch.stack([zero, zero, zero, zero - k1, k2 * y, zero, zero, -k2 * z, k2 * x], -1)
    dy = torch.stack([zero, zero - k1, zero, zero, k2 * x, -k2 * z, zero, zero, -k2 * y], -1)
    dz = torch.stack([zero, zero, zero + k1, zero, zero, -k2 * y, 6.0 * c6 * z, -k2 * x, zero], -1)
    return torch.stack([dx, dy, dz], -2)


def _sh_coeffs(gamma: torch.Tensor) -> torch.Tensor:
    if gamma.ndim == 2 and gamma.shape[1] == 27:
        return gamma.view(-1, 3, 9).transpose(1, 2)
    if gamma.ndim == 3 and gamma.shape[1:] == (9, 3):
        return gamma
    if gamma.ndim == 3 and gamma.shape[1:] == (9, 1):
        return gamma.expand(-1, -1, 3)
    raise ValueError(f"sh coefficients must be (B, 9, 3) or (B, 27), got {tuple(gamma.shape)}")


def sh_irradiance(normals: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Irradiance (B, ..., 3) at unit normals (B, ..., 3) under SH light ``gamma`` (B, 9, 3) or (B, 27)."""
    g = _sh_coeffs(gamma)
    Y = sh_basis(normals)
    B = normals.shape[0]
    out = torch.bmm(Y.reshape(B, -1, 9), g.to(Y.dtype).expand(B, -1, -1))
    return out.view(normals.shape[:-1] + (3,))


def sh_shading(normals: torch.Tensor, albedo: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Lambertian colour ``albedo * irradiance(normals)`` (B, ..., 3).

    Args:
        normals: (B, ..., 3) unit normals (per vertex or per pixel).
        albedo: (B, ..., 3) reflectance in [0, 1] (broadcastable to ``normals``).
        gamma: (B, 9, 3) or (B, 27) SH coefficients (see the module doc).
    """
    return albedo * sh_irradiance(normals, gamma)


SHADINGS = ("vertex", "pixel")
"""Where the SH light is evaluated: "vertex" (Gouraud: colours at the vertices, interpolated) or
"pixel" (normals and albedo interpolated, :func:`pixel_sh_shading` per pixel)."""


def check_shading(shading: str, name: str = "shading") -> str:
    """``shading`` if it is one of :data:`SHADINGS`, else ValueError naming ``name``."""
    if shading not in SHADINGS:
        raise ValueError(f"{name}: expected 'vertex' or 'pixel', got {shading!r}")
    return shading


def pixel_sh_shading(normals: torch.Tensor, albedo: torch.Tensor, gamma: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-pixel ("Phong-style") Lambertian SH colour from interpolated attributes (B, ..., 3).

    ``albedo * irradiance(normals / |normals|)``: the normals are those interpolated from the
    vertices (e.g. :func:`facerig.render.interpolate` of :func:`vertex_normals`), so not of unit
    length; they are normalised here before the SH basis is evaluated. Gouraud shading (the
    colour computed per vertex, then interpolated) is :func:`sh_shading` at the vertices.

    Args:
        normals: (B, ..., 3) interpolated (unnormalised) normals, any frame the light is given in.
        albedo: (B, ..., 3) interpolated reflectance.
        gamma: (B, 9, 3) or (B, 27) SH coefficients (see the module doc).
        eps: normals shorter than this (uncovered pixels: zero) are divided by ``eps`` instead.
    """
    if normals.shape[-1] != 3:
        raise ValueError(f"normals must have shape (B, ..., 3), got {tuple(normals.shape)}")
    n = torch.nn.functional.normalize(normals, dim=-1, eps=eps)
    return albedo * sh_irradiance(n, gamma)


def blinn_phong(
    normals: torch.Tensor,
    points: torch.Tensor,
    light_dir: torch.Tensor,
    shininess: float | torch.Tensor = 32.0,
    strength: float | torch.Tensor = 0.2,
) -> torch.Tensor:
    """Blinn-Phong specular term (B, ..., 1): ``strength * max(0, n . h)^shininess``.

    Args:
        normals: (B, ..., 3) unit normals, camera frame.
        points: (B, ..., 3) camera-frame positions (the viewer sits at the origin).
        light_dir: (B, 3) unit direction from the surface towards a distant light, camera frame.
        shininess, strength: exponent and scale (floats or tensors broadcastable to (B, ..., 1)).
    """
    view = torch.nn.functional.normalize(-points, dim=-1, eps=1e-12)
    shape = (light_dir.shape[0],) + (1,) * (normals.ndim - 2) + (3,)
    light = torch.nn.functional.normalize(light_dir, dim=-1).view(shape)
    h = torch.nn.functional.normalize(view + light, dim=-1, eps=1e-12)
    ndh = (normals * h).sum(-1, keepdim=True).clamp(min=0)
    lit = ((normals * light).sum(-1, keepdim=True) > 0).to(ndh.dtype)
    return strength * lit * ndh.pow(shininess)


def composite(rgb: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor | float | None = None) -> torch.Tensor:
    """``alpha * rgb + (1 - alpha) * background`` with rgb (B, H, W, C), alpha (B, H, W, 1).

    ``background`` is (B, H, W, C), (H, W, C), (C,), a float, or None (= 0).
    """
    if background is None:
        return rgb * alpha
    if not isinstance(background, torch.Tensor):
        background = torch.tensor(float(background), dtype=rgb.dtype, device=rgb.device)
    background = background.to(dtype=rgb.dtype, device=rgb.device)
    return alpha * rgb + (1 - alpha) * background
