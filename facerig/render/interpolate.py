"""Attribute interpolation and UV texture sampling (both differentiable)."""

from __future__ import annotations

import torch

from .raster import Fragments

__all__ = ["interpolate", "sample_texture"]


class _Interp(torch.autograd.Function):
    """``out[p] = sum_i bary[p, i] * attrs[vidx[p, i]]`` with a fused backward."""

    @staticmethod
    def forward(ctx, attrs, bary, vidx):
        P, C = vidx.shape[0], attrs.shape[1]
        a = attrs.index_select(0, vidx.reshape(-1)).view(P, 3, C)
        out = a[:, 0] * bary[:, 0:1]
        out.addcmul_(a[:, 1], bary[:, 1:2]).addcmul_(a[:, 2], bary[:, 2:3])
        ctx.save_for_backward(a, bary, vidx)
        ctx.n = attrs.shape[0]
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, go):
        a, bary, vidx = ctx.saved_tensors
        ga = gb = None
        if ctx.needs_input_grad[0]:
            # channel by channel into a (C, n) gradient: ga[vidx[p, i], ch] += bary[p, i] * go[p, ch]
            # (1-D index_adds; a broadcast (P, 3, C) product and a row scatter are slower on the CPU)
            C = go.shape[1]
            gat = torch.zeros(C, ctx.n, dtype=go.dtype, device=go.device)
            flat = vidx.reshape(-1)
            for ch in range(C):
                gat[ch].index_add_(0, flat, (bary * go[:, ch:ch + 1]).reshape(-1))
            ga = gat.t()
        if ctx.needs_input_grad[1]:
            gb = torch.bmm(a, go.to(a.dtype)[:, :, None]).squeeze(-1)  # (P, 3, C) @ (P, C, 1)
        return ga, gb, None


def interpolate(attrs: torch.Tensor, fragments: Fragments, faces: torch.Tensor, background=0.0) -> torch.Tensor:
    """Interpolate per-vertex attributes at the pixels with the fragments' barycentrics.

    Differentiable w.r.t. ``attrs`` and, through ``fragments.bary``, w.r.t. the vertex positions
    given to :func:`facerig.render.rasterize` (perspective-correct when the rasteriser was).
    Only covered pixels are computed.

    Args:
        attrs: (B, V, C) or (V, C) per-vertex attributes (colours, normals, UVs, positions...).
        fragments: output of :func:`facerig.render.rasterize` (or ``soft_rasterize``) for the same mesh.
        faces: (F, 3) int64, the faces given to the rasteriser (or per-corner attribute faces of
            the same length F, e.g. UV faces, indexing the rows of ``attrs``).
        background: value written on uncovered pixels: a float, a (C,) tensor or, for K = 1, a
            (B, H, W, C) image (differentiable; this is a hard-mask composite in one copy).

    Returns:
        (B, H, W, C) (or (B, H, W, K, C) when the fragments hold K > 1 faces per pixel).
    """
    if not isinstance(attrs, torch.Tensor) or attrs.ndim not in (2, 3):
        raise ValueError(f"attrs must be a (B, V, C) or (V, C) tensor, got {getattr(attrs, 'shape', type(attrs))}")
    p2f = fragments.pix_to_face
    B = p2f.shape[0]
    if attrs.ndim == 2:
        attrs = attrs[None]
    if attrs.shape[0] not in (1, B):
        raise ValueError(f"attrs batch {attrs.shape[0]} does not match the fragments' batch {B}")
    Ba, V, C = attrs.shape
    faces = faces.to(p2f.device)
    comp = getattr(fragments, "_compact", None)
    if comp is not None and comp[3] == faces.shape[0]:
        fg, g, bary_fg, F = comp
    else:
        F = faces.shape[0]
        flat = p2f.reshape(-1)
        fg = (flat >= 0).nonzero()[:, 0]
        per_b = flat.numel() // B
        g = flat[fg] + torch.div(fg, per_b, rounding_mode="floor") * F
        bary_fg = fragments.bary.reshape(-1, 3).index_select(0, fg)
    if Ba == 1:
        vidx = faces.index_select(0, g % F if B > 1 else g)
    else:
        b = torch.div(g, F, rounding_mode="floor")
        vidx = faces.index_select(0, g - b * F) + (b * V)[:, None]
    out_fg = _Interp.apply(attrs.reshape(Ba * V, C), bary_fg.to(attrs.dtype), vidx)
    n = p2f.numel()
    if isinstance(background, torch.Tensor):
        if p2f.ndim != 3:
            raise ValueError("an image background needs K = 1 fragments")
        bg = background.to(dtype=attrs.dtype, device=attrs.device)
        if bg.ndim == 1:
            bg = bg.expand(p2f.shape + (C,))
        if bg.ndim != 4 or bg.shape[1:] != p2f.shape[1:] + (C,) or bg.shape[0] not in (1, B):
            raise ValueError(f"background must be (B, H, W, {C}) or ({C},), got {tuple(background.shape)}")
        base = bg.expand(B, -1, -1, -1).reshape(n, C)
    else:
        base = torch.full((n, C), float(background), dtype=attrs.dtype, device=attrs.device)
    out = base.index_copy(0, fg, out_fg)
    return out.view(p2f.shape + (C,))


def sample_texture(texture: torch.Tensor, uv: torch.Tensor, mode: str = "bilinear", flip_v: bool = True) -> torch.Tensor:
    """Sample a texture at UV coordinates, differentiable w.r.t. both.

    Args:
        texture: (B, Ht, Wt, C) or (Ht, Wt, C) image, channels-last.
        uv: (B, H, W, 2) texture coordinates. ``u`` in [0, 1] runs left -> right over the texture
            width. With ``flip_v=True`` (default, OBJ / OpenGL convention) ``v = 0`` is the bottom
            row and ``v = 1`` the top; with ``flip_v=False`` v runs top -> bottom like image rows.
            Texel (row r, column c) has its centre at ``u = (c + 0.5) / Wt``; outside [0, 1] the
            border texel is repeated.
        mode: "bilinear" or "nearest".

    Returns:
        (B, H, W, C) sampled values.
    """
    if texture.ndim == 3:
        texture = texture[None]
    if texture.ndim != 4:
        raise ValueError(f"texture must be (B, Ht, Wt, C) or (Ht, Wt, C), got {tuple(texture.shape)}")
    if uv.ndim != 4 or uv.shape[-1] != 2:
        raise ValueError(f"uv must be (B, H, W, 2), got {tuple(uv.shape)}")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    B = uv.shape[0]
    if texture.shape[0] != B:
        if texture.shape[0] != 1:
            raise ValueError(f"texture batch {texture.shape[0]} does not match uv batch {B}")
        texture = texture.expand(B, -1, -1, -1)
    gx = uv[..., 0] * 2 - 1
    gy = (1 - 2 * uv[..., 1]) if flip_v else (uv[..., 1] * 2 - 1)
    grid = torch.stack([gx, gy], dim=-1).to(texture.dtype)
    out = torch.nn.functional.grid_sample(
        texture.permute(0, 3, 1, 2), grid, mode=mode, padding_mode="border", align_corners=False
    )
    return out.permute(0, 2, 3, 1)
