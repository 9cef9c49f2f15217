"""Energy terms: data fidelity and priors, as functions and as small modules.

Functional forms take tensors and return one value per sample, shape ``(B,)`` (sums over all
non-batch axes). Module forms share one call signature, ``term(x, y) -> (B,)``, the notation of
the whole library: ``x`` is the observation, ``y`` the unknown (the code), and an energy is
``E(x, y) = Loss(x, g(y)) + Prior(y)``. Data terms compare ``g(y)`` (``operator``, identity by
default) with ``x``; priors ignore ``x``. :class:`WeightedSum` adds terms with weights and
reports each one for logging; it is itself a term, so it plugs into the solvers
(``f = lambda y: E(x, y)``) and into :func:`facerig.energy.training.train` (``Problem.energy``).

Per-element ``weight`` and ``mask`` arguments broadcast to the residual's shape; ``mask`` is a
bool tensor whose ``False`` entries are ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from facerig.energy._checks import check_broadcast, check_nonneg, check_option
from facerig.energy.ops import finite_diff, pointwise_norm

__all__ = [
    "squared_l2",
    "huber",
    "charbonnier",
    "tikhonov",
    "l1",
    "total_variation",
    "gram_matrix",
    "gram_loss",
    "Term",
    "L2Data",
    "HuberData",
    "CharbonnierData",
    "Tikhonov",
    "L1",
    "TotalVariation",
    "GramTerm",
    "WeightedSum",
]


def _per_sample_sum(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).sum(dim=1) if t.dim() > 1 else t


def _weigh(t: Tensor, weight, mask, shape_of: str = "residual") -> Tensor:
    if weight is not None:
        if isinstance(weight, Tensor):
            check_broadcast(weight, t.shape, "weight", shape_of)
            if bool((weight < 0).any()):
                raise ValueError("weight: per-element weights must be non-negative")
        else:
            check_nonneg(weight, "weight")
        t = t * weight
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError("mask: expected a bool tensor")
        check_broadcast(mask, t.shape, "mask", shape_of)
        t = torch.where(mask, t, torch.zeros((), dtype=t.dtype, device=t.device))
    return t


def _residual(pred: Tensor, target: Tensor) -> Tensor:
    if pred.shape != target.shape:
        try:
            shape = torch.broadcast_shapes(pred.shape, target.shape)
        except RuntimeError:
            shape = None
        if shape != pred.shape:
            raise ValueError(f"target: shape {tuple(target.shape)} does not match pred {tuple(pred.shape)}")
    return pred - target


def squared_l2(pred: Tensor, target: Tensor | float = 0.0, weight=None, mask=None) -> Tensor:
    """``sum w * (pred - target)^2`` over each sample.

    Args:
        pred: ``(B, ...)``.
        target: broadcastable to ``pred``.
        weight: optional per-element weights >= 0, broadcastable to ``pred``.
        mask: optional bool tensor broadcastable to ``pred``; ``False`` entries are ignored.

    Returns:
        ``(B,)``.
    """
    r = _residual(pred, target) if isinstance(target, Tensor) else pred - target
    return _per_sample_sum(_weigh(r.square(), weight, mask))


def huber(pred: Tensor, target: Tensor | float = 0.0, delta: float = 1.0, weight=None, mask=None) -> Tensor:
    """Huber loss ``sum w * h(pred - target)``, ``h(r) = r^2/2`` for ``|r| <= delta`` else
    ``delta (|r| - delta/2)``: quadratic near zero, linear (robust to outliers) beyond.

    Args and shapes as :func:`squared_l2`; ``delta > 0``. Returns ``(B,)``.
    """
    check_nonneg(delta, "delta", strict=True)
    r = _residual(pred, target) if isinstance(target, Tensor) else pred - target
    a = r.abs()
    h = torch.where(a <= delta, 0.5 * r.square(), delta * (a - 0.5 * delta))
    return _per_sample_sum(_weigh(h, weight, mask))


def charbonnier(pred: Tensor, target: Tensor | float = 0.0, eps: float = 1e-3, weight=None, mask=None) -> Tensor:
    """Charbonnier loss ``sum w * (sqrt(r^2 + eps^2) - eps)``, a smooth L1 (robust) data term.

    Args and shapes as :func:`squared_l2`; ``eps > 0``. Returns ``(B,)``.
    """
    check_nonneg(eps, "eps", strict=True)
    r = _residual(pred, target) if isinstance(target, Tensor) else pred - target
    return _per_sample_sum(_weigh((r.square() + eps * eps).sqrt() - eps, weight, mask))


def tikhonov(y: Tensor, scale: Tensor | float | None = None, mean: Tensor | float | None = None) -> Tensor:
    """Tikhonov / Gaussian prior ``sum ((y - mean) / scale)^2``.

    With ``scale`` the per-coordinate standard deviations of a Gaussian model (e.g. a face
    model's), this is ``-2 log p(y)`` up to a constant.

    Args:
        y: ``(B, P)`` or any ``(B, ...)``.
        scale: ``None`` (1), a number or a tensor broadcastable to ``y``, all > 0.
        mean: ``None`` (0), a number or a tensor broadcastable to ``y``.

    Returns:
        ``(B,)``.
    """
    if mean is not None:
        if isinstance(mean, Tensor):
            check_broadcast(mean, y.shape, "mean", "y")
        y = y - mean
    if scale is not None:
        if isinstance(scale, Tensor):
            check_broadcast(scale, y.shape, "scale", "y")
        check_nonneg(scale, "scale", strict=True)
        y = y / scale
    return _per_sample_sum(y.square())


def l1(y: Tensor, weight=None) -> Tensor:
    """``sum w * |y|`` per sample (sparsity prior). ``weight`` >= 0 broadcastable to ``y``. Returns ``(B,)``."""
    return _per_sample_sum(_weigh(y.abs(), weight, None, "y"))


def total_variation(
    y: Tensor, ndim: int = 2, isotropic: bool = True, channels: str = "separate", eps: float = 0.0
) -> Tensor:
    """Total variation per sample with forward differences and a Neumann boundary.

    ``TV(y) = sum over samples of |grad y|`` where the norm is Euclidean over directions
    (``isotropic``) or the absolute value per direction (anisotropic); channels are summed
    (``"separate"``) or included in the Euclidean norm (``"coupled"``, vectorial TV). With
    ``eps > 0`` every norm is smoothed to ``sqrt(|.|^2 + eps^2)`` (differentiable everywhere,
    for gradient-based solvers; the value includes the constant ``eps`` per sample).

    Args:
        y: ``(B, N, C)`` (``ndim=1``) or ``(B, H, W, C)`` (``ndim=2``).
        ndim: 1 or 2 spatial axes.
        isotropic, channels, eps: see above.

    Returns:
        ``(B,)``.
    """
    check_option(channels, "channels", ("separate", "coupled"))
    check_nonneg(eps, "eps")
    g = finite_diff(y, ndim)
    return pointwise_norm(g, isotropic, channels, eps).sum(dim=(0, *range(2, g.dim())))


def gram_matrix(features: Tensor) -> Tensor:
    """Gram matrix of channels-last features, normalised by the number of positions.

    Args:
        features: ``(B, ..., C)`` (e.g. ``(B, H, W, C)`` CNN activations).

    Returns:
        ``(B, C, C)`` with ``G[b] = F_b^T F_b / N`` for ``F_b`` the ``(N, C)`` matrix of positions.
    """
    if features.dim() < 2:
        raise ValueError(f"features: expected (B, ..., C), got shape {tuple(features.shape)}")
    f = features.reshape(features.shape[0], -1, features.shape[-1])
    return f.transpose(1, 2) @ f / f.shape[1]


def gram_loss(features: Tensor, target_gram: Tensor) -> Tensor:
    """Style loss ``||gram_matrix(features) - target_gram||_F^2`` per sample.

    Args:
        features: ``(B, ..., C)``.
        target_gram: ``(B, C, C)`` or ``(C, C)`` / ``(1, C, C)`` (shared by the batch).

    Returns:
        ``(B,)``.
    """
    g = gram_matrix(features)
    check_broadcast(target_gram, g.shape, "target_gram", "the Gram matrix")
    return (g - target_gram).square().sum(dim=(1, 2))


class Term(nn.Module):
    """Base class of energy terms: ``term(x, y) -> (B,)``; ``x`` the observation, ``y`` the unknown."""

    def forward(self, x: Tensor | None, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must implement forward(x, y)")


class _DataTerm(Term):
    def __init__(self, operator: Callable[[Tensor], Tensor] | None = None, weight=None, mask=None):
        super().__init__()
        self.operator = operator
        self.weight = weight
        self.mask = mask

    def _pred(self, y: Tensor) -> Tensor:
        return y if self.operator is None else self.operator(y)


class L2Data(_DataTerm):
    """``||sqrt(w) * mask * (g(y) - x)||^2``: squared-L2 data fidelity (Gaussian noise).

    Args:
        operator: the forward model ``g`` (``y -> prediction`` of ``x``'s shape); identity if None.
        weight, mask: per-element weights / bool mask broadcastable to ``x``.
    """

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return squared_l2(self._pred(y), x, self.weight, self.mask)


class HuberData(_DataTerm):
    """Huber data fidelity ``sum w * h_delta(g(y) - x)`` (see :func:`huber`)."""

    def __init__(self, delta: float = 1.0, operator=None, weight=None, mask=None):
        super().__init__(operator, weight, mask)
        check_nonneg(delta, "delta", strict=True)
        self.delta = delta

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return huber(self._pred(y), x, self.delta, self.weight, self.mask)


class CharbonnierData(_DataTerm):
    """Charbonnier data fidelity ``sum w * (sqrt((g(y) - x)^2 + eps^2) - eps)`` (see :func:`charbonnier`)."""

    def __init__(self, eps: float = 1e-3, operator=None, weight=None, mask=None):
        super().__init__(operator, weight, mask)
        check_nonneg(eps, "eps", strict=True)
        self.eps = eps

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return charbonnier(self._pred(y), x, self.eps, self.weight, self.mask)


class Tikhonov(Term):
    """Prior ``sum ((y - mean) / scale)^2`` (see :func:`tikhonov`); ``x`` is ignored."""

    def __init__(self, scale=None, mean=None):
        super().__init__()
        if scale is not None:
            check_nonneg(scale, "scale", strict=True)
        self.scale, self.mean = scale, mean

    def forward(self, x: Tensor | None, y: Tensor) -> Tensor:
        return tikhonov(y, self.scale, self.mean)


class L1(Term):
    """Prior ``sum w * |y|`` (see :func:`l1`); ``x`` is ignored."""

    def __init__(self, weight=None):
        super().__init__()
        self.weight = weight

    def forward(self, x: Tensor | None, y: Tensor) -> Tensor:
        return l1(y, self.weight)


class TotalVariation(Term):
    """Prior ``TV(y)`` (see :func:`total_variation`); ``x`` is ignored."""

    def __init__(self, ndim: int = 2, isotropic: bool = True, channels: str = "separate", eps: float = 0.0):
        super().__init__()
        check_option(channels, "channels", ("separate", "coupled"))
        check_option(ndim, "ndim", (1, 2))
        check_nonneg(eps, "eps")
        self.ndim, self.isotropic, self.channels, self.eps = ndim, isotropic, channels, eps

    def forward(self, x: Tensor | None, y: Tensor) -> Tensor:
        return total_variation(y, self.ndim, self.isotropic, self.channels, self.eps)


class GramTerm(Term):
    """Style term ``||gram(features(y)) - target_gram||_F^2`` (see :func:`gram_loss`).

    Args:
        target_gram: ``(C, C)`` or ``(B, C, C)`` target Gram matrix.
        features: ``y -> (B, ..., C)`` feature extractor (identity if None); ``x`` is ignored.
    """

    def __init__(self, target_gram: Tensor, features: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        self.target_gram = target_gram
        self.features = features

    def forward(self, x: Tensor | None, y: Tensor) -> Tensor:
        f = y if self.features is None else self.features(y)
        return gram_loss(f, self.target_gram)


class WeightedSum(Term):
    """``E(x, y) = sum_k weight_k * term_k(x, y)``, reporting every term.

    Example::

        E = WeightedSum(data=(0.5, L2Data(mask=known)), tv=(0.1, TotalVariation()))
        total = E(x, y)                  # (B,)
        parts = E.breakdown(x, y)        # {"data": (B,), "tv": (B,), "total": (B,)}, weighted

    Args:
        **terms: ``name=(weight, term)`` with ``weight >= 0`` and ``term(x, y) -> (B,)``
            (a :class:`Term` or any callable).
    """

    def __init__(self, **terms: tuple[float, Callable[[Tensor, Tensor], Tensor]]):
        super().__init__()
        if not terms:
            raise ValueError("terms: give at least one name=(weight, term)")
        self.weights: dict[str, float] = {}
        self.terms: dict[str, Callable] = {}
        for name, spec in terms.items():
            if not (isinstance(spec, tuple) and len(spec) == 2 and callable(spec[1])):
                raise ValueError(f"{name}: expected a (weight, term) pair")
            check_nonneg(spec[0], f"{name} weight")
            self.weights[name] = float(spec[0])
            self.terms[name] = spec[1]
            if isinstance(spec[1], nn.Module):
                self.add_module(name, spec[1])

    def breakdown(self, x: Tensor | None, y: Tensor) -> dict[str, Tensor]:
        """Weighted value of every term and their ``"total"``, each ``(B,)``."""
        parts = {name: self.weights[name] * term(x, y) for name, term in self.terms.items()}
        parts["total"] = sum(parts.values())
        return parts

    def forward(self, x: Tensor | None, y: Tensor) -> Tensor:
        return sum(self.weights[name] * term(x, y) for name, term in self.terms.items())
