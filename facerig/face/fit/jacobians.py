"""Closed-form Jacobians of the fitter (forward mode by hand, no autograd in the loop).

* :func:`vertex_jacobian` - projected vertices, depths, shaded colours (or normals and albedo) and
  their Jacobian w.r.t. the packed parameters: linear shape model, rotation, pinhole projection,
  area-weighted vertex normals (:func:`normal_tangent_matrix`), SH irradiance.
* :func:`stacked_jacobian` - the Jacobian of :func:`facerig.face.energy.stacked_residuals`
  (landmark rows in closed form, diagonal prior rows, autograd for any other term).
* :func:`pixel_rows_product` - per-pixel rows as sparse combinations of per-vertex rows.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from facerig.energy.solvers import batched_jacobian
from facerig.face.decoder import FaceDecoder
from facerig.face.energy import CodePrior, FaceObservation, LandmarkTerm
from facerig.face.fit.params import ParameterPacker
from facerig.model.code import model_to_opencv
from facerig.render import axis_angle_to_matrix, sh_basis
from facerig.render.shading import sh_basis_grad

__all__ = ["vertex_jacobian", "normal_tangent_matrix", "stacked_jacobian", "pixel_rows_product"]


def vertex_jacobian(dec: FaceDecoder, pk: "ParameterPacker", p: Tensor, y: Tensor, size, principal_point: Tensor,
                     colours: bool = True, depth: bool = False, normals: bool = False):
    """Projected vertices and shaded vertex colours of code vector ``y = pk.unpack(p)`` and their
    Jacobian w.r.t. the packer's free parameters ``p``, in closed form (forward mode by hand:
    linear shape model, rotation, pinhole projection, area-weighted vertex normals, SH irradiance).

    Returns ``vals`` (B, V, 5) = (u, v, r, g, b) and ``J`` (B, V, 5, P); pixels of an image of
    ``size`` with ``principal_point`` (B, 2) and the focal of ``y``. ``colours=False``: only the
    projected positions, (B, V, 2) and (B, V, 2, P). ``depth=True``: the camera-frame depth z (cm)
    is inserted after (u, v): (B, V, 6) = (u, v, z, r, g, b). ``normals=True`` (per-pixel shading):
    no SH light at the vertices; (B, V, 9) = (u, v, z, unit normal (3, camera frame), albedo (3)).
    """
    m = dec.model
    code = dec.as_code(y)
    B, V = y.shape[0], m.n_vertices
    dt, dev = y.dtype, y.device
    P = p.shape[1]
    faces = dec.faces.to(dev)
    Mflip = model_to_opencv(dt, dev)
    rot = code.rotation
    Rm = axis_angle_to_matrix(rot)
    R = Rm @ Mflip  # (B, 3, 3)
    X = m.shape(code.identity, code.expression)  # (B, V, 3) model frame
    cam = X @ R.transpose(1, 2) + code.translation[:, None]
    Jc = torch.zeros(B, V, 3, P, dtype=dt, device=dev)  # d cam / d p
    Ja = torch.zeros(B, V, 3, P, dtype=dt, device=dev)  # d albedo / d p
    Jsh = {}
    for part, (sl, k) in pk.layout.items():
        s = pk.scales[part].to(dt)
        if part in ("identity", "expression"):
            basis = (m.identity_basis if part == "identity" else m.expression_basis).to(dt)  # (K, V, 3)
            Jc[..., sl] = torch.einsum("bij,kvj->bvik", R, basis * s[:, None, None])
        elif part == "translation":
            Jc[..., sl] = torch.diag(s)[None, None].expand(B, V, 3, 3)
        elif part == "rotation":
            # dR/d rot_k of Rodrigues' formula: central differences in float64 (error ~1e-8)
            h = 1e-6
            r64 = rot.detach().to(torch.float64)[:, None, :] + torch.eye(3, dtype=torch.float64, device=dev) * h
            r64m = r64 - 2 * h * torch.eye(3, dtype=torch.float64, device=dev)
            dR = ((axis_angle_to_matrix(r64) - axis_angle_to_matrix(r64m)) / (2 * h)).permute(0, 2, 3, 1).to(dt)  # (B,3,3,3)
            dRf = torch.einsum("bijk,jl->bilk", dR, Mflip)  # d(R Mflip)/d rot_k
            Jc[..., sl] = torch.einsum("bvj,bijk->bvik", X, dRf) * s
        elif part == "albedo":
            Ja[..., sl] = torch.einsum("kvc->vck", m.albedo_basis.to(dt) * s[:, None, None])[None]
        elif part == "sh":
            Jsh["sl"], Jsh["s"] = sl, s
    # projection
    f = code.focal.reshape(B, 1)
    z = cam[..., 2]
    pix_u = f * cam[..., 0] / z + principal_point[:, 0:1]
    pix_v = f * cam[..., 1] / z + principal_point[:, 1:2]
    fz = f / z
    Ju = fz[..., None] * (Jc[:, :, 0] - (cam[..., 0] / z)[..., None] * Jc[:, :, 2])
    Jv = fz[..., None] * (Jc[:, :, 1] - (cam[..., 1] / z)[..., None] * Jc[:, :, 2])
    if not colours:
        return torch.stack([pix_u, pix_v], -1), torch.stack([Ju, Jv], 2)
    # area-weighted vertex normals m_v = sum of the (unnormalised) normals of the faces around v, and
    # their tangents dm = M @ Jc with a sparse (3V x 3V) matrix M (:func:`normal_tangent_matrix`)
    x0, x1, x2 = cam[:, faces[:, 0]], cam[:, faces[:, 1]], cam[:, faces[:, 2]]  # (B, F, 3)
    fn = torch.linalg.cross(x1 - x0, x2 - x0, dim=-1)
    msum = torch.zeros(B, V, 3, dtype=dt, device=dev)
    for k in range(3):
        msum = msum.index_add(1, faces[:, k], fn)
    dm = torch.stack([normal_tangent_matrix(dec, cam[b]) @ Jc[b].reshape(V * 3, P) for b in range(B)]).reshape(B, V, 3, P)
    norm = msum.norm(dim=-1, keepdim=True).clamp(min=1e-20)
    n = msum / norm
    dn = (dm - n[..., None] * (n[..., None] * dm).sum(-2, keepdim=True)) / norm[..., None]
    # SH irradiance: irr_c = sum_k Y_k(n) sh_kc
    if normals:  # per-pixel shading: the SH light is applied at the pixels (PhotometricLM._pixel_jacobian)
        alb = m.albedo(code.albedo)
        vals = torch.cat([torch.stack([pix_u, pix_v, z], -1), n, alb], -1)
        J = torch.cat([torch.stack([Ju, Jv, Jc[:, :, 2]], 2), dn, Ja], 2)
        return vals, J
    Y = sh_basis(n)  # (B, V, 9)
    dY = sh_basis_grad(n)  # (B, V, 3 normal comps, 9)
    sh = code.sh  # (B, 9, 3)
    irr = torch.einsum("bvk,bkc->bvc", Y, sh)
    dirr_dn = torch.einsum("bvjk,bkc->bvcj", dY, sh)  # (B, V, 3 ch, 3 comps)
    dirr = torch.einsum("bvcj,bvjp->bvcp", dirr_dn, dn)
    if Jsh:
        sl, s = Jsh["sl"], Jsh["s"]
        blk = torch.zeros(B, V, 3, 9, 3, dtype=dt, device=dev)  # column (k, c') of channel c: Y_k [c == c']
        for c in range(3):
            blk[:, :, c, :, c] = Y
        dirr[..., sl] = dirr[..., sl] + blk.reshape(B, V, 3, 27) * s
    alb = m.albedo(code.albedo)
    col = alb * irr
    dcol = Ja * irr[..., None] + alb[..., None] * dirr
    if depth:
        vals = torch.cat([torch.stack([pix_u, pix_v, z], -1), col], -1)
        J = torch.cat([torch.stack([Ju, Jv, Jc[:, :, 2]], 2), dcol], 2)
    else:
        vals = torch.cat([torch.stack([pix_u, pix_v], -1), col], -1)
        J = torch.cat([torch.stack([Ju, Jv], 2), dcol], 2)
    return vals, J


def normal_tangent_matrix(dec: FaceDecoder, cam: Tensor) -> Tensor:
    """The sparse (3V x 3V) CSR matrix M with ``d m = M @ d x`` for the area-weighted vertex
    normals ``m_v = sum_{faces f at v} (x_1 - x_0) x (x_2 - x_0)`` of vertices ``cam`` (V, 3).

    Face f's normal is ``sum_{edges (p, q) of its cycle} r_p x r_q`` for positions ``r = x - c``
    relative to any point c; with c = the vertex v it is added to (well conditioned: edge-sized
    numbers), ``d(r_p x r_q) = -[r_q]x dx_p + [r_p]x dx_q`` (c's own terms cancel around the cycle),
    so block (v, u) of M sums the skew matrices of the faces around v that touch u: the one-ring
    pattern, ~7 blocks per row, built once per mesh and cached on ``dec``."""
    faces = dec.faces.to(cam.device)
    V = cam.shape[0]
    cache = dec.__dict__.setdefault("_normal_tangent_cache", {})
    key = (str(cam.device), V)
    if key not in cache:
        F = faces.shape[0]
        t = torch.arange(3, device=cam.device)
        cyc_p, cyc_q = t, (t + 1) % 3  # the cycle's directed edges (p, q), corner indices
        vt = faces[:, :, None].expand(F, 3, 3)  # (F, target corner, edge)
        vp = faces[:, cyc_p][:, None, :].expand(F, 3, 3)
        vq = faces[:, cyc_q][:, None, :].expand(F, 3, 3)
        key_p, key_q = vt * V + vp, vt * V + vq  # block (row vertex, column vertex)
        blocks, inv = torch.unique(torch.stack([key_p, key_q], -1).reshape(-1), return_inverse=True)
        rv, cv = blocks // V, blocks % V
        n_blk = blocks.shape[0]
        ij = torch.arange(3, device=cam.device)
        rows = (rv[:, None, None] * 3 + ij[None, :, None]).expand(n_blk, 3, 3).reshape(-1)
        cols = (cv[:, None, None] * 3 + ij[None, None, :]).expand(n_blk, 3, 3).reshape(-1)
        order = torch.argsort(rows * (3 * V) + cols)  # CSR: row-major, columns ascending
        counts = torch.bincount(rows, minlength=3 * V)
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        cache[key] = (inv.reshape(F, 3, 3, 2), n_blk, order, crow, cols[order], cyc_p, cyc_q)
    inv, n_blk, order, crow, cols, cyc_p, cyc_q = cache[key]
    X = cam[faces]  # (F, 3 corners, 3)
    r = X[:, None, :, :] - X[:, :, None, :]  # (F, target t, corner k, 3): x_k - x_t
    rp, rq = r[:, :, cyc_p], r[:, :, cyc_q]  # (F, t, edge, 3)

    def skew(a):  # (..., 3) -> (..., 3, 3) with skew(a) @ b = a x b
        z = torch.zeros_like(a[..., 0])
        return torch.stack([torch.stack([z, -a[..., 2], a[..., 1]], -1), torch.stack([a[..., 2], z, -a[..., 0]], -1),
                            torch.stack([-a[..., 1], a[..., 0], z], -1)], -2)

    contrib = torch.stack([-skew(rq), skew(rp)], 3)  # (F, t, edge, {p, q}, 3, 3)
    vals = torch.zeros(n_blk, 3, 3, dtype=cam.dtype, device=cam.device).index_add_(0, inv.reshape(-1), contrib.reshape(-1, 3, 3))
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, vals.reshape(-1)[order], (3 * V, 3 * V), check_invariants=False)


def stacked_jacobian(energy, obs: FaceObservation, pk: "ParameterPacker", p: Tensor, pix: Tensor, Jpix: Tensor) -> Tensor:
    """Jacobian (B, M, P) of ``stacked_residuals(energy, obs, pk.unpack(p))`` w.r.t. ``p``.

    :class:`~facerig.face.energy.LandmarkTerm` rows come in closed form from the projected
    vertices ``pix`` (B, V, 2) (pixels of ``obs``) and their Jacobian ``Jpix`` (B, V, 2, P);
    :class:`~facerig.face.energy.CodePrior` rows are diagonal, as are those of any term with a
    ``part`` name, a ``slice`` of the code vector and a ``diagonal_derivative(y) -> (B, K)`` method
    (d residual_k / d y[slice][k]); any other term falls back to forward-mode autograd.
    """
    B, P = p.shape
    rows = []
    for name, term in energy.terms.items():
        sw = math.sqrt(energy.weights[name])
        if isinstance(term, LandmarkTerm):
            idx = obs.vertex_ids.to(pix.device)
            L = idx.shape[1]
            pred = torch.gather(pix, 1, idx[..., None].expand(-1, -1, 2))
            Jp = torch.gather(Jpix, 1, idx[..., None, None].expand(-1, -1, 2, P))  # (B, L, 2, P)
            e = pred - obs.landmarks.to(pred.dtype)
            if obs.contour.numel():
                c = obs.contour.to(e.device)
                n = obs.normals.to(e.dtype)
                t = torch.stack([n[..., 1], -n[..., 0]], -1)
                st = math.sqrt(term.tangent_weight)
                ec, Jcn = e[:, c], Jp[:, c]
                e = e.index_copy(1, c, torch.stack([(ec * n).sum(-1), (ec * t).sum(-1) * st], -1))
                Jp = Jp.index_copy(1, c, torch.stack([(Jcn * n[..., None]).sum(2), (Jcn * t[..., None]).sum(2) * st], 2))
            z = e / term.sigma
            if term.delta is None:
                dr = torch.full_like(z, 1.0 / math.sqrt(2.0))
            else:
                a = z.abs()
                dr = torch.where(a <= term.delta, torch.full_like(z, 1.0 / math.sqrt(2.0)),
                                 term.delta / (2.0 * (term.delta * (a - 0.5 * term.delta)).clamp(min=1e-30).sqrt()))
            w = term._weights(obs, z).sqrt()  # (B, L, 1)
            rows.append(((sw / term.sigma) * (dr * w)[..., None] * Jp).reshape(B, 2 * L, P))
        elif isinstance(term, CodePrior) or callable(getattr(term, "diagonal_derivative", None)):
            # diagonal terms: residual k depends on coordinate k of the term's part only
            K = term.slice.stop - term.slice.start
            J = torch.zeros(B, K, P, dtype=p.dtype, device=p.device)
            if term.part in pk.layout and not pk.joint:
                sl, _k = pk.layout[term.part]
                if isinstance(term, CodePrior):  # (y - mean) / scale: the mean does not matter
                    std = term.scale.to(p) if isinstance(term.scale, Tensor) else torch.full((K,), float(term.scale), dtype=p.dtype, device=p.device)
                    d = sw * pk.scales[term.part].to(p) / std
                else:
                    d = sw * pk.scales[term.part].to(p) * term.diagonal_derivative(pk.unpack(p))
                J[:, torch.arange(K), torch.arange(sl.start, sl.stop)] = d
            rows.append(J)
        else:
            rows.append(sw * batched_jacobian(lambda q, t=term: t.residuals(obs, pk.unpack(q)), p, "forward")[1])
    return torch.cat(rows, 1)


def pixel_rows_product(cols: Tensor, vals: Tensor, Jflat: Tensor) -> Tensor:
    """Per-pixel Jacobian rows as sparse combinations of per-vertex rows: ``(B, R, P)``.

    ``cols`` / ``vals`` ``(B, N, 3, K)``: for each pixel n and colour channel, K (column index into
    the flattened vertex quantities, weight) pairs; ``Jflat`` ``(B, V*Q, P)`` the vertex quantities'
    Jacobian. One CSR ``(3N x V*Q) @ (V*Q x P)`` product per sample, R = 3N rows (pixel-major)."""
    B, N, _, K = cols.shape
    crow = torch.arange(0, K * 3 * N + 1, K, device=cols.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.stack([torch.sparse_csr_tensor(crow, cols[b].reshape(-1), vals[b].reshape(-1), (3 * N, Jflat.shape[1]),
                                                    check_invariants=False) @ Jflat[b] for b in range(B)])
