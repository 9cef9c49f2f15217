"""Deformation transfer (Sumner & Popovic 2004) of blendshapes onto a new neutral of the same topology.

Each source blendshape deforms every triangle of the source neutral by an affine map ``Q_j``
(3x3, from the triangle's two edges and a fourth vertex along its normal). The target
blendshape is the mesh whose triangles undergo the same ``Q_j`` applied to the *target* neutral's
triangles, in the least-squares sense over the edge vectors::

    min_X  sum_j || E_j(X) - Q_j E_j(T0) ||^2  +  eps || X - T0 ||^2

(``E_j`` the two edge vectors of triangle j, ``T0`` the target neutral; the tiny ``eps`` anchor
makes the system definite, and the global translation the edges leave free is then set so that
the vertices the source shape leaves (almost) still -- under 10 % of its largest motion -- move
on average as they do in the source). The transfer assumes source and target neutrals in corresponding poses (the
fitted neutral is in the model frame, like the generic mean). The normal
equations share one sparse matrix for all blendshapes and coordinates: one factorisation, then
(K x 3) right-hand sides.
"""

from __future__ import annotations

import numpy as np

__all__ = ["deformation_transfer", "triangle_frames"]


def triangle_frames(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(..., F, 3, 3) per-triangle frames ``[v2 - v1, v3 - v1, n / sqrt|n|]`` as columns
    (Sumner & Popovic's fourth-vertex construction), for vertices (..., V, 3)."""
    tri = verts[..., faces, :]  # (..., F, 3, 3)
    e1 = tri[..., 1, :] - tri[..., 0, :]
    e2 = tri[..., 2, :] - tri[..., 0, :]
    n = np.cross(e1, e2)
    n = n / np.sqrt(np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12))
    return np.stack([e1, e2, n], -1)


def deformation_transfer(source_neutral, source_shapes, target_neutral, faces, anchor: float = 1e-6) -> np.ndarray:
    """Carry blendshapes from one neutral onto another with the same topology.

    Args:
        source_neutral: (V, 3) source rest shape (e.g. the generic model's mean), cm.
        source_shapes: (K, V, 3) source blendshape *deltas* (shape k = neutral + delta k), cm.
        target_neutral: (V, 3) target rest shape (e.g. the fitted person's neutral), cm.
        faces: (F, 3) int triangles shared by both.
        anchor: weight of the soft anchor to the target neutral (relative to the edge terms;
            keeps the system definite, otherwise negligible).

    Returns:
        (K, V, 3) float64 target deltas (target shape k = target_neutral + delta k), cm.
        A source equal to the target gives back the source deltas (up to the solver's accuracy).
    """
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    S0 = np.asarray(source_neutral, np.float64)
    D = np.asarray(source_shapes, np.float64)
    T0 = np.asarray(target_neutral, np.float64)
    f = np.asarray(faces, np.int64)
    V = S0.shape[0]
    if S0.shape != (V, 3) or T0.shape != (V, 3):
        raise ValueError(f"source_neutral / target_neutral: expected (V, 3) with one V, got {S0.shape}, {T0.shape}")
    if D.ndim != 3 or D.shape[1:] != (V, 3):
        raise ValueError(f"source_shapes: expected (K, {V}, 3) deltas, got {D.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or f.min() < 0 or f.max() >= V:
        raise ValueError(f"faces: expected (F, 3) indices into {V} vertices")
    K, F = D.shape[0], f.shape[0]
    if K == 0:
        return np.zeros((0, V, 3))
    Fs0 = triangle_frames(S0, f)                               # (F, 3, 3)
    Fsk = triangle_frames(S0[None] + D, f)                     # (K, F, 3, 3)
    Q = Fsk @ np.linalg.inv(Fs0)[None]                         # (K, F, 3, 3)
    Ft0 = triangle_frames(T0, f)                               # (F, 3, 3)
    target_edges = Q @ Ft0[None]                               # (K, F, 3, 3) columns e1, e2, n
    # edge operator G (2F x V): row 2j = v2 - v1, row 2j+1 = v3 - v1
    rows = np.repeat(np.arange(2 * F), 2)
    cols = np.stack([f[:, 1], f[:, 0], f[:, 2], f[:, 0]], 1).reshape(-1)
    vals = np.tile([1.0, -1.0], 2 * F)
    G = sp.csr_matrix((vals, (rows, cols)), shape=(2 * F, V))
    A = (G.T @ G + anchor * sp.identity(V)).tocsc()  # the anchor only fixes the translation
    solve = spla.factorized(A)
    # right-hand sides: G^T edges + anchor * (T0 + D_k), for every (k, coordinate)
    E = target_edges[..., :2].transpose(0, 1, 3, 2).reshape(K, 2 * F, 3)  # rows (e1, e2) per face
    rhs = np.einsum("vr,krc->kvc", G.T.toarray(), E) + anchor * T0[None]
    out = np.empty((K, V, 3))
    for k in range(K):
        for c in range(3):
            out[k, :, c] = solve(rhs[k, :, c])
    out -= T0[None]
    # translation: the vertices the source shape leaves (almost) still stay still
    mag = np.linalg.norm(D, axis=-1)  # (K, V)
    still = mag <= 0.1 * mag.max(1, keepdims=True)
    w = still / np.maximum(still.sum(1, keepdims=True), 1)
    out -= np.einsum("kv,kvc->kc", w, out - D)[:, None]
    return out
