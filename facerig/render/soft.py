"""Soft rasterisation (SoftRas, Liu et al. 2019; pytorch3d's blending) in pixel units.

Every pixel keeps the K nearest faces whose triangle lies within ``blur_radius`` pixels of its
centre (inside or outside). Each gets a coverage probability ``sigmoid(-d / sigma)`` from its
signed squared distance d (pixel^2, negative inside) and a depth weight
``exp((z_inv - z_inv_max) / gamma)``; colours are blended with these weights and the background
gets ``exp((eps - z_inv_max) / gamma)``. Everything is smooth in the vertex positions: gradients
reach vertices from pixels up to ``blur_radius`` away, which gives a wider basin of attraction
than :func:`facerig.render.antialias` (one pixel) at K times the cost and some blur in the
image. Use antialiasing for photometric fitting at full resolution, soft rasterisation when the
silhouettes start far from the target or for silhouette-only losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._ops import batched_face_index
from .raster import (
    _INT64_MAX,
    _PixelBary,
    _dist2_to_triangle,
    _validate,
    _visibility,
    face_coefficients,
    pixel_centres,
)

__all__ = ["SoftFragments", "soft_rasterize", "softmax_blend", "default_blur_radius"]


@dataclass
class SoftFragments:
    """Output of :func:`soft_rasterize`; all (B, H, W, K[, 3]), nearest face first.

    Attributes:
        pix_to_face: int64 face ids, -1 where fewer than K faces are near the pixel.
        bary: barycentrics of the pixel centre w.r.t. each face (clipped to the face when
            ``clip_barycentrics``; perspective-correct when requested), zero for empty slots.
            Differentiable.
        zbuf: depth of the face's plane at the pixel centre, -1 for empty slots. Differentiable.
        dists: signed squared distance (pixels^2) from the pixel centre to the face's projected
            triangle, negative inside, 0 for empty slots. Differentiable.
    """

    pix_to_face: torch.Tensor
    bary: torch.Tensor
    zbuf: torch.Tensor
    dists: torch.Tensor
    image_size: tuple
    perspective_correct: bool = True


def default_blur_radius(sigma: float, eps: float = 1e-4) -> float:
    """Radius (pixels) beyond which ``sigmoid(-d / sigma) < eps``: ``sqrt(sigma log(1/eps - 1))``."""
    return math.sqrt(sigma * math.log(1.0 / eps - 1.0))


def soft_rasterize(
    verts: torch.Tensor,
    faces: torch.Tensor,
    image_size,
    faces_per_pixel: int = 8,
    sigma: float = 0.5,
    blur_radius: float | None = None,
    perspective_correct: bool = True,
    cull_backfaces: bool = False,
    z_near: float = 1e-3,
    max_candidates: int = 1 << 20,
    clip_barycentrics: bool = True,
) -> SoftFragments:
    """K nearest faces within ``blur_radius`` of each pixel centre, with signed distances.

    Args:
        verts: (B, V, 3) pixel-space vertices ``(u, v, depth)`` (see :func:`facerig.render.rasterize`).
        faces: (F, 3) int64.
        image_size: (H, W).
        faces_per_pixel: K.
        sigma: sharpness in pixels^2 (only used for the default radius).
        blur_radius: pixels; default :func:`default_blur_radius` ``(sigma)``.
        perspective_correct, cull_backfaces, z_near, max_candidates: as in ``rasterize``.
        clip_barycentrics: for pixels outside a face, clamp the barycentrics to [0, 1] and
            renormalise (attributes are not extrapolated; depth still uses the face's plane).

    Returns:
        :class:`SoftFragments`.
    """
    H, W = _validate(verts, faces, image_size)
    K = int(faces_per_pixel)
    if K < 1:
        raise ValueError(f"faces_per_pixel must be >= 1, got {faces_per_pixel}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = default_blur_radius(sigma) if blur_radius is None else float(blur_radius)
    if r <= 0:
        raise ValueError(f"blur_radius must be > 0, got {blur_radius}")
    faces = faces.to(device=verts.device, dtype=torch.int64)
    B, V = verts.shape[:2]
    F = faces.shape[0]
    table, det = face_coefficients(verts, faces, perspective_correct)
    with torch.no_grad():
        tri_pix = verts.detach().reshape(-1, 3).index_select(0, batched_face_index(faces, B, V)).view(B, F, 3, 3)
        keys = _visibility(table.detach(), det, tri_pix, B, F, H, W, K, float(z_near), None,
                           cull_backfaces, perspective_correct, int(max_candidates), blur=r)
        face = torch.where(keys == _INT64_MAX, torch.full_like(keys, -1), keys & 0xFFFFFFFF)
        flat = face.reshape(-1)
        fg = (flat >= 0).nonzero()[:, 0]
        pix = torch.div(fg, K, rounding_mode="floor")
        b = torch.div(pix, H * W, rounding_mode="floor")
        g = flat.index_select(0, fg) + b * F
        hw = pix - b * (H * W)
    u, v = pixel_centres(H, W, table.dtype, table.device)
    uf, vf = u.index_select(0, hw), v.index_select(0, hw)
    bary_fg, z_fg = _PixelBary.apply(table, g, uf, vf, perspective_correct)
    inside = (bary_fg.detach() >= 0).all(1)
    if clip_barycentrics:  # outside the triangle: nearest point's barycentrics (as pytorch3d)
        cl = bary_fg.clamp(min=0)
        bary_fg = cl / cl.sum(1, keepdim=True).clamp(min=1e-12)
    # differentiable signed squared distances
    corners = verts.reshape(B * V, 3).index_select(0, (faces.index_select(0, g - b * F) + (b * V)[:, None]).reshape(-1))
    corners = corners.view(-1, 3, 3)
    rel = (corners[:, 1:, :2] - corners[:, :1, :2]).reshape(-1, 4).t()
    d2 = _dist2_to_triangle(uf - corners[:, 0, 0], vf - corners[:, 0, 1], rel)
    dist_fg = torch.where(inside, -d2, d2)
    n = flat.numel()
    dt = table.dtype
    bary = torch.zeros(n, 3, dtype=dt, device=verts.device).index_copy(0, fg, bary_fg)
    zbuf = torch.full((n,), -1.0, dtype=dt, device=verts.device).index_copy(0, fg, z_fg)
    dists = torch.zeros(n, dtype=dt, device=verts.device).index_copy(0, fg, dist_fg)
    shape = (B, H, W, K)
    return SoftFragments(face.view(shape), bary.view(shape + (3,)), zbuf.view(shape), dists.view(shape), (H, W), perspective_correct)


def softmax_blend(
    colors: torch.Tensor,
    fragments: SoftFragments,
    sigma: float = 0.5,
    gamma: float = 1e-4,
    background: torch.Tensor | float | None = None,
    z_near: float = 1.0,
    z_far: float = 100.0,
    eps: float = 1e-10,
):
    """SoftRas / pytorch3d ``softmax_rgb_blend`` with distances in pixels^2.

    Args:
        colors: (B, H, W, K, C) per-fragment colours (e.g. :func:`facerig.render.interpolate`
            of vertex colours with the soft fragments).
        fragments: :class:`SoftFragments`.
        sigma: sigmoid sharpness (pixels^2): coverage probability ``sigmoid(-dist / sigma)``.
        gamma: depth-softmax temperature on the normalised inverse depth
            ``(z_far - z) / (z_far - z_near)``; small = hard z-buffer.
        background: (B, H, W, C), (C,), float or None (0).
        z_near, z_far: depth range for the normalisation (scene units).
        eps: background weight offset.

    Returns:
        (image (B, H, W, C), alpha (B, H, W, 1)) with ``alpha = 1 - prod_k (1 - prob_k)``.
    """
    mask = fragments.pix_to_face >= 0
    prob = torch.sigmoid(-fragments.dists / sigma) * mask
    alpha = 1.0 - torch.prod(1.0 - prob, dim=-1, keepdim=True)
    z_inv = (z_far - fragments.zbuf) / (z_far - z_near) * mask
    z_inv_max = torch.clamp(z_inv.amax(dim=-1, keepdim=True), min=eps).detach()
    w = prob * torch.exp((z_inv - z_inv_max) / gamma)
    delta = torch.clamp(torch.exp((eps - z_inv_max) / gamma), min=eps)
    num = (w[..., None] * colors).sum(-2)
    den = w.sum(-1, keepdim=True) + delta
    if background is None:
        bg = torch.zeros((), dtype=colors.dtype, device=colors.device)
    elif isinstance(background, torch.Tensor):
        bg = background.to(dtype=colors.dtype, device=colors.device)
    else:
        bg = torch.tensor(float(background), dtype=colors.dtype, device=colors.device)
    image = (num + delta * bg) / den
    return image, alpha
