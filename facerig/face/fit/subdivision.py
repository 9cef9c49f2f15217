"""Finer render meshes for the photometric stage, with the same code: the model's detail level,
midpoint or butterfly subdivision (:func:`subdivided_decoder`), and the faces the photometric
term leaves out (:func:`excluded_faces`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from facerig.face.decoder import FaceDecoder
from facerig.face.fit.options import SUBDIVIDE_SCHEMES, FitOptions
from facerig.model import FaceModel

__all__ = ["subdivided_decoder", "excluded_faces", "butterfly_stencil", "butterfly_model"]


def subdivided_decoder(dec: FaceDecoder, levels: int, scheme: str = "midpoint") -> FaceDecoder:
    """A decoder on the model subdivided ``levels`` times, cached on ``dec``; same code layout and
    landmark vertex indices (the original vertices come first and keep their positions).

    ``scheme="midpoint"``: ``dec.model.subdivide(levels)`` (same piecewise-linear surface; per-vertex
    shading sampled 4x more densely per level). ``"butterfly"``: :func:`butterfly_model`, a smooth
    interpolating surface that is still a linear shape model (closed-form Jacobians unchanged).
    ``"detail"``: the model's own finer surface (:meth:`facerig.model.FaceModel.detailed`: the
    default model's follows the ICT-FaceKit surface it was sampled from), further levels by
    midpoint subdivision; a model without a detail level is not subdivided.
    """
    if levels <= 0 or (scheme == "detail" and not dec.model.has_detail):
        return dec
    if scheme not in SUBDIVIDE_SCHEMES:
        raise ValueError(f"scheme: expected one of {SUBDIVIDE_SCHEMES}, got {scheme!r}")
    cache = dec.__dict__.setdefault("_subdivided_cache", {})
    key = (levels, dec.model.dtype, str(dec.model.device)) + ((scheme,) if scheme != "midpoint" else ())
    if key not in cache:
        m = dec.model
        for level in range(levels):
            if scheme == "detail" and level == 0:
                m = m.detailed()
            else:
                m = butterfly_model(m) if scheme == "butterfly" else m.subdivide(1)
        cache[key] = FaceDecoder(m, landmark_kind=dec.landmark_kind)
    return cache[key]


def excluded_faces(dec: FaceDecoder, opts: FitOptions) -> Tensor | None:
    """(F,) bool: the render mesh's faces left out of the LM photometric term (``photo_exclude``
    face groups of the model, e.g. "mouth_opening"), or None."""
    groups = [dec.model.face_groups[g] for g in opts.photo_exclude if g in dec.model.face_groups]
    if not groups:
        return None
    out = torch.zeros(dec.model.n_faces, dtype=torch.bool, device=dec.model.faces.device)
    for g in groups:
        g = g.to(out.device)
        if g.dtype == torch.bool:
            out |= g
        else:
            out[g] = True
    return out


def butterfly_stencil(faces: Tensor, n_vertices: int):
    """The butterfly scheme's correction of the midpoints of :meth:`FaceModel.subdivide`'s new
    vertices (one per edge, its order): ``(idx (E, 6) int64, w (E, 6))`` such that the new vertex of
    edge (a, b) is ``(x_a + x_b) / 2 + sum_j w[e, j] x[idx[e, j]]``; weights 1/8 for the two opposite
    vertices c, d and -1/16 for the four wing vertices (Dyn, Levin & Gregory 1990, tension 1/16).
    Edges whose stencil is incomplete (mesh boundary and next to it) keep the midpoint (w = 0)."""
    F = faces.cpu().numpy()
    edges, _ = FaceModel.midpoint_topology(faces.cpu(), n_vertices)
    opp: dict = {}  # directed edge (a, b) of a face -> its third vertex
    for a, b, c in F.tolist():
        opp[(a, b)], opp[(b, c)], opp[(c, a)] = c, a, b

    def third(u, v):  # the vertex opposite edge (u, v) on the face across from the face containing (u, v)
        return opp.get((v, u))

    idx = np.zeros((edges.shape[0], 6), dtype=np.int64)
    w = np.zeros((edges.shape[0], 6))
    for e, (a, b) in enumerate(edges.tolist()):
        c, d = opp.get((a, b)), opp.get((b, a))
        if c is None or d is None:
            continue
        wings = [third(b, c), third(c, a), third(a, d), third(d, b)]
        if any(x is None for x in wings):
            continue
        idx[e] = [c, d] + wings
        w[e] = [0.125, 0.125, -0.0625, -0.0625, -0.0625, -0.0625]
    return torch.from_numpy(idx), torch.from_numpy(w)


def butterfly_model(m: FaceModel) -> FaceModel:
    """One level of butterfly subdivision of a face model: the topology, albedo, masks, UVs and
    landmark maps of ``m.subdivide(1)``; the geometry (mean and the identity / expression bases)
    of each new vertex gets the butterfly correction (:func:`butterfly_stencil`) as its
    :meth:`FaceModel.detailed` offsets, so the surface is smooth, passes through the original
    vertices and stays linear in the code."""
    if m.lbs is not None:
        raise ValueError("butterfly subdivision: skinned models (lbs) are not supported; use scheme='midpoint'")
    idx, w = butterfly_stencil(m.faces, m.n_vertices)
    idx, w = idx.to(m.device), w.to(m.device, m.dtype)

    def stencil(x):  # (K, V, 3) -> (K, E, 3): sum_j w[e, j] x[:, idx[e, j]]
        return (x[:, idx] * w[None, :, :, None]).sum(2)

    return m.detailed({"mean": stencil(m.mean[None])[0], "identity": stencil(m.identity_basis),
                       "expression": stencil(m.expression_basis)})
