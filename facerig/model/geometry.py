"""Small geometry helpers used by the loaders, the model builder and the encoder (closest points on
triangle meshes, barycentric coordinates, rigid / similarity alignment: :func:`umeyama` in NumPy,
:func:`similarity_aligned` batched in torch)."""

from __future__ import annotations

import numpy as np

__all__ = ["closest_point_on_triangles", "SurfaceQuery", "barycentric_coordinates", "umeyama", "similarity_aligned",
           "aligned_error_mm"]


def closest_point_on_triangles(p, a, b, c):
    """Closest points (N, 3) on triangles (a, b, c) (each (N, 3)) to points p (N, 3) (Ericson)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    denom = va + vb + vc
    denom = np.where(np.abs(denom) < 1e-300, 1e-300, denom)
    v = vb / denom
    w = vc / denom
    res = a + ab * v[..., None] + ac * w[..., None]  # interior
    eps = 1e-300
    # edge regions
    vv = d1 / np.where(np.abs(d1 - d3) < eps, eps, d1 - d3)
    m = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    res = np.where(m[..., None], a + ab * vv[..., None], res)
    ww = d2 / np.where(np.abs(d2 - d6) < eps, eps, d2 - d6)
    m = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    res = np.where(m[..., None], a + ac * ww[..., None], res)
    t = (d4 - d3) / np.where(np.abs((d4 - d3) + (d5 - d6)) < eps, eps, (d4 - d3) + (d5 - d6))
    m = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
    res = np.where(m[..., None], b + (c - b) * t[..., None], res)
    # vertex regions
    res = np.where(((d1 <= 0) & (d2 <= 0))[..., None], a, res)
    res = np.where(((d3 >= 0) & (d4 <= d3))[..., None], b, res)
    res = np.where(((d6 >= 0) & (d5 <= d6))[..., None], c, res)
    return res


class SurfaceQuery:
    """Closest points on a triangle mesh (V, 3) / (F, 3).

    Candidates are the ``k`` triangles with the nearest centroids (a KD-tree), then exact
    point-triangle distances; exact whenever the true closest triangle is among them, which holds
    for meshes with even triangle sizes (all face models). Calling it on points (N, 3) returns
    (closest points (N, 3), distances (N,), triangle ids (N,)), in the mesh's units.
    """

    def __init__(self, verts, faces, k=48):
        from scipy.spatial import cKDTree
        self.v, self.f = np.asarray(verts, float), np.asarray(faces)
        self.tree = cKDTree(self.v[self.f].mean(1))
        self.k = min(k, len(self.f))

    def __call__(self, points):
        points = np.asarray(points, float)
        _, cand = self.tree.query(points, self.k)
        tri = self.v[self.f[cand]]  # (N, k, 3, 3)
        q = closest_point_on_triangles(points[:, None], tri[..., 0, :], tri[..., 1, :], tri[..., 2, :])
        d = np.linalg.norm(q - points[:, None], axis=-1)
        j = d.argmin(1)
        n = np.arange(len(points))
        return q[n, j], d[n, j], cand[n, j]


def barycentric_coordinates(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (N, 3) of points (N, 3) projected onto triangles (N, 3, 3),
    clipped to the triangle and renormalised to sum to one."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, points - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = d00 * d11 - d01 * d01
    den = np.where(np.abs(den) < 1e-30, 1e-30, den)
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    bary = np.clip(np.stack([1 - v - w, v, w], 1), 0, None)
    return bary / np.clip(bary.sum(1, keepdims=True), 1e-30, None)


def umeyama(src: np.ndarray, dst: np.ndarray, scale: bool = True):
    """Similarity ``(s, R, t)`` minimising ``sum ||s R src_i + t - dst_i||^2`` (Umeyama 1991);
    src, dst: (N, 3). ``scale=False`` fixes s = 1 (rigid)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / (a ** 2).sum(1).mean()) if scale else 1.0
    return s, R, md - s * R @ ms


def aligned_error_mm(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-point distances (N,) in mm between ``pred`` (N, 3) and ``gt`` (N, 3), both cm, after the
    similarity (rotation, translation, scale; :func:`umeyama`) that best aligns ``pred`` onto ``gt``."""
    s, R, t = umeyama(pred, gt, scale=True)
    return np.linalg.norm(pred @ (s * R).T + t - gt, axis=1) * 10.0


def similarity_aligned(src, dst):
    """``src`` (B, N, 3) torch tensor mapped by the similarity ``s R x + t`` that best aligns it onto
    ``dst`` (B, N, 3) in the least-squares sense: :func:`umeyama` batched, in torch (reflections
    excluded; the SVD in float64). The similarity is computed without gradient, so the gradient
    of ``||aligned(src) - dst||^2`` w.r.t. ``src`` is exact (the alignment minimises that error:
    envelope theorem). Returns (B, N, 3) in ``src``'s dtype and device."""
    import torch

    with torch.no_grad():
        a = src - src.mean(1, keepdim=True)
        b = dst - dst.mean(1, keepdim=True)
        C = b.transpose(1, 2) @ a / src.shape[1]  # (B, 3, 3)
        U, S, Vh = torch.linalg.svd(C.double())
        d = torch.sign(torch.linalg.det(U @ Vh))
        D = torch.ones_like(S)
        D[:, 2] = d
        R = (U * D[:, None]) @ Vh
        s = (S * D).sum(1) / a.double().square().sum(-1).mean(1).clamp(min=1e-30)
        sR = (s[:, None, None] * R).to(src.dtype)
        t = dst.mean(1) - (src.mean(1, keepdim=True) @ sR.transpose(1, 2))[:, 0]
    return src @ sR.transpose(1, 2) + t[:, None]
