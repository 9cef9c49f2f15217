"""Second-order feature statistics for style energies: masked Gram matrices and the multi-layer style loss.

Extends :func:`facerig.energy.terms.gram_matrix` / :func:`~facerig.energy.terms.gram_loss` (one
layer, all positions) with per-position weights (a mask: the statistics of a region only) and the
normalised multi-layer sum of Gatys et al. (2016)::

    style_loss(F, T) = sum_l w_l ||G(F_l) - T_l||_F^2 / ||T_l||_F^2

Dividing each layer by the target's squared norm makes the value scale-free (0 at a perfect match,
1 for features that are all zero), the same normalisation as
:func:`facerig.energy.terms.feature_loss` (the content term). Features are channels-last
``(B, h, w, C)``, as :class:`facerig.features.VGG16Features` returns them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from facerig.energy._checks import check_broadcast
from facerig.energy.terms import Term, gram_matrix

__all__ = ["masked_gram_matrix", "resize_mask", "style_loss", "StyleLoss"]


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-resample a ``(B, H, W)`` weight mask in [0, 1] to ``(B, h, w)`` (the grid of a feature layer).

    Args:
        mask: ``(B, H, W)`` float or bool.
        size: ``(h, w)``.

    Returns:
        ``(B, h, w)`` float of the mask's float dtype (float32 for a bool mask).
    """
    if mask.dim() != 3:
        raise ValueError(f"mask: expected (B, H, W), got shape {tuple(mask.shape)}")
    m = mask.float() if mask.dtype == torch.bool else mask
    if tuple(m.shape[1:]) == tuple(size):
        return m
    return F.adaptive_avg_pool2d(m[:, None], size)[:, 0]


def masked_gram_matrix(features: Tensor, mask: Tensor | None = None) -> Tensor:
    """Gram matrix of channels-last features weighted per position.

    ``G[b] = sum_u m_bu f_bu f_bu^T / sum_u m_bu``: with ``mask`` None (or all ones) this is
    :func:`facerig.energy.terms.gram_matrix`.

    Args:
        features: ``(B, h, w, C)``.
        mask: ``(B, H, W)`` weights >= 0 (float or bool), resampled to ``(h, w)`` by area
            (:func:`resize_mask`); a sample whose mask is all zero gets a zero matrix.

    Returns:
        ``(B, C, C)``.
    """
    if mask is None:
        return gram_matrix(features)
    if features.dim() != 4:
        raise ValueError(f"features: expected (B, h, w, C) with a mask, got shape {tuple(features.shape)}")
    if mask.shape[0] not in (1, features.shape[0]):
        raise ValueError(f"mask: batch {mask.shape[0]} does not match the features' {features.shape[0]}")
    m = resize_mask(mask, tuple(features.shape[1:3])).to(features)
    if bool((m < 0).any()):
        raise ValueError("mask: weights must be >= 0")
    m = m.expand(features.shape[0], -1, -1).reshape(features.shape[0], -1, 1)
    f = features.reshape(features.shape[0], -1, features.shape[-1])
    total = m.sum(dim=1, keepdim=True).clamp(min=torch.finfo(f.dtype).tiny)
    return (f * m).transpose(1, 2) @ f / total


def style_loss(features: dict[str, Tensor], target_grams: dict[str, Tensor], weights: dict | None = None,
               normalize: bool = True, mask: Tensor | None = None) -> Tensor:
    """Multi-layer Gram (style) loss ``sum_l w_l ||G(F_l) - T_l||^2 / ||T_l||^2`` per sample.

    Args:
        features: ``{layer: (B, h, w, C)}``.
        target_grams: ``{layer: (C, C) or (B, C, C)}`` (the same layers).
        weights: ``{layer: w_l >= 0}`` (a missing layer counts 1), or a ``(B, L)`` tensor giving
            per-sample weights in the order of ``features``' keys (run-time per-layer weights).
        normalize: divide each layer by ``||T_l||_F^2`` (per target matrix); else plain squared Frobenius.
        mask: optional ``(B, H, W)`` position weights (:func:`masked_gram_matrix`).

    Returns:
        ``(B,)``.
    """
    if set(features) != set(target_grams):
        raise ValueError(f"target_grams: layers {sorted(target_grams)} do not match the features' {sorted(features)}")
    total = 0.0
    for i, (name, f) in enumerate(features.items()):
        g = masked_gram_matrix(f, mask)
        t = target_grams[name].to(g)
        check_broadcast(t, g.shape, "target_grams", f"the Gram matrix of {name}")
        e = (g - t).square().sum(dim=(-2, -1))
        if normalize:
            e = e / t.square().sum(dim=(-2, -1)).clamp(min=torch.finfo(e.dtype).tiny)
        if isinstance(weights, Tensor):
            w = weights[:, i].to(e)
        else:
            w = 1.0 if weights is None else weights.get(name, 1.0)
        total = total + w * e
    return total


class StyleLoss(Term):
    """Style term ``term(x, y) = style_loss(features(y), x)``: ``x`` the target Gram matrices
    ``{layer: (C, C) or (B, C, C)}``, ``y`` the image; see :func:`style_loss`.

    Args:
        features: differentiable ``y -> {layer: (B, h, w, C)}`` (e.g. :class:`facerig.features.VGG16Features`).
        weights, normalize, mask: see :func:`style_loss`.
    """

    def __init__(self, features: Callable[[Tensor], dict], weights: dict | None = None, normalize: bool = True,
                 mask: Tensor | None = None):
        super().__init__()
        if not callable(features):
            raise TypeError(f"features: expected a callable y -> {{layer: features}}, got {type(features).__name__}")
        self.features, self.weights, self.normalize, self.mask = features, weights, normalize, mask

    def forward(self, x: dict[str, Tensor], y: Tensor) -> Tensor:
        return style_loss(self.features(y), x, self.weights, self.normalize, self.mask)
