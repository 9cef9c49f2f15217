"""Row gather / scatter-add with fast backward passes (internal).

``Tensor.index_add_`` along dim 0 of a (N, C) tensor with small C is several times slower on the
CPU than a 1-D ``index_add_`` on the flattened tensor; these helpers use the flat form in both
directions.
"""

from __future__ import annotations

import torch


def _flat_index(idx: torch.Tensor, C: int) -> torch.Tensor:
    return (idx[:, None] * C + torch.arange(C, device=idx.device)).reshape(-1)


def scatter_add_rows_(out: torch.Tensor, idx: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """In-place ``out[idx[m]] += src[m]`` for out (N, C), src (M, C) (no autograd)."""
    C = out.shape[1]
    if C == 1:
        return out.view(-1).index_add_(0, idx, src.reshape(-1)).view(out.shape)
    out.view(-1).index_add_(0, _flat_index(idx, C), src.reshape(-1))
    return out


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, idx):
        ctx.save_for_backward(idx)
        ctx.n = x.shape[0]
        return x.index_select(0, idx)

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        out = torch.zeros(ctx.n, g.shape[1], dtype=g.dtype, device=g.device)
        return scatter_add_rows_(out, idx, g.contiguous()), None


class _ScatterRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src, idx, n):
        ctx.save_for_backward(idx)
        out = torch.zeros(n, src.shape[1], dtype=src.dtype, device=src.device)
        return scatter_add_rows_(out, idx, src.contiguous())

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        return g.index_select(0, idx), None, None


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` for x (N, C) and idx (M,) int64, differentiable w.r.t. x."""
    return _GatherRows.apply(x, idx)


def scatter_add_rows(src: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """(n, C) zeros with ``out[idx[m]] += src[m]``, differentiable w.r.t. src."""
    return _ScatterRows.apply(src, idx, n)


def batched_face_index(faces: torch.Tensor, B: int, V: int) -> torch.Tensor:
    """(B*F*3,) row indices of the face corners into a flattened (B*V, C) vertex tensor."""
    f = faces.reshape(-1)
    if B == 1:
        return f
    return (f[None, :] + (torch.arange(B, device=faces.device) * V)[:, None]).reshape(-1)


def vertex_major_face_index(faces: torch.Tensor, B: int, V: int) -> torch.Tensor:
    """(3*B*F,) column indices into a (C, B*V) vertex table, corner-major: entry ``k*B*F + b*F + f``
    is corner k of face f of mesh b."""
    ft = faces.t()
    if B == 1:
        return ft.reshape(-1)
    return (ft[:, None, :] + (torch.arange(B, device=faces.device) * V)[None, :, None]).reshape(-1)


def gather_face_corners(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(C, 3, B*F) corner values of every face from verts (B, V, C), differentiable.

    Element ``[c, k, b*F + f]`` is coordinate c of corner k of face f of mesh b: the gather runs
    on a transposed (C, B*V) copy so that each coordinate row is contiguous (much faster than a
    row gather followed by a permute, in both directions).
    """
    B, V, C = verts.shape
    vt = verts.reshape(B * V, C).t().contiguous()
    return vt.index_select(1, vertex_major_face_index(faces, B, V)).view(C, 3, B * faces.shape[0])
