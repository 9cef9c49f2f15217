"""Vectorised rasterisation in pure PyTorch.

How it works
------------
Every triangle is treated in **homogeneous screen coordinates**: vertex i with pixel position
``(u_i, v_i)`` and view depth ``z_i`` becomes ``h_i = w_i (u_i, v_i, 1)`` with ``w_i = z_i``
(perspective) or ``w_i = 1`` (orthographic). For a pixel centre ``p = (u, v, 1)`` the solution
``c = M^-1 p`` of ``M = [h_0 h_1 h_2]`` gives

* perspective-correct barycentrics ``b = c / sum(c)`` and the view depth ``z = 1 / sum(c)``
  (for a perspective camera ``h_i = K X_i`` is linear in camera space, so ``b`` are the
  barycentrics of the 3-D point seen through the pixel: attributes interpolated with ``b`` are
  perspective-correct; this is the classic "interpolate 1/z" rule);
* screen-space barycentrics ``b = c`` and depth ``sum(b_i z_i)`` in orthographic mode.

Worked out, ``c_i = e_i(p) / (w_i A2)`` where ``e_i`` is the screen-space edge function of the
edge opposite vertex i (``e_i / A2`` are the screen-space barycentrics, ``A2`` is twice the signed
screen area): an affine function of the pixel position whose coefficients are computed once per
triangle. The edge functions are evaluated unnormalised in a frame centred on vertex 0, so they
are exact for pixel-aligned inputs (pixel centres exactly on a shared edge are covered by both
triangles; the z-buffer tie-break picks one). A pixel is covered when all ``c_i >= 0`` and
``z >= z_near``. This per-pixel test clips triangles that cross the near plane exactly, without
creating new triangles (homogeneous rasterisation, Olano & Greer 1997): a vertex behind the camera
(projected with the same formula, so with mirrored pixel coordinates and negative z) still gives
the right ``c``. ``sign(det M) = sign(w_0 w_1 w_2 A2)`` is the facing: with outward
counter-clockwise winding (right-handed normals pointing out of the mesh), front faces have
``det M < 0`` in the OpenCV frame (y down).

Visibility (not differentiable, no autograd graph):

1. per triangle the pixel-centre bounding box (of the near-clipped polygon);
2. all (triangle, pixel) candidates are enumerated (``repeat_interleave`` over the box sizes),
   in chunks of at most ``max_candidates`` to bound memory; memory is O(B*H*W*K + F + chunk),
   never O(H*W*F). Per-face data are gathered from a (rows, faces) table so that every
   per-candidate operation runs on contiguous memory;
3. inside test with the three affine functions, then compaction to the covered candidates;
4. z-buffer resolve: a packed int64 key ``(order-preserving int32 bits of float32 depth) << 32 |
   face`` and ``scatter_reduce(amin)`` per pixel (K = 1), or a sort by (pixel, key) (K > 1).
   Equal depths resolve to the lower face index.

Barycentrics and depth (differentiable): the per-face affine coefficients are computed with
autograd from ``verts`` and evaluated at the pixel centres for the visible face only (the
nvdiffrast approach), so ``bary`` and ``zbuf`` carry gradients to the vertex positions inside
triangles. Gradients from silhouettes need :func:`facerig.render.antialias` or soft rasterisation
(:mod:`facerig.render.soft`).
"""

from __future__ import annotations

import sys

import torch

from ._ops import gather_face_corners

__all__ = ["Fragments", "rasterize", "face_coefficients"]

_INT64_MAX = torch.iinfo(torch.int64).max


class Fragments:
    """Output of :func:`rasterize`.

    Attributes:
        pix_to_face: (B, H, W) int64 face index per pixel, -1 for background
            ((B, H, W, K) when ``faces_per_pixel = K > 1``, nearest first).
        bary: (B, H, W, 3) barycentric coordinates of the pixel centre in the visible face
            (perspective-correct when ``perspective_correct``), zeros on background
            ((B, H, W, K, 3) when K > 1). Differentiable w.r.t. ``verts``.
        zbuf: (B, H, W) view depth of the visible surface at the pixel centre, -1 on background
            ((B, H, W, K) when K > 1). Differentiable w.r.t. ``verts``.
        image_size: (H, W).
        perspective_correct: the mode used.
        mask: (B, H, W) bool coverage (first layer when K > 1).

    ``bary`` and ``zbuf`` are materialised as full images on first access (the renderer itself
    works on the covered pixels only); assigning them is allowed.
    """

    def __init__(self, pix_to_face, bary, zbuf, image_size, perspective_correct=True, compact=None):
        self.pix_to_face = pix_to_face
        self._bary = bary  # tensor, or a callable building it
        self._zbuf = zbuf
        self.image_size = tuple(image_size)
        self.perspective_correct = perspective_correct
        # (fg indices into the flattened pix_to_face, global face ids b*F+f, compact (P, 3) bary, F):
        # the fast path of interpolate(); dropped when ``bary`` is replaced
        self._compact = compact

    @property
    def bary(self) -> torch.Tensor:
        if callable(self._bary):
            self._bary = self._bary()
        return self._bary

    @bary.setter
    def bary(self, value):
        self._bary = value
        self._compact = None

    @property
    def zbuf(self) -> torch.Tensor:
        if callable(self._zbuf):
            self._zbuf = self._zbuf()
        return self._zbuf

    @zbuf.setter
    def zbuf(self, value):
        self._zbuf = value

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool coverage (first layer when K > 1)."""
        p = self.pix_to_face
        return (p[..., 0] if p.ndim == 4 else p) >= 0

    def __repr__(self):
        return (f"Fragments(pix_to_face={tuple(self.pix_to_face.shape)}, image_size={self.image_size}, "
                f"perspective_correct={self.perspective_correct})")


def _validate(verts, faces, image_size):
    if not isinstance(verts, torch.Tensor):
        raise TypeError(f"verts must be a torch.Tensor, got {type(verts).__name__}")
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must have shape (B, V, 3) in pixel coordinates, got {tuple(verts.shape)}")
    if not verts.is_floating_point():
        raise TypeError(f"verts must be floating point, got {verts.dtype}")
    if not isinstance(faces, torch.Tensor):
        raise TypeError(f"faces must be a torch.Tensor, got {type(faces).__name__}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    if faces.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"faces must be int64, got {faces.dtype}")
    try:
        H, W = (int(s) for s in image_size)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"image_size must be (H, W), got {image_size!r}") from e
    if H <= 0 or W <= 0:
        raise ValueError(f"image_size must be positive, got {(H, W)}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= verts.shape[1]):
        raise ValueError(f"faces index vertices out of range [0, {verts.shape[1]})")
    return H, W


def face_coefficients(verts: torch.Tensor, faces: torch.Tensor, perspective_correct: bool = True):
    """Per-face affine coefficients of the homogeneous barycentrics (differentiable).

    With screen-space edge coefficients ``a_i = v_j - v_k``, ``b_i = u_k - u_j`` ((i, j, k) a
    cyclic permutation) and ``A2 = sum_i u_i a_i`` (twice the signed screen area), the homogeneous
    solution is ``c_i = e_i(p) / (w_i A2)``. In a local pixel frame centred on vertex 0 (which
    keeps float32 well-conditioned) ``e_1`` and ``e_2`` have no constant term and ``e_0`` has
    ``A2``: ``e_i = a_i du + b_i dv + [i = 0] A2`` with ``du = u - u_0``, ``dv = v - v_0``. The
    edge functions are evaluated unnormalised (exact for pixel-aligned inputs, so pixel centres
    exactly on an edge are covered consistently) and then multiplied by ``1 / (w_i A2)``.

    Args:
        verts: (B, V, 3) pixel-space vertices ``(u, v, depth)``.
        faces: (F, 3) int64.
        perspective_correct: perspective (``w = depth``) or orthographic (``w = 1``) mode.

    Returns:
        table: (T, B*F), one contiguous row per quantity (column ``b * F + f`` is face f of mesh
            b): ``a_0..2, b_0..2, A2, 1/(w_0 A2), 1/(w_1 A2), 1/(w_2 A2), u_0, v_0`` and, in
            orthographic mode, ``z_0, z_1, z_2`` (T = 12 or 15). The transposed layout keeps
            every per-candidate gather and arithmetic operation on contiguous memory.
        det: (B*F,) detached ``det M = w_0 w_1 w_2 A2`` (sign = facing, 0 = degenerate).
    """
    uvz = gather_face_corners(verts, faces)  # (coordinate, vertex, B*F): contiguous rows
    return _FaceTable.apply(uvz, perspective_correct)


class _FaceTable(torch.autograd.Function):
    """The table of :func:`face_coefficients` from (3 coords, 3 vertices, N) with a fused backward."""

    @staticmethod
    def forward(ctx, uvz, perspective):
        u, v, z = uvz.unbind(0)  # (3 vertices, N) each
        # (i, j, k) cyclic: x[j] = roll(x, -1), x[k] = roll(x, 1) along the vertex dimension
        a = v.roll(-1, 0) - v.roll(1, 0)
        b = u.roll(1, 0) - u.roll(-1, 0)
        A2 = (u * a).sum(0, keepdim=True)
        wA = z * A2 if perspective else A2.expand_as(a)
        bad = wA == 0
        inv = torch.where(bad, torch.zeros_like(wA), 1.0 / torch.where(bad, torch.ones_like(wA), wA))
        det = (z.prod(0) * A2[0]) if perspective else A2[0].clone()
        det = torch.where(bad.any(0), torch.zeros_like(det), det)
        rows = [a, b, A2, inv, u[:1], v[:1]] + ([] if perspective else [z])
        ctx.save_for_backward(u, a, z, A2, inv)
        ctx.perspective = perspective
        ctx.mark_non_differentiable(det)
        return torch.cat(rows, dim=0), det

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gt, gdet):
        u, a, z, A2, inv = ctx.saved_tensors
        ga = gt[0:3].clone()
        gb = gt[3:6]
        gA2 = gt[6:7].clone()
        gwA = -gt[7:10] * inv * inv  # d(1/x) = -1/x^2 (0 for degenerate faces)
        if ctx.perspective:
            gA2 += (gwA * z).sum(0, keepdim=True)
            gz = gwA * A2
        else:
            gA2 += gwA.sum(0, keepdim=True)
            gz = gt[12:15].clone()
        gu = gA2 * a  # A2 = sum_i u_i a_i
        ga += gA2 * u
        gv = ga.roll(1, 0) - ga.roll(-1, 0)  # adjoint of a = roll(v, -1) - roll(v, 1)
        gu += gb.roll(-1, 0) - gb.roll(1, 0)  # adjoint of b = roll(u, 1) - roll(u, -1)
        gu[0] += gt[10]
        gv[0] += gt[11]
        return torch.stack([gu, gv, gz]), None


def _candidate_boxes(tri_pix, valid, H, W, z_near, perspective_correct, expand=0.0):
    """Integer pixel-centre boxes [x0, x0 + bw) x [y0, ...) per face, count 0 if empty.

    tri_pix: (N, 3, 3) (u, v, z) per vertex, detached. Faces crossing the near plane use the box
    of the clipped polygon (front vertices + intersections of the edges with z = z_near).
    """
    u, v, z = tri_pix.unbind(-1)
    u_lo, u_hi = u.amin(-1), u.amax(-1)
    v_lo, v_hi = v.amin(-1), v.amax(-1)
    if perspective_correct:
        front = z >= z_near
        nfront = front.sum(-1)
        valid = valid & (nfront > 0)
        crossing = (nfront > 0) & (nfront < 3)
        if bool(crossing.any()):
            idx = crossing.nonzero()[:, 0]
            uc, vc, zc = u[idx], v[idx], z[idx]
            fr = front[idx]
            pts_u, pts_v, ok = [uc], [vc], [fr]
            for ia, ib in ((0, 1), (1, 2), (2, 0)):
                za, zb = zc[:, ia], zc[:, ib]
                cross = fr[:, ia] != fr[:, ib]
                s = (z_near - za) / torch.where(cross, zb - za, torch.ones_like(za))
                hu = (1 - s) * uc[:, ia] * za + s * uc[:, ib] * zb
                hv = (1 - s) * vc[:, ia] * za + s * vc[:, ib] * zb
                pts_u.append((hu / z_near)[:, None])
                pts_v.append((hv / z_near)[:, None])
                ok.append(cross[:, None])
            pu, pv, pok = torch.cat(pts_u, 1), torch.cat(pts_v, 1), torch.cat(ok, 1)
            inf = torch.full_like(pu, float("inf"))
            u_lo[idx] = torch.where(pok, pu, inf).amin(1)
            u_hi[idx] = torch.where(pok, pu, -inf).amax(1)
            v_lo[idx] = torch.where(pok, pv, inf).amin(1)
            v_hi[idx] = torch.where(pok, pv, -inf).amax(1)
    valid = valid & torch.isfinite(u_lo + u_hi + v_lo + v_hi)
    # pixel centres j + 0.5 within [lo, hi]  <=>  ceil(lo - 0.5) <= j <= floor(hi - 0.5)
    big = float(max(H, W) + 2)
    x0 = torch.ceil((u_lo - 0.5 - expand).clamp(-1, big)).clamp_(min=0)
    x1 = torch.floor((u_hi - 0.5 + expand).clamp(-1, big)).clamp_(max=W - 1)
    y0 = torch.ceil((v_lo - 0.5 - expand).clamp(-1, big)).clamp_(min=0)
    y1 = torch.floor((v_hi - 0.5 + expand).clamp(-1, big)).clamp_(max=H - 1)
    bw = (x1 - x0 + 1).clamp_(min=0)
    bh = (y1 - y0 + 1).clamp_(min=0)
    count = torch.where(valid, bw * bh, torch.zeros_like(bw)).to(torch.int64)
    return x0, y0, bw, count


def _dist2_to_triangle(du, dv, rel):
    """Squared distance from points (du, dv) to the boundary of triangles (0,0), q1, q2.

    rel: (4, n) rows ``q1u, q1v, q2u, q2v``. Works on any tensor shapes that broadcast.
    """
    best = None
    for (pu, pv), (qu, qv) in (((0.0, 0.0), (rel[0], rel[1])), ((rel[0], rel[1]), (rel[2], rel[3])), ((rel[2], rel[3]), (0.0, 0.0))):
        eu, ev = qu - pu, qv - pv
        xu, xv = du - pu, dv - pv
        L = eu * eu + ev * ev
        t = ((xu * eu + xv * ev) / torch.where(L > 0, L, torch.ones_like(L))).clamp(0, 1)
        ru, rv = xu - t * eu, xv - t * ev
        d = ru * ru + rv * rv
        best = d if best is None else torch.minimum(best, d)
    return best


def _visibility(table, det, tri_pix, B, F, H, W, K, z_near, z_far, cull, perspective_correct, max_candidates, blur=0.0):
    """Non-differentiable visibility: (B*H*W, K) int64 keys (INT64_MAX = empty).

    ``blur > 0`` (pixels) also accepts pixel centres outside a triangle but within ``blur`` of it
    (soft rasterisation).
    """
    device, dtype = table.device, table.dtype
    valid = det != 0
    if cull:
        valid = valid & (det < 0)
    x0, y0, bw, count = _candidate_boxes(tri_pix.reshape(B * F, 3, 3), valid, H, W, z_near, perspective_correct, blur)
    keep = (count > 0).nonzero()[:, 0]  # global face ids (b * F + f) with candidates
    keys = torch.full((B * H * W, K), _INT64_MAX, dtype=torch.int64, device=device)
    if keep.numel() == 0:
        return keys
    max_candidates = min(int(max_candidates), 1 << 23)  # float index arithmetic stays exact
    count_k = count[keep]
    csum = torch.cumsum(count_k, 0)
    total = int(csum[-1])
    # (rows, faces) tables for the kept faces: coefficients, box offset relative to vertex 0 and
    # box width (float; box indices are exact integers below 2**24 in float32), and the
    # integer rows y0 * W + x0, face index, batch index
    b_of = torch.div(keep, F, rounding_mode="floor")
    tk = table.index_select(1, keep)
    x0k, y0k, bwk = x0.index_select(0, keep), y0.index_select(0, keep), bw.index_select(0, keep)
    ncoef = 10 if perspective_correct else 13
    coef_rows = tk[:10] if perspective_correct else torch.cat([tk[:10], tk[12:15]])
    extra = torch.stack([x0k + 0.5 - tk[10], y0k + 0.5 - tk[11], bwk]).to(dtype)
    ftab = torch.cat([coef_rows, extra])  # rows needed for every candidate
    # rows needed only for the covered candidates: y0 * W + x0 (exact in float64), face, batch
    itab = torch.stack([(y0k * W + x0k).to(torch.int64), keep - b_of * F, b_of])
    if blur > 0:  # vertices 1 and 2 relative to vertex 0, for point-to-triangle distances
        tp = tri_pix.reshape(B * F, 3, 3).index_select(0, keep)
        rel = (tp[:, 1:, :2] - tp[:, :1, :2]).reshape(-1, 4).t().to(dtype)
        ftab = torch.cat([ftab, rel])
    rel_row = ncoef + 3
    if total <= max_candidates:
        bounds = [0, keep.numel()]
    else:
        marks = torch.arange(max_candidates, total, max_candidates, device=device)
        cuts = torch.searchsorted(csum, marks, right=False).tolist()
        bounds = sorted(set([0] + [c for c in cuts if 0 < c < keep.numel()] + [keep.numel()]))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        cnt = count_k[lo:hi]
        n = int(csum[hi - 1] - (csum[lo - 1] if lo > 0 else 0))
        ids = torch.repeat_interleave(torch.arange(lo, hi, device=device), cnt, output_size=n)
        ft = ftab.index_select(1, ids)  # (rows, n): contiguous rows
        start = (torch.cumsum(cnt, 0) - cnt).to(dtype)
        idx = torch.arange(n, device=device, dtype=dtype) - start.index_select(0, ids - lo if lo else ids)
        bwc = ft[ncoef + 2]
        dy = torch.floor((idx + 0.5) / bwc)
        dx = idx - dy * bwc
        du = dx + ft[ncoef]
        dv = dy + ft[ncoef + 1]
        c0 = (ft[0] * du + ft[3] * dv + ft[6]) * ft[7]
        c1 = (ft[1] * du + ft[4] * dv) * ft[8]
        c2 = (ft[2] * du + ft[5] * dv) * ft[9]
        inside = torch.minimum(torch.minimum(c0, c1), c2) >= 0
        if blur > 0:
            inside |= _dist2_to_triangle(du, dv, ft[rel_row:rel_row + 4]) <= blur * blur
        if perspective_correct:
            s = c0 + c1 + c2
            inside &= (s * z_near <= 1.0) & (s > 0)
        else:
            s = c0 * ft[10] + c1 * ft[11] + c2 * ft[12]  # depth
            inside &= s >= z_near
        if z_far is not None:
            inside &= (s * z_far >= 1.0) if perspective_correct else (s <= z_far)
        # compact: most candidates of small triangles are outside
        sel = inside.nonzero()[:, 0]
        if sel.numel() == 0:
            continue
        s = s.index_select(0, sel)
        depth = 1.0 / s if perspective_correct else s
        isel = ids.index_select(0, sel)
        # one 1-D gather per int64 row (an int64 gather along dim 1 is several times slower)
        pix = itab[0].index_select(0, isel) + (dy.index_select(0, sel) * W + dx.index_select(0, sel)).to(torch.int64)
        if B > 1:
            pix += itab[2].index_select(0, isel) * (H * W)
        bits = depth.to(torch.float32).view(torch.int32).to(torch.int64)
        if not perspective_correct:
            bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
        key = (bits << 32) | itab[1].index_select(0, isel)
        if K == 1:
            keys[:, 0].scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
        else:
            old = (keys[:, 0] != _INT64_MAX).nonzero()[:, 0]
            old_pix = old.repeat_interleave(K)
            old_key = keys[old].reshape(-1)
            m = old_key != _INT64_MAX
            allpix = torch.cat([pix, old_pix[m]])
            allkey = torch.cat([key, old_key[m]])
            order = torch.argsort(allkey, stable=True)
            allpix, allkey = allpix[order], allkey[order]
            order = torch.argsort(allpix, stable=True)
            allpix, allkey = allpix[order], allkey[order]
            _, counts = torch.unique_consecutive(allpix, return_counts=True)
            first = torch.cumsum(counts, 0) - counts
            rank = torch.arange(allpix.numel(), device=device) - torch.repeat_interleave(first, counts)
            r = rank < K
            keys[allpix[r], rank[r]] = allkey[r]
    return keys


def rasterize(
    verts: torch.Tensor,
    faces: torch.Tensor,
    image_size,
    faces_per_pixel: int = 1,
    perspective_correct: bool = True,
    cull_backfaces: bool = False,
    z_near: float = 1e-3,
    z_far: float | None = None,
    max_candidates: int = 1 << 20,
) -> Fragments:
    """Rasterise a batch of triangle meshes given in pixel coordinates.

    Args:
        verts: (B, V, 3) float32/float64 vertices ``(u, v, depth)``: u to the right, v down, in
            pixels, origin at the image's top-left corner (pixel row i, column j has its centre
            at (j + 0.5, i + 0.5)); depth = view depth (camera-space Z, larger is farther).
            Obtain them with ``camera.project(verts_cam)`` (:mod:`facerig.render.camera`).
        faces: (F, 3) int64 vertex indices, shared by the batch.
        image_size: (H, W) in pixels (any size; 1024 x 1024 and beyond are fine).
        faces_per_pixel: K, the number of nearest faces kept per pixel.
        perspective_correct: True for a perspective camera: with screen-space barycentrics
            ``l_i`` of the pixel centre, ``bary_i = (l_i / z_i) / sum_j (l_j / z_j)`` and
            ``zbuf = 1 / sum_j (l_j / z_j)`` (1/depth is affine in screen space), i.e. the
            barycentrics of the 3-D point seen through the pixel; this is why the depth must be
            the camera-space view depth. Near-plane clipping is done per pixel in homogeneous
            coordinates. False for orthographic / weak perspective: ``bary = l`` and depth
            ``sum_i l_i z_i``.
        cull_backfaces: drop faces whose outward (counter-clockwise) normal points away from the
            camera.
        z_near: near-plane depth; surfaces closer than this are clipped (per pixel, exactly).
        z_far: optional far-plane depth.
        max_candidates: at most this many (triangle, pixel) candidates are held in memory at once.

    Returns:
        :class:`Fragments` with ``pix_to_face``, ``bary``, ``zbuf`` (see there). ``bary`` and
        ``zbuf`` are differentiable w.r.t. ``verts``; ``pix_to_face`` is piecewise constant.
    """
    H, W = _validate(verts, faces, image_size)
    if int(faces_per_pixel) < 1:
        raise ValueError(f"faces_per_pixel must be >= 1, got {faces_per_pixel}")
    K = int(faces_per_pixel)
    faces = faces.to(device=verts.device, dtype=torch.int64)
    B, F = verts.shape[0], faces.shape[0]
    if F == 0:
        p2f = torch.full((B, H, W) + ((K,) if K > 1 else ()), -1, dtype=torch.int64, device=verts.device)
        bary = torch.zeros(p2f.shape + (3,), dtype=verts.dtype, device=verts.device)
        return Fragments(p2f, bary, -torch.ones(p2f.shape, dtype=verts.dtype, device=verts.device), (H, W), perspective_correct)
    uvz = gather_face_corners(verts, faces)
    table, det = _FaceTable.apply(uvz, perspective_correct)
    with torch.no_grad():
        tri_pix = uvz.detach().permute(2, 1, 0)  # (B*F, 3 vertices, 3 coordinates) view
        keys = _visibility(
            table.detach(), det, tri_pix, B, F, H, W, K,
            float(z_near), z_far, cull_backfaces, perspective_correct, int(max_candidates),
        )
        if sys.byteorder == "little":
            # the low 32 bits of a key are the face index, and those of the empty key
            # (INT64_MAX) are 0xFFFFFFFF = -1 as int32: one strided conversion instead of 3 passes
            face = keys.view(torch.int32)[:, 0::2].to(torch.int64)  # (BHW, K)
        else:
            face = torch.where(keys == _INT64_MAX, torch.full_like(keys, -1), keys & 0xFFFFFFFF)
    bary, zbuf, compact = _bary_from_faces(table, face, B, F, H, W, perspective_correct)
    shape = (B, H, W) if K == 1 else (B, H, W, K)
    return Fragments(
        face.view(shape), lambda: bary().view(shape + (3,)), lambda: zbuf().view(shape), (H, W),
        perspective_correct, compact + (F,),
    )


_GRID_CACHE: dict = {}


def pixel_centres(H: int, W: int, dtype, device):
    """(H*W,) u and v of the pixel centres (cached)."""
    key = (H, W, dtype, str(device))
    g = _GRID_CACHE.get(key)
    if g is None:
        v, u = torch.meshgrid(
            torch.arange(H, dtype=dtype, device=device) + 0.5,
            torch.arange(W, dtype=dtype, device=device) + 0.5,
            indexing="ij",
        )
        g = (u.reshape(-1), v.reshape(-1))
        if len(_GRID_CACHE) > 16:
            _GRID_CACHE.clear()
        _GRID_CACHE[key] = g
    return g


def _sum3(x: torch.Tensor) -> torch.Tensor:
    """``x.sum(0)`` of a (3, P) tensor as two row additions (a dim-0 reduction is slow on the CPU)."""
    return x[0] + x[1] + x[2]


class _PixelBary(torch.autograd.Function):
    """Barycentrics and depth of faces ``g`` (global ids) at pixel centres ``(u, v)``.

    Input: the (T, B*F) table of :func:`face_coefficients`. Fused forward/backward: the backward
    is one index_add along dim 1 of the (T, P) row gradients into the table.
    """

    @staticmethod
    def forward(ctx, table, g, u, v, perspective):
        t = table.index_select(1, g)  # (T, P)
        du = u - t[10]
        dv = v - t[11]
        e = torch.addcmul(t[0:3] * du, t[3:6], dv)
        e[0] += t[6]
        inv_w = t[7:10]
        c = e * inv_w
        if perspective:
            inv = 1.0 / _sum3(c)
            bary = c * inv
            z = inv
            ctx.save_for_backward(g, du, dv, e, inv_w, bary, inv, t[0:6])
        else:
            bary = c
            z = _sum3(c * t[12:15])
            ctx.save_for_backward(g, du, dv, e, inv_w, c, t[12:15], t[0:6])
        ctx.perspective = perspective
        ctx.shape = table.shape
        return bary.t(), z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gb, gz):
        T, N = ctx.shape
        gb = gb.t().contiguous()  # (3, P): keeps every op below on contiguous rows
        rows = torch.empty(T, gb.shape[1], dtype=gb.dtype, device=gb.device)
        if ctx.perspective:
            g, du, dv, e, inv_w, bary, inv, ab = ctx.saved_tensors
            gc = (gb - (_sum3(gb * bary) + gz * inv)) * inv
        else:
            g, du, dv, e, inv_w, c, zt, ab = ctx.saved_tensors
            gc = gb + gz * zt
            rows[12:15] = gz * c
        ge = gc * inv_w
        rows[0:3] = ge * du
        rows[3:6] = ge * dv
        rows[6] = ge[0]
        rows[7:10] = gc * e
        rows[10] = -_sum3(ge * ab[0:3])
        rows[11] = -_sum3(ge * ab[3:6])
        gtab = torch.zeros(T, N, dtype=gb.dtype, device=gb.device).index_add_(1, g, rows)
        return gtab, None, None, None, None


def _bary_from_faces(table, face, B, F, H, W, perspective_correct):
    """Differentiable barycentrics and depth of faces ``face`` (B*H*W, K) at the pixel centres.

    Returns builders of the full (B*H*W*K, 3) bary and (B*H*W*K,) zbuf, and the compact data
    (fg indices into the flattened (B*H*W*K) layout, global face ids, compact bary) used by
    :func:`interpolate`.
    """
    K = face.shape[1]
    flat = face.reshape(-1)
    fg = (flat >= 0).nonzero()[:, 0]
    pix = torch.div(fg, K, rounding_mode="floor") if K > 1 else fg
    g = flat.index_select(0, fg)
    if B > 1:
        b = torch.div(pix, H * W, rounding_mode="floor")
        g = g + b * F
        hw = pix - b * (H * W)
    else:
        hw = pix
    u, v = pixel_centres(H, W, table.dtype, table.device)
    bary_fg, z_fg = _PixelBary.apply(table, g, u.index_select(0, hw), v.index_select(0, hw), perspective_correct)
    n, dt, dev = flat.numel(), table.dtype, table.device

    def bary():
        return torch.zeros(n, 3, dtype=dt, device=dev).index_copy(0, fg, bary_fg)

    def zbuf():
        return torch.full((n,), -1.0, dtype=dt, device=dev).index_copy(0, fg, z_fg)

    return bary, zbuf, (fg, g, bary_fg)
