"""Small mesh utilities: an icosphere generator and the edge topology used by antialiasing."""

from __future__ import annotations

import math

import torch

__all__ = ["icosphere", "face_adjacency"]


def icosphere(subdivisions: int = 3, radius: float = 1.0, dtype=torch.float32, device=None):
    """Unit icosphere with ``20 * 4**subdivisions`` triangles (outward counter-clockwise winding).

    Returns:
        verts (V, 3) and faces (F, 3) int64; subdivisions 3/4/5/6 give 1,280 / 5,120 / 20,480 /
        81,920 triangles.
    """
    if int(subdivisions) < 0:
        raise ValueError(f"subdivisions must be >= 0, got {subdivisions}")
    t = (1.0 + math.sqrt(5.0)) / 2.0
    v = torch.tensor(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]],
        dtype=torch.float64,
    )
    f = torch.tensor(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
         [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
         [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]],
        dtype=torch.int64,
    )
    v = v / v.norm(dim=1, keepdim=True)
    for _ in range(int(subdivisions)):
        e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 0)  # (3F, 2)
        e_sorted = e.sort(1).values
        uniq, inv = torch.unique(e_sorted, dim=0, return_inverse=True)
        mid = v[uniq].mean(1)
        mid = mid / mid.norm(dim=1, keepdim=True)
        m = inv.view(3, -1) + v.shape[0]  # midpoints of edges (01, 12, 20)
        v = torch.cat([v, mid], 0)
        a, b, c = f.unbind(1)
        m01, m12, m20 = m
        f = torch.cat(
            [torch.stack(x, 1) for x in ((a, m01, m20), (b, m12, m01), (c, m20, m12), (m01, m12, m20))], 0
        )
    return (v * radius).to(dtype=dtype, device=device), f.to(device)


def face_adjacency(faces: torch.Tensor, num_verts: int | None = None) -> torch.Tensor:
    """Neighbour face across each edge: (F, 3) int64, -1 on boundary / non-manifold edges.

    Edge k of face f is the edge opposite vertex k, i.e. ``(faces[f, k+1], faces[f, k+2])``.
    """
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    F = faces.shape[0]
    n = int(num_verts) if num_verts is not None else int(faces.max()) + 1 if F else 1
    a = faces[:, [1, 2, 0]]
    b = faces[:, [2, 0, 1]]
    key = (torch.minimum(a, b) * n + torch.maximum(a, b)).reshape(-1)  # (3F,) index f*3 + k
    order = torch.argsort(key)
    ks = key[order]
    _, counts = torch.unique_consecutive(ks, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    i = starts[counts == 2]  # manifold edges: exactly two faces share the key
    adj = torch.full((3 * F,), -1, dtype=torch.int64, device=faces.device)
    fa, fb = order[i], order[i + 1]
    adj[fa] = torch.div(fb, 3, rounding_mode="floor")
    adj[fb] = torch.div(fa, 3, rounding_mode="floor")
    return adj.view(F, 3)
