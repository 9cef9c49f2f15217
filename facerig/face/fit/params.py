"""The fitter's free parameters: :class:`ParameterPacker` maps whitened parameter vectors ``p``
to graphic-code vectors ``y`` and back; :func:`parameter_scales` gives the whitening scales.

Shared by the stages of the fitter and by :class:`facerig.rig.FrameTracker`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from facerig.face.decoder import FaceDecoder
from facerig.model import GraphicCode

__all__ = ["CODE_PARTS", "ParameterPacker", "parameter_scales", "temporal_scales"]

CODE_PARTS = ("identity", "expression", "albedo", "rotation", "translation", "focal", "sh")
"""The graphic code's parts in code-vector order (:meth:`facerig.model.GraphicCode.slices`)."""


class ParameterPacker:
    """Free parameters p <-> code vectors y.

    ``y[part] = p[part] * scale[part]`` for free parts (whitened coordinates), the base code's
    values for fixed parts. Shared parts (multi-frame) have one copy in ``p`` (batch 1) expanded
    over the N frames; per-frame parts are stored frame after frame.

    Args:
        base: (N, D) code vectors giving the fixed parts' values.
        sizes: the code's part sizes (``FaceDecoder.sizes``).
        scales: ``{part: (K,) tensor}`` for the free parts (:func:`parameter_scales`).
        shared, joint: with ``joint``, the ``shared`` parts have one copy for all N frames.

    Attributes:
        layout: ``{part: (slice into p, K)}``; P: the number of free parameters.
    """

    def __init__(self, base: Tensor, sizes: dict, scales: dict, shared=(), joint: bool = False):
        self.base, self.sizes, self.scales = base.detach(), sizes, scales
        self.sl = GraphicCode.slices(sizes)
        self.free = [p for p in CODE_PARTS if p in scales]
        self.shared = set(shared) if joint else set()
        self.joint = joint
        self.N = base.shape[0]
        layout, start = {}, 0
        for part in self.free:
            k = self.sl[part].stop - self.sl[part].start
            n = k if (not joint or part in self.shared) else k * self.N
            layout[part] = (slice(start, start + n), k)
            start += n
        self.layout, self.P = layout, start

    def unpack(self, p: Tensor) -> Tensor:
        """(B or 1, P) parameters -> (N, D) code vectors."""
        pieces = []
        for part in CODE_PARTS:
            if part not in self.layout:
                pieces.append(self.base[:, self.sl[part]].to(p.dtype))
                continue
            sl, k = self.layout[part]
            v = p[:, sl]
            if self.joint:
                v = v.expand(self.N, k) if part in self.shared else v.reshape(self.N, k)
            pieces.append(v * self.scales[part].to(p))
        return torch.cat(pieces, 1)

    def pack(self, y: Tensor) -> Tensor:
        """(N, D) code vectors -> (B or 1, P) parameters (detached; shared parts averaged over frames)."""
        pieces = []
        for part in self.free:
            s = self.scales[part].to(y)
            v = torch.where(s > 0, y[:, self.sl[part]] / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))
            if self.joint:
                v = v.mean(0, keepdim=True) if part in self.shared else v.reshape(1, -1)
            pieces.append(v)
        return torch.cat(pieces, 1).detach()


def parameter_scales(dec: FaceDecoder, parts, n_identity: int | None = None) -> dict:
    """Whitening scales ``{part: (K,) tensor}`` of the code ``parts`` (names of :data:`CODE_PARTS`
    but "focal"): the model's standard deviations for identity / expression / albedo (identity modes
    from ``n_identity`` on get 0: frozen), 1 for rotation (radians) and SH, 10 cm for translation."""
    m = dec.model
    dt, dev = m.dtype, m.device
    out = {}
    for p in parts:
        if p == "identity":
            s = m.identity_std.clone()
            if n_identity is not None and n_identity < s.numel():
                s[n_identity:] = 0.0  # frozen modes: y = p * 0
            out[p] = s
        elif p == "expression":
            out[p] = m.expression_std.clone()
        elif p == "albedo":
            out[p] = m.albedo_std.clone()
        elif p == "rotation":
            out[p] = torch.ones(3, dtype=dt, device=dev)
        elif p == "translation":
            out[p] = torch.full((3,), 10.0, dtype=dt, device=dev)
        elif p == "sh":
            out[p] = torch.ones(27, dtype=dt, device=dev)
        else:
            raise ValueError(p)
    return out


def temporal_scales(dec: FaceDecoder) -> dict:
    """Per-part scales of the temporal smoothness term of multi-frame fits (expression: half the
    model's std; rotation 0.05 rad; translation 0.5 cm)."""
    m = dec.model
    return {"expression": m.expression_std.to(m.device) * 0.5, "rotation": 0.05, "translation": 0.5}
