"""Analytic antialiasing: visibility gradients at silhouette edges (after nvdiffrast).

Hard rasterisation is piecewise constant in the vertex positions, so silhouettes and occlusion
boundaries give no gradient. :func:`antialias` post-processes a rendered image: for every pair of
horizontally or vertically adjacent pixels that see different triangles, the triangle in front
(smaller depth) is examined; if the edge of that triangle that separates the two pixel centres is
a *silhouette* edge (a mesh boundary, or an edge whose neighbour triangle faces the other way;
when it is not, the search walks on across the neighbour triangles, up to ``max_steps``), the
position ``t`` in [0, 1] where the edge crosses the segment between the two centres is computed
analytically from the vertex positions. The edge is treated as a straight boundary across the
pixel: if ``t > 1/2`` it cuts into the other pixel, which receives ``(t - 1/2)`` of the front
pixel's colour; if ``t < 1/2`` the front pixel itself is only partly covered and receives
``(1/2 - t)`` of the other pixel's colour. Horizontal pairs handle edges steeper than 45 degrees,
vertical pairs the others, so each crossing is counted once. ``t`` is differentiable w.r.t. the
edge's vertex positions, which is where the silhouette gradients come from; the colour
differences give the magnitude. Cost O(B*H*W).
"""

from __future__ import annotations

import torch

from .mesh import face_adjacency
from .raster import Fragments

__all__ = ["antialias"]


def _pairs(p2f, z, horizontal: bool):
    """Flat indices (front, other) of adjacent pixel pairs that see different faces."""
    B, H, W = p2f.shape
    if horizontal:
        diff = p2f[:, :, :-1] != p2f[:, :, 1:]
        step, w = 1, W - 1
    else:
        diff = p2f[:, :-1, :] != p2f[:, 1:, :]
        step, w = W, W
    idx = diff.reshape(-1).nonzero()[:, 0]
    if horizontal:  # (b, i, j) in a (B, H, W-1) grid -> flat (b, i, j) in (B, H, W)
        pa = idx + torch.div(idx, w, rounding_mode="floor")
    else:  # (B, H-1, W) grid: rows of the same batch are contiguous
        pa = idx + torch.div(idx, (H - 1) * W, rounding_mode="floor") * W
    pb = pa + step
    a_front = z.index_select(0, pa) <= z.index_select(0, pb)
    pf = torch.where(a_front, pa, pb)
    po = torch.where(a_front, pb, pa)
    return pf, po


def antialias(
    color: torch.Tensor,
    fragments: Fragments,
    verts: torch.Tensor,
    faces: torch.Tensor,
    adjacency: torch.Tensor | None = None,
    z_near: float = 1e-3,
    max_steps: int = 16,
) -> torch.Tensor:
    """Blend colours across silhouette edges so that their position gets gradients.

    Args:
        color: (B, H, W, C) rendered (composited) image.
        fragments: the :func:`facerig.render.rasterize` output used to render ``color`` (the first
            layer is used when K > 1).
        verts: (B, V, 3) the pixel-space vertices given to the rasteriser (gradients flow to them).
        faces: (F, 3) int64.
        adjacency: optional (F, 3) output of :func:`facerig.render.face_adjacency` (computed when
            omitted; pass it to save time in a loop).
        z_near: faces with a vertex closer than this are not antialiased (their projected edges
            are not meaningful).
        max_steps: how many triangles the search for the silhouette edge may cross between two
            pixel centres (thin foreshortened triangles near silhouettes).

    Returns:
        (B, H, W, C) antialiased image, same dtype as ``color``.
    """
    if color.ndim != 4:
        raise ValueError(f"color must be (B, H, W, C), got {tuple(color.shape)}")
    p2f = fragments.pix_to_face
    zbuf = fragments.zbuf
    if p2f.ndim == 4:
        p2f, zbuf = p2f[..., 0], zbuf[..., 0]
    B, H, W, C = color.shape
    if p2f.shape != (B, H, W):
        raise ValueError(f"color {tuple(color.shape)} does not match fragments {tuple(p2f.shape)}")
    F = faces.shape[0]
    if adjacency is None:
        adjacency = face_adjacency(faces, verts.shape[1])
    faces = faces.to(verts.device)
    with torch.no_grad():
        z = torch.where(p2f >= 0, zbuf.detach(), torch.full_like(zbuf, float("inf"))).reshape(-1)
        tri_d = verts.detach().index_select(1, faces.reshape(-1)).view(B, F, 3, 3)
        u, v, zz = tri_d.unbind(-1)
        A2 = (u[..., 1] - u[..., 0]) * (v[..., 2] - v[..., 0]) - (v[..., 1] - v[..., 0]) * (u[..., 2] - u[..., 0])
        if fragments.perspective_correct:
            facing = torch.sign(A2 * zz.prod(-1))
            usable = (zz.amin(-1) >= z_near) & (A2 != 0)
        else:
            facing = torch.sign(A2)
            usable = A2 != 0
        facing = facing.reshape(-1)
        usable = usable.reshape(-1)
        gface = torch.where(p2f >= 0, p2f + (torch.arange(B, device=p2f.device) * F)[:, None, None], -1).reshape(-1)
        pf_all, po_all, k_all, dirs = [], [], [], []
        for horizontal in (True, False):
            pf, po = _pairs(p2f, z, horizontal)
            g = gface.index_select(0, pf)
            ok = ((g >= 0) & usable.index_select(0, g.clamp(min=0))).nonzero()[:, 0]
            pf, po, g = pf.index_select(0, ok), po.index_select(0, ok), g.index_select(0, ok)
            pf_all.append(pf)
            po_all.append(po)
            k_all.append(g)
            dirs.append(torch.full_like(pf, 1 if horizontal else 0))
        pf, po, g, horiz = (torch.cat(x) for x in (pf_all, po_all, k_all, dirs))
    if pf.numel() == 0:
        return color
    V = verts.shape[1]
    adjacency = adjacency.to(g.device)
    gO = gface.index_select(0, po)  # face seen at the other pixel (-1 = background)
    with torch.no_grad():
        # most pairs lie inside a smooth surface: the two faces share an edge and face the same
        # way, so there is nothing to antialias (skip them before any geometry is computed)
        fF = g % F if B > 1 else g
        fO = gO.clamp(min=0) % F if B > 1 else gO.clamp(min=0)
        shared = (adjacency.index_select(0, fF) == fO[:, None]).any(1)
        same = (gO >= 0) & shared & (facing.index_select(0, g) == facing.index_select(0, gO.clamp(min=0)))
        rest = (~same).nonzero()[:, 0]
        pf, po, g, gO, horiz = (x.index_select(0, rest) for x in (pf, po, g, gO, horiz))
    if pf.numel() == 0:
        return color

    def centre(p):
        hw = p % (H * W)
        return (hw % W).to(verts.dtype) + 0.5, torch.div(hw, W, rounding_mode="floor").to(verts.dtype) + 0.5

    uf, vf = centre(pf)
    uo, vo = centre(po)

    def edge_values(gf, vsrc, idx):
        """Edge functions (P, 3) of faces ``gf`` at the two centres (edge i opposite vertex i)."""
        b_of = torch.div(gf, F, rounding_mode="floor")
        vid = faces.index_select(0, gf - b_of * F) + (b_of * V)[:, None]
        tri = vsrc.reshape(-1, 3).index_select(0, vid.reshape(-1)).view(-1, 3, 3)
        u, v = tri[..., 0], tri[..., 1]
        uj, vj, uk, vk = u.roll(-1, 1), v.roll(-1, 1), u.roll(1, 1), v.roll(1, 1)
        A2 = (u[:, 1] - u[:, 0]) * (v[:, 2] - v[:, 0]) - (v[:, 1] - v[:, 0]) * (u[:, 2] - u[:, 0])
        a, b, d = vj - vk, uk - uj, uj * vk - vj * uk
        eF = (a * uf[idx, None] + b * vf[idx, None] + d) / A2[:, None]
        eO = (a * uo[idx, None] + b * vo[idx, None] + d) / A2[:, None]
        return eF, eO, uk - uj, vk - vj

    # Walk along the segment between the two pixel centres, starting in the front pixel's
    # triangle and crossing into neighbours until a silhouette edge is found: near silhouettes a
    # smooth mesh has thin, strongly foreshortened triangles, so the silhouette edge is often not
    # an edge of the triangle that covers the front pixel.
    P = pf.shape[0]
    res_face = torch.full((P,), -1, dtype=torch.int64, device=g.device)
    res_k = torch.zeros(P, dtype=torch.int64, device=g.device)
    with torch.no_grad():
        vd = verts.detach()
        active = torch.arange(P, device=g.device)
        cur = g
        for _ in range(max_steps):
            if active.numel() == 0:
                break
            eF, eO, du, dv = edge_values(cur, vd, active)
            crosses = (eO < 0) & (eF >= 0)
            tt = eF / torch.where(crosses, eF - eO, torch.ones_like(eF))
            tt = torch.where(crosses, tt, torch.full_like(tt, float("inf")))
            tmin, k = tt.min(dim=1)
            has = torch.isfinite(tmin)
            b_of = torch.div(cur, F, rounding_mode="floor")
            nb = adjacency[cur - b_of * F, k]
            nb_g = torch.where(nb >= 0, nb + b_of * F, torch.zeros_like(nb))
            sil = (nb < 0) | (facing[nb_g] != facing[cur]) | ~usable[nb_g]
            steep = dv.gather(1, k[:, None])[:, 0].abs() >= du.gather(1, k[:, None])[:, 0].abs()
            dir_ok = torch.where(horiz[active].bool(), steep, ~steep)
            done = has & sil & dir_ok
            res_face[active[done]] = cur[done]
            res_k[active[done]] = k[done]
            go_on = has & ~sil & (nb_g != gO[active])  # reaching the other pixel's face: no discontinuity
            active, cur = active[go_on], nb_g[go_on]
        keep = (res_face >= 0).nonzero()[:, 0]
    if keep.numel() == 0:
        return color
    # differentiable crossing position t in [0, 1] from the silhouette triangle's vertices
    eF, eO, _, _ = edge_values(res_face[keep], verts, keep)
    k = res_k[keep][:, None]
    ef = eF.gather(1, k)[:, 0]
    eo = eO.gather(1, k)[:, 0]
    t = (ef / (ef - eo)).clamp(0, 1)
    pf, po = pf[keep], po[keep]
    flat = color.reshape(-1, C)
    cF, cO = flat.index_select(0, pf), flat.index_select(0, po)
    wF = (0.5 - t).clamp(min=0).to(color.dtype)[:, None]
    wO = (t - 0.5).clamp(min=0).to(color.dtype)[:, None]
    out = flat.index_add(0, pf, wF * (cO - cF)).index_add(0, po, wO * (cF - cO))
    return out.view(B, H, W, C)
