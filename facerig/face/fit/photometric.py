"""Stage 3 of the fitter: photometric refinement of identity, expression, albedo, pose and SH light.

* :func:`init_light_albedo` - closed-form SH light and albedo on the visible skin vertices.
* :class:`PhotometricLM` - residuals and closed-form Jacobian of the photometric energy for the
  core's Levenberg-Marquardt (also used by :class:`facerig.rig.FrameTracker`).
* :func:`photometric_refine` - coarse-to-fine Levenberg-Marquardt rounds (the default);
  :func:`photometric_refine_adam` - the Adam variant (and the joint multi-frame fit).
"""

from __future__ import annotations

import torch
from torch import Tensor

from facerig.energy.solvers import levenberg_marquardt, minimize_adam
from facerig.face.decoder import FaceDecoder
from facerig.face.energy import FaceObservation, face_energy, stacked_residuals
from facerig.face.fit.jacobians import pixel_rows_product, stacked_jacobian, vertex_jacobian
from facerig.face.fit.options import FitOptions
from facerig.face.fit.params import ParameterPacker, parameter_scales
from facerig.face.fit.subdivision import excluded_faces, subdivided_decoder
from facerig.model import GraphicCode
from facerig.render import rasterize, sh_basis, vertex_normals
from facerig.render.shading import check_shading, sh_basis_grad

__all__ = ["PhotometricLM", "init_light_albedo", "photometric_refine", "photometric_refine_adam", "photometric_stage",
           "robust_rho", "robust_rho_grad"]


def _sample_image(image: Tensor, pts: Tensor) -> Tensor:
    """Bilinear samples (B, N, 3) of images (B, H, W, 3) at pixel points (B, N, 2) (centre convention)."""
    B, H, W, _ = image.shape
    g = torch.stack([pts[..., 0] / W * 2 - 1, pts[..., 1] / H * 2 - 1], -1)[:, :, None]
    s = torch.nn.functional.grid_sample(image.permute(0, 3, 1, 2), g.to(image.dtype), align_corners=False,
                                        padding_mode="border")
    return s[..., 0].permute(0, 2, 1)


@torch.no_grad()
def init_light_albedo(dec: FaceDecoder, obs: FaceObservation, y: Tensor, shared_albedo: bool = False) -> Tensor:
    """Closed-form SH light and albedo on the visible skin vertices (alternating linear least squares).

    Args:
        dec: the decoder; obs: the observation (its ``image`` (B, H, W, 3) is sampled at the visible
            vertices' projections); y: (B, D) code vectors (geometry and camera are kept).
        shared_albedo: one albedo for all B samples (multi-frame fits).
    Returns:
        (B, D) the code with ``albedo`` and ``sh`` replaced.
    """
    m = dec.model
    code = dec.as_code(y).clone()
    B = code.batch_size
    verts = dec.vertices(code)
    pix = dec.project(verts, code.focal, obs.image_size, obs.principal_point)
    faces = dec.faces.to(verts.device)
    frags = rasterize(pix, faces, obs.image_size)
    vis = torch.zeros(B, m.n_vertices, dtype=torch.bool, device=verts.device)
    for b in range(B):
        f = frags.pix_to_face[b]
        vis[b, faces[torch.unique(f[f >= 0])].reshape(-1)] = True
    skin = dec.skin_weight.to(verts) > 0.5
    inside = (pix[..., 0] > 1) & (pix[..., 0] < obs.image_size[1] - 1) & (pix[..., 1] > 1) & (pix[..., 1] < obs.image_size[0] - 1)
    use = vis & skin[None] & inside
    colors = _sample_image(obs.image.to(verts.dtype), pix[..., :2])  # (B, V, 3)
    Y = sh_basis(vertex_normals(verts, faces))  # (B, V, 9)
    alb_mean = m.albedo_mean.to(verts)
    basis = m.albedo_basis.to(verts)  # (K, V, 3)
    std = m.albedo_std.to(verts)
    K = basis.shape[0]
    alb_coef = code.albedo.clone()
    sh = code.sh.clone()
    for _ in range(2):
        alb = alb_mean[None] + torch.einsum("bk,kvc->bvc", alb_coef, basis)
        for b in range(B):
            u = use[b]
            if int(u.sum()) < 20:
                continue
            for ch in range(3):
                A = alb[b, u, ch, None] * Y[b, u]  # (n, 9)
                rhs = colors[b, u, ch]
                reg = 1e-3 * torch.eye(9, dtype=A.dtype, device=A.device)
                sh[b, :, ch] = torch.linalg.solve(A.T @ A + reg, A.T @ rhs)
        irr = torch.einsum("bvk,bkc->bvc", Y, sh)  # (B, V, 3)
        # albedo: colors = irr * (mean + sum_k b_k basis_k)  -> linear in b, ridge prior b ~ N(0, std^2)
        rows_A, rows_r = [], []
        for b in range(B):
            u = use[b]
            if int(u.sum()) < 20:
                rows_A.append(None)
                rows_r.append(None)
                continue
            A = (irr[b, u][None] * basis[:, u]).permute(1, 2, 0).reshape(-1, K)  # (n*3, K)
            r = (colors[b, u] - irr[b, u] * alb_mean[u]).reshape(-1)
            rows_A.append(A)
            rows_r.append(r)
        lam = 0.05 * torch.diag(1.0 / std.square())
        if shared_albedo:
            AtA = sum(A.T @ A for A in rows_A if A is not None)
            Atr = sum(A.T @ r for A, r in zip(rows_A, rows_r) if A is not None)
            if isinstance(AtA, Tensor):
                sol = torch.linalg.solve(AtA + lam * max(1, len(rows_A)), Atr)
                alb_coef[:] = sol
        else:
            for b in range(B):
                if rows_A[b] is None:
                    continue
                A = rows_A[b]
                alb_coef[b] = torch.linalg.solve(A.T @ A + lam, A.T @ rows_r[b])
    code.sh = sh
    code.albedo = alb_coef
    return code.to_vector()


def robust_rho(e: Tensor, eps: float) -> Tensor:
    """Signed square root of the Charbonnier loss, ``rho(e)^2 = sqrt(e^2 + eps^2) - eps`` (smooth at 0)."""
    return e / ((e.square() + eps * eps).sqrt() + eps).sqrt()


def robust_rho_grad(e: Tensor, eps: float) -> Tensor:
    """d rho / d e of :func:`robust_rho`."""
    R = (e.square() + eps * eps).sqrt()
    s = (R + eps).sqrt()
    return 1.0 / s - e.square() / (2.0 * R * s ** 3)


class PhotometricLM:
    """Residuals and Jacobian of the stage-3 energy (landmarks + priors + photometric) for the
    core's Levenberg-Marquardt.

    The photometric residual of colour channel c at pixel p is
    ``sqrt(w_photo * m_p / area) * rho(clamp(I_p, 0, 1) - photo_p)`` with ``rho`` the signed square
    root of the Charbonnier loss, ``m`` the skin mask x coverage (less the ``erode`` px next to the
    silhouette) x valid pixels and ``area`` its sum, so the squared residuals sum to the same value as :class:`~facerig.face.energy.PhotometricTerm`
    (rendered at ``size`` pixels: the photo is area-downsampled, focal and principal point scaled).
    It is evaluated on a fixed pixel set (the coverage at the start, dilated by ``pad`` pixels), so
    the residual vector keeps its length while the face moves.

    Jacobian, in closed form: landmark and diagonal prior rows from :func:`stacked_jacobian`
    (``e_rest`` may hold any terms it handles, e.g. a caller's own priors); the photometric rows by
    the chain rule through the perspective-correct barycentrics of the pixel's triangle (visibility
    frozen at the current parameters), the per-vertex quantities of :func:`vertex_jacobian`
    (positions, depth, and colours or normals + albedo with ``shading="pixel"``), the clamp and ``rho``.
    """

    def __init__(self, dec: FaceDecoder, obs: FaceObservation, pk: "ParameterPacker", e_rest, w_photo: float, eps: float,
                 size: int, pad: int = 2, erode: int = 0, exclude_faces: Tensor | None = None, shading: str = "vertex"):
        self.shading = check_shading(shading)

        self.dec, self.obs, self.pk, self.e_rest = dec, obs, pk, e_rest
        self.w_photo, self.eps = float(w_photo), float(eps)
        H, W = obs.image_size
        self.size = (int(size), int(round(size * W / H)))
        h, w = self.size
        self.scale = h / H
        img = obs.image.permute(0, 3, 1, 2)
        valid = torch.ones_like(img[:, :1]) if obs.valid is None else obs.valid.permute(0, 3, 1, 2).to(img.dtype)
        if (h, w) != (H, W):
            img = torch.nn.functional.interpolate(img, size=(h, w), mode="area")
            valid = (torch.nn.functional.interpolate(valid, size=(h, w), mode="area") > 0.999).to(img.dtype)
        self.photo = img.permute(0, 2, 3, 1).reshape(img.shape[0], h * w, 3)
        self.valid = valid.reshape(img.shape[0], h * w)
        self.pp = obs.principal_point * self.scale
        self.pad = int(pad)
        self.erode = int(erode)
        # optional (F,) bool: pixels whose visible triangle is one of these are left out (e.g. the mouth opening)
        self.exclude = None if exclude_faces is None else torch.as_tensor(exclude_faces, dtype=torch.bool)
        self.sel = None

    # --------------------------------------------------------------- helpers
    def _scaled(self, y: Tensor) -> Tensor:
        sl = GraphicCode.slices(self.dec.sizes)["focal"]
        return torch.cat([y[:, :sl.start], y[:, sl] * self.scale, y[:, sl.stop:]], 1)

    def _render(self, p: Tensor):
        return self.dec(self._scaled(self.pk.unpack(p)), self.size, self.pp, shading=self.shading)

    def set_support(self, p: Tensor) -> None:
        """Fix the pixel set: coverage at ``p`` dilated by ``pad`` pixels, within the valid pixels."""
        with torch.no_grad():
            out = self._render(p)
        a = out.alpha.permute(0, 3, 1, 2)
        if self.pad > 0:
            a = torch.nn.functional.max_pool2d(a, 2 * self.pad + 1, stride=1, padding=self.pad)
        keep = (a.reshape(a.shape[0], -1) > 0) & (self.valid > 0)
        n = int(keep.sum(1).max().clamp(min=1))
        # per-sample pixel indices padded to n (padding rows get flag 0)
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :n]
        self.sel = order
        self.flag = torch.gather(keep, 1, order).to(p.dtype)
        h, w = self.size
        self.centres = torch.stack([(order % w).to(p.dtype) + 0.5, torch.div(order, w, rounding_mode="floor").to(p.dtype) + 0.5], -1)
        self.photo_sel = torch.gather(self.photo, 1, order[..., None].expand(-1, -1, 3))

    def _photo_parts(self, out):
        """(mask weights on the support (B, N), rendered colours (B, N, 3), area (B,))."""
        B = out.image.shape[0]
        m = out.skin * out.alpha
        if self.erode > 0:  # drop the pixels within ``erode`` px of the silhouette (partial coverage in the photo)
            k = 2 * self.erode + 1
            inner = -torch.nn.functional.max_pool2d(-out.alpha.permute(0, 3, 1, 2), k, stride=1, padding=self.erode)
            m = m * inner.permute(0, 2, 3, 1)
        m = m.reshape(B, -1) * self.valid
        if self.exclude is not None:
            p2f = out.fragments.pix_to_face.reshape(B, -1)
            ex = self.exclude.to(p2f.device)[p2f.clamp(min=0)] & (p2f >= 0)
            m = m * (~ex).to(m.dtype)
        area = m.sum(1).clamp(min=1.0)
        idx = self.sel
        ms = torch.gather(m, 1, idx) * self.flag
        img = torch.gather(out.image.reshape(B, -1, 3), 1, idx[..., None].expand(-1, -1, 3))
        return ms.detach(), img, area.detach()

    # --------------------------------------------------------------- LM interface
    def residual(self, p: Tensor) -> Tensor:
        y = self.pk.unpack(p)
        r_rest = stacked_residuals(self.e_rest, self.obs, y)
        out = self.dec(self._scaled(y), self.size, self.pp, shading=self.shading)
        ms, img, area = self._photo_parts(out)
        e = img.clamp(0.0, 1.0) - self.photo_sel
        r = robust_rho(e, self.eps) * (self.w_photo * ms / area[:, None]).sqrt()[..., None]
        return torch.cat([r_rest, r.reshape(r.shape[0], -1)], 1)

    def jacobian(self, p: Tensor) -> Tensor:
        dec, pk = self.dec, self.pk
        with torch.no_grad():
            out = self._render(p)
            ms, img, area = self._photo_parts(out)
            p2f = torch.gather(out.fragments.pix_to_face.reshape(p.shape[0], -1), 1, self.sel)
            factor = robust_rho_grad(img.clamp(0.0, 1.0) - self.photo_sel, self.eps)
            factor = factor * ((img >= 0) & (img <= 1)).to(p.dtype)
            factor = factor * (self.w_photo * ms / area[:, None]).sqrt()[..., None] * (p2f >= 0)[..., None].to(p.dtype)
        faces = dec.faces.to(p.device)
        B = p.shape[0]
        if self.shading == "pixel":
            return self._pixel_jacobian(p, p2f, factor)

        # vertex quantities (u, v, z, r, g, b) and their Jacobians (B, V, 6), (B, V, 6, P)
        vals, Jv = vertex_jacobian(dec, pk, p, self._scaled(pk.unpack(p)), self.size, self.pp, depth=True)
        J_rest = stacked_jacobian(self.e_rest, self.obs, pk, p, vals[..., :2] / self.scale, Jv[:, :, :2] / self.scale)
        tri = faces[p2f.clamp(min=0)]  # (B, N, 3) vertices of the triangle seen at each pixel
        N = tri.shape[1]
        flat = tri.reshape(B, N * 3)
        g = torch.gather(vals, 1, flat[..., None].expand(-1, -1, 6)).reshape(B, N, 3, 6)
        P_, z_, C_ = g[..., :2], g[..., 2], g[..., 3:]  # corners: positions (B,N,3,2), depths (B,N,3), colours (B,N,3,3)
        q = self.centres[:, :, None]  # (B, N, 1, 2)
        # perspective-correct barycentrics: lam_k = w_k / W with w_k = A_k / z_k, W = sum_k w_k and
        # A_k = cross(x_{k+1} - q, x_{k+2} - q) (twice the screen area opposite corner k). With
        # I = sum_k lam_k C_k: dI = sum_k (C_k - I) dw_k / W + lam_k dC_k and
        # dw_k = dA_k / z_k - A_k dz_k / z_k^2; A_{k+1} and A_{k+2} depend on corner k:
        # dA_{k+1}/dx_k = (-(x_{k+2}-q)_y, (x_{k+2}-q)_x), dA_{k+2}/dx_k = ((x_{k+1}-q)_y, -(x_{k+1}-q)_x)
        rel = P_ - q
        nxt, prv = rel.roll(-1, 2), rel.roll(1, 2)  # corner k+1, k+2 (= k-1)
        A = nxt[..., 0] * prv[..., 1] - nxt[..., 1] * prv[..., 0]  # (B, N, 3)
        w = A / z_
        W = w.sum(-1, keepdim=True)
        W = torch.where(W.abs() > 1e-20, W, torch.full_like(W, 1e-20))
        lam = w / W
        I = (lam[..., None] * C_).sum(2)  # (B, N, 3)
        G = (C_ - I[:, :, None]) / (z_ * W)[..., None]  # (C_k - I) / (z_k W)  (B, N, 3 corners, 3 ch)
        dA1 = torch.stack([-prv[..., 1], prv[..., 0]], -1)  # dA_{k+1}/dx_k  (B, N, 3, 2)
        dA2 = torch.stack([nxt[..., 1], -nxt[..., 0]], -1)  # dA_{k+2}/dx_k
        dI_dx = G.roll(-1, 2)[..., None] * dA1[..., None, :] + G.roll(1, 2)[..., None] * dA2[..., None, :]  # (B,N,k,c,2)
        dI_dz = -G * (A / z_)[..., None]  # (B, N, k, c)
        # The pixel rows are sparse combinations of the vertex rows: row (n, c) =
        # sum_k dI_dx[n,k,c] . Jv[v_k, uv] + dI_dz[n,k,c] Jv[v_k, z] + lam[n,k] Jv[v_k, colour c]:
        # 12 non-zeros per row -> one CSR (3N x 6V) @ (6V x P) product per sample.
        V, Pn = Jv.shape[1], Jv.shape[-1]
        cidx = torch.arange(3, device=p.device)
        col_pos = (tri[..., None, None] * 6 + torch.arange(3, device=p.device)).expand(B, N, 3, 3, 3)  # (B,N,k,c,uvz)
        col_col = (tri[..., None] * 6 + 3 + cidx).expand(B, N, 3, 3)  # (B,N,k,c)
        val_pos = torch.cat([dI_dx, dI_dz[..., None]], -1) * factor[:, :, None, :, None]
        val_col = lam[..., None] * factor[:, :, None, :]
        cols = torch.cat([col_pos.permute(0, 1, 3, 2, 4).reshape(B, N, 3, 9), col_col.permute(0, 1, 3, 2)], -1)
        vals_ = torch.cat([val_pos.permute(0, 1, 3, 2, 4).reshape(B, N, 3, 9), val_col.permute(0, 1, 3, 2)], -1)
        J_ph = pixel_rows_product(cols, vals_, Jv.reshape(B, V * 6, Pn))
        return torch.cat([J_rest, J_ph], 1)

    def _pixel_jacobian(self, p: Tensor, p2f: Tensor, factor: Tensor) -> Tensor:
        """:meth:`jacobian` with per-pixel shading (``shading="pixel"``), in closed form.

        At a pixel with perspective-correct barycentrics ``lam_k`` of its triangle's corners k, the
        interpolated albedo ``a = sum_k lam_k a_k`` and normal ``m = sum_k lam_k n_k`` (vertex unit
        normals) give ``I_c = a_c * sum_j Y_j(m / |m|) sh_jc``. So
        ``dI_c = irr_c da_c + sum_i D_ci dm_i + a_c Y_j d sh_jc`` with ``D = a_c (d irr_c / d n^)
        (I - n^ n^T) / |m|``; ``da`` and ``dm`` are interpolations, differentiated as the vertex
        path's colours are (corner terms ``lam_k d a_k``, ``lam_k d n_k`` plus the barycentrics'
        dependence on the corner positions and depths, with ``irr_c (a_k - a)_c + D (n_k - m)``
        in place of ``C_k - I``). The SH columns are dense per pixel and added directly.
        """
        dec, pk = self.dec, self.pk
        faces = dec.faces.to(p.device)
        B = p.shape[0]
        y = self._scaled(pk.unpack(p))
        vals, Jv = vertex_jacobian(dec, pk, p, y, self.size, self.pp, depth=True, normals=True)  # (B,V,9), (B,V,9,P)
        J_rest = stacked_jacobian(self.e_rest, self.obs, pk, p, vals[..., :2] / self.scale, Jv[:, :, :2] / self.scale)
        tri = faces[p2f.clamp(min=0)]  # (B, N, 3)
        N = tri.shape[1]
        g = torch.gather(vals, 1, tri.reshape(B, N * 3)[..., None].expand(-1, -1, 9)).reshape(B, N, 3, 9)
        P_, z_, Nk, Ak = g[..., :2], g[..., 2], g[..., 3:6], g[..., 6:9]
        rel = P_ - self.centres[:, :, None]
        nxt, prv = rel.roll(-1, 2), rel.roll(1, 2)
        A = nxt[..., 0] * prv[..., 1] - nxt[..., 1] * prv[..., 0]
        w = A / z_
        W = w.sum(-1, keepdim=True)
        W = torch.where(W.abs() > 1e-20, W, torch.full_like(W, 1e-20))
        lam = w / W  # (B, N, 3)
        alb = (lam[..., None] * Ak).sum(2)  # (B, N, 3 ch)
        M = (lam[..., None] * Nk).sum(2)  # (B, N, 3 comps)
        mlen = M.norm(dim=-1, keepdim=True).clamp(min=1e-20)
        nh = M / mlen
        sh = dec.as_code(y).sh.to(p.dtype)  # (B, 9, 3)
        Y = sh_basis(nh)  # (B, N, 9)
        irr = torch.einsum("bnk,bkc->bnc", Y, sh)
        dirr = torch.einsum("bnjk,bkc->bncj", sh_basis_grad(nh), sh)  # d irr_c / d n^_j
        proj = (torch.eye(3, dtype=p.dtype, device=p.device) - nh[..., :, None] * nh[..., None, :]) / mlen[..., None]
        D = alb[..., None] * torch.einsum("bncj,bnji->bnci", dirr, proj)  # d I_c / d m_i  (B, N, 3, 3)
        E = irr[:, :, None] * (Ak - alb[:, :, None]) + torch.einsum("bnci,bnki->bnkc", D, Nk - M[:, :, None])
        G = E / (z_ * W)[..., None]  # (B, N, k, c)
        dA1 = torch.stack([-prv[..., 1], prv[..., 0]], -1)
        dA2 = torch.stack([nxt[..., 1], -nxt[..., 0]], -1)
        dI_dx = G.roll(-1, 2)[..., None] * dA1[..., None, :] + G.roll(1, 2)[..., None] * dA2[..., None, :]  # (B,N,k,c,2)
        dI_dz = -G * (A / z_)[..., None]  # (B, N, k, c)
        # row (n, c): per corner k: (u, v, z) 3 + normal 3 + albedo of channel c 1 = 21 non-zeros
        V, Pn = Jv.shape[1], Jv.shape[-1]
        ar3 = torch.arange(3, device=p.device)
        base = (tri * 9)[..., None, None]  # (B, N, k, 1, 1)
        col_pos = (base + ar3).expand(B, N, 3, 3, 3)  # (B, N, k, c, uvz)
        col_nrm = (base + 3 + ar3).expand(B, N, 3, 3, 3)  # (B, N, k, c, i)
        col_alb = (tri[..., None] * 9 + 6 + ar3).expand(B, N, 3, 3)  # (B, N, k, c)
        f5 = factor[:, :, None, :, None]
        val_pos = torch.cat([dI_dx, dI_dz[..., None]], -1) * f5
        val_nrm = lam[..., None, None] * D[:, :, None] * f5  # lam_k D_ci
        val_alb = lam[..., None] * irr[:, :, None] * factor[:, :, None]
        cols = torch.cat([col_pos.permute(0, 1, 3, 2, 4).reshape(B, N, 3, 9), col_nrm.permute(0, 1, 3, 2, 4).reshape(B, N, 3, 9),
                          col_alb.permute(0, 1, 3, 2)], -1)
        vals_ = torch.cat([val_pos.permute(0, 1, 3, 2, 4).reshape(B, N, 3, 9), val_nrm.permute(0, 1, 3, 2, 4).reshape(B, N, 3, 9),
                           val_alb.permute(0, 1, 3, 2)], -1)
        J_ph = pixel_rows_product(cols, vals_, Jv.reshape(B, V * 9, Pn))
        if "sh" in pk.layout:  # d I_c / d sh_kc' = alb_c Y_k [c == c'], column k * 3 + c' of the part
            sl, _k = pk.layout["sh"]
            blk = torch.zeros(B, N, 3, 9, 3, dtype=p.dtype, device=p.device)
            for c in range(3):
                blk[:, :, c, :, c] = Y * (alb[..., c] * factor[..., c])[..., None]
            J_ph = J_ph.view(B, N, 3, Pn)
            J_ph[..., sl] += blk.reshape(B, N, 3, 27) * pk.scales["sh"].to(p.dtype)
            J_ph = J_ph.reshape(B, 3 * N, Pn)
        return torch.cat([J_rest, J_ph], 1)



def photometric_refine(dec: FaceDecoder, obs: FaceObservation, y: Tensor, options: FitOptions | None = None,
                       rounds=None, init_light: bool = True) -> Tensor:
    """Photometric refinement of identity, expression, albedo, pose and SH light, image by image: the
    fitter's stage 3 (Levenberg-Marquardt with closed-form Jacobians, coarse to fine).

    Args:
        dec: the decoder; obs: a :class:`FaceObservation` with its ``image`` (B, H, W, 3) in [0, 1]
            and landmarks in the same working-image pixels.
        y: (B, D) start codes (e.g. a landmark fit or an encoder's answer), the working image's camera.
        options: :class:`FitOptions` (weights, ``photo_eps``, ``photo_erode``, ``photo_damping``,
            ``photo_subdivide``...); default ``FitOptions()``.
        rounds: ``[(render size px, iterations, landmark weight), ...]``; default
            ``options.photo_rounds()``.
        init_light: first set SH light and albedo in closed form (:func:`init_light_albedo`).
    Returns:
        (B, D) refined codes (detached).
    """
    opts = options or FitOptions()
    if init_light:
        y = init_light_albedo(dec, obs, y)
    parts = ("identity", "expression", "albedo", "rotation", "translation", "sh")
    pk = ParameterPacker(y, dec.sizes, parameter_scales(dec, parts, opts.fit_identity_modes))
    p = pk.pack(y)
    for size, iters, w_lm in (opts.photo_rounds() if rounds is None else rounds):
        if int(iters) <= 0:
            continue
        dec_r = subdivided_decoder(dec, int(opts.photo_subdivide) if size >= opts.photo_subdivide_min_size else 0,
                            opts.photo_subdivide_scheme)
        e_rest = face_energy(dec_r, landmarks=float(w_lm), photometric=0, identity=opts.w_identity_lm,
                             expression=opts.w_expression_lm, albedo=opts.w_albedo, sigma=opts.sigma,
                             delta=opts.delta)
        prob = PhotometricLM(dec_r, obs, pk, e_rest, opts.w_photometric, eps=opts.photo_eps, size=int(size),
                        erode=opts.photo_erode, exclude_faces=excluded_faces(dec_r, opts), shading=opts.photo_shading)
        prob.set_support(p)
        p = levenberg_marquardt(prob.residual, p, jacobian=prob.jacobian, max_iter=int(iters),
                                damping=opts.photo_damping, tol=1e-6).x
    return pk.unpack(p).detach()


def photometric_stage(dec: FaceDecoder, obs: FaceObservation, y: Tensor, opts: FitOptions, joint: bool, energy) -> Tensor:
    """Stage 3: photometric refinement of identity, expression, albedo, pose and SH light from the
    code vectors ``y`` (B, D) of stage 2; ``joint``: one identity and albedo for the B frames
    (Adam on ``energy``), else Levenberg-Marquardt (:class:`PhotometricLM`) per image."""
    if opts.photo_solver == "lm" and not joint:
        return photometric_refine(dec, obs, y, opts)
    return photometric_refine_adam(dec, obs, y, opts, energy=energy, joint=joint)


def photometric_refine_adam(dec: FaceDecoder, obs: FaceObservation, y: Tensor, options: FitOptions | None = None,
                            iterations: int | None = None, *, energy=None, joint: bool = False,
                            init_light: bool = True) -> Tensor:
    """The Adam variant of the photometric stage (``FitOptions.photo_solver="adam"`` and the joint
    multi-frame fit): the core's Adam on the whitened identity, expression, albedo, pose and SH light.

    Adam takes steps of about ``options.photo_lr`` in every whitened coordinate; pose, light and
    shape get smaller ones (rotation 0.1, translation 0.05, SH 0.3, identity / expression
    ``photo_shape_lr``). Adam is not monotone, so the best iterate is kept: per image, or by the
    batch total when ``joint`` (one identity and albedo shared by the B frames).

    Args:
        dec: the decoder; obs: a :class:`FaceObservation` with its ``image`` (B, H, W, 3) in [0, 1].
        y: (B, D) start codes in the working image's camera.
        options: :class:`FitOptions` (default ``FitOptions()``); iterations: Adam iterations
            (default ``options.adam_iterations``).
        energy: the :class:`~facerig.energy.WeightedSum` to minimise, per-sample values (B,);
            default the fitter's photometric-stage energy for ``options``.
        joint: share identity and albedo over the batch; init_light: first set SH light and albedo
            in closed form (:func:`init_light_albedo`).
    Returns:
        (B, D) refined codes (detached).
    """
    opts = options or FitOptions()
    iterations = opts.adam_iterations if iterations is None else int(iterations)
    B = y.shape[0]
    if energy is None:
        energy = face_energy(dec, landmarks=opts.w_landmarks_photo, photometric=opts.w_photometric,
                             identity=opts.w_identity_photo / (B if joint else 1), expression=opts.w_expression_photo,
                             albedo=opts.w_albedo / (B if joint else 1), sigma=opts.sigma, delta=opts.delta,
                             photo_clamp=opts.photo_clamp)
    if init_light:
        y = init_light_albedo(dec, obs, y, shared_albedo=joint)
    if iterations <= 0:
        return y.detach()
    dt, dev = y.dtype, y.device
    parts = ("identity", "expression", "albedo", "rotation", "translation", "sh")
    pk = ParameterPacker(y, dec.sizes, parameter_scales(dec, parts, opts.fit_identity_modes),
                 shared=("identity", "albedo"), joint=joint)
    lr_scale = torch.ones(pk.P, dtype=dt, device=dev)
    for part, (sl, _k) in pk.layout.items():
        lr_scale[sl] = {"rotation": 0.1, "translation": 0.05, "sh": 0.3, "identity": opts.photo_shape_lr,
                        "expression": opts.photo_shape_lr}.get(part, 1.0)
    p0 = pk.pack(y)

    def f(q):  # per image (B,), or the batch total when the frames share one packed vector
        e = energy(obs, pk.unpack(p0 + (q - p0) * lr_scale))
        return e.sum() if joint else e

    best = {"e": f(p0).detach().reshape(-1), "q": p0.clone()}

    def keep_best(k, q, e):  # Adam is not monotone; a diverging run falls back to the best iterate
        e = e.detach().reshape(-1)
        better = e < best["e"]
        best["q"] = torch.where(better[:, None], q.detach(), best["q"])
        best["e"] = torch.where(better, e, best["e"])

    minimize_adam(f, p0, lr=opts.photo_lr, max_iter=iterations, tol=0.0, callback=keep_best)
    return pk.unpack(p0 + (best["q"] - p0) * lr_scale).detach()
