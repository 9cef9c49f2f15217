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
    "alpha_norm",
    "tv_beta",
    "feature_loss",
    "Term",
    "L2Data",
    "HuberData",
    "CharbonnierData",
    "Tikhonov",
    "L1",
    "TotalVariation",
    "GramTerm",
    "AlphaNorm",
    "TVBeta",
    "FeatureLoss",
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


def alpha_norm(y: Tensor, alpha: float = 6.0, scale: float = 1.0, center: Tensor | float | None = None,
               normalize: bool = True) -> Tensor:
    """The alpha-norm prior of Mahendran & Vedaldi (2015): ``sum_u (||y_u - center|| / scale)^alpha``.

    ``y_u`` is the vector of the last axis at position ``u`` (an RGB pixel of a channels-last
    image; its Euclidean norm), so a large ``alpha`` (6 in the paper) keeps every pixel inside a ball
    of radius about ``scale`` around ``center`` while hardly acting inside it.

    Args:
        y: ``(B, ..., C)``.
        alpha: exponent > 0.
        scale: the norm ``B`` that is typical of the signal (> 0); Mahendran & Vedaldi: the mean
            pixel norm of natural images (80 in 0-255 units).
        center: subtracted first (a number or a tensor broadcastable to ``y``, e.g. the mean pixel).
        normalize: divide by the number of positions (``prod(y.shape[1:-1])``), the paper's
            ``1 / (H W B^alpha)``: the value of an image of typical norm is then about 1 whatever its size.

    Returns:
        ``(B,)``.
    """
    check_nonneg(alpha, "alpha", strict=True)
    check_nonneg(scale, "scale", strict=True)
    if y.dim() < 2:
        raise ValueError(f"y: expected (B, ..., C), got shape {tuple(y.shape)}")
    if center is not None:
        if isinstance(center, Tensor):
            check_broadcast(center, y.shape, "center", "y")
        y = y - center
    sq = (y / scale).square().sum(dim=-1)
    # (|v|^2)^(alpha/2), with a zero gradient (not NaN) at v = 0 for alpha <= 1
    v = torch.where(sq > 0, sq.clamp(min=torch.finfo(sq.dtype).tiny) ** (alpha / 2), torch.zeros_like(sq))
    v = _per_sample_sum(v)
    if normalize:
        v = v / max(1, y[0, ..., 0].numel())
    return v


def tv_beta(y: Tensor, beta: float = 2.0, scale: float = 1.0, normalize: bool = True) -> Tensor:
    """The TV^beta prior of Mahendran & Vedaldi (2015) of channels-last images.

    ``sum_{u, c} ((d_x y_{u,c})^2 + (d_y y_{u,c})^2)^(beta/2) / scale^beta`` with forward
    differences and a Neumann boundary (:func:`facerig.energy.ops.finite_diff`); channels are
    separate. ``beta = 1`` is isotropic total variation (:func:`total_variation`); ``beta = 2``
    (the paper's choice, no spikes) is the squared gradient norm; ``beta`` > 1 keeps it differentiable.

    Args:
        y: ``(B, H, W, C)``.
        beta: exponent > 0.
        scale: the typical size ``V`` of a difference (> 0); Mahendran & Vedaldi: ``V = B / 6.5``
            with ``B`` the mean pixel norm.
        normalize: divide by the number of positions ``H W`` (the paper's ``1 / (H W V^beta)``).

    Returns:
        ``(B,)``.
    """
    check_nonneg(beta, "beta", strict=True)
    check_nonneg(scale, "scale", strict=True)
    g = finite_diff(y, 2) / scale
    sq = g.square().sum(dim=0)
    v = torch.where(sq > 0, sq.clamp(min=torch.finfo(sq.dtype).tiny) ** (beta / 2), torch.zeros_like(sq))
    v = _per_sample_sum(v)
    if normalize:
        v = v / (y.shape[1] * y.shape[2])
    return v


def _as_dict(f) -> dict:
    return f if isinstance(f, dict) else {"output": f}


def feature_loss(pred, target, normalize: bool = True, weights: dict | None = None) -> Tensor:
    """Feature-matching loss ``sum_l w_l ||pred_l - target_l||^2 / ||target_l||^2`` per sample.

    With ``normalize`` (Mahendran & Vedaldi 2015) each layer's squared error is divided by the
    target's squared norm (per sample), so the value is 0 at a perfect match and 1 for features
    that are all zero, whatever the layer's size and scale.

    Args:
        pred: ``(B, ...)`` features, or a dict ``name -> (B, ...)`` (several layers).
        target: the same structure; each tensor broadcastable to ``pred``'s (e.g. batch 1).
        normalize: divide each layer by ``||target_l||^2`` (else plain squared L2).
        weights: optional ``{name: weight >= 0}`` (default 1 each; a dict's missing names count 1).

    Returns:
        ``(B,)``.
    """
    pred, target = _as_dict(pred), _as_dict(target)
    if set(pred) != set(target):
        raise ValueError(f"target: layers {sorted(target)} do not match the features' {sorted(pred)}")
    total = 0.0
    for name, p in pred.items():
        t = target[name]
        e = squared_l2(p, t)
        if normalize:
            n = _per_sample_sum(t.square()) if t.dim() > 1 else t.square()
            e = e / n.clamp(min=torch.finfo(e.dtype).tiny)
        w = 1.0 if weights is None else weights.get(name, 1.0)
        total = total + w * e
    return total


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


class AlphaNorm(Term):
    """Prior ``alpha_norm(y, alpha, scale, center, normalize)`` (see :func:`alpha_norm`); ``x`` is ignored."""

    def __init__(self, alpha: float = 6.0, scale: float = 1.0, center=None, normalize: bool = True):
        super().__init__()
        check_nonneg(alpha, "alpha", strict=True)
        check_nonneg(scale, "scale", strict=True)
        self.alpha, self.scale, self.center, self.normalize = float(alpha), float(scale), center, normalize

    def forward(self, x: Tensor | None, y: Tensor) -> Tensor:
        c = self.center.to(y) if isinstance(self.center, Tensor) else self.center  # follows y's dtype/device
        return alpha_norm(y, self.alpha, self.scale, c, self.normalize)


class TVBeta(Term):
    """Prior ``tv_beta(y, beta, scale, normalize)`` of ``(B, H, W, C)`` images (see :func:`tv_beta`); ``x`` is ignored."""

    def __init__(self, beta: float = 2.0, scale: float = 1.0, normalize: bool = True):
        super().__init__()
        check_nonneg(beta, "beta", strict=True)
        check_nonneg(scale, "scale", strict=True)
        self.beta, self.scale, self.normalize = float(beta), float(scale), normalize

    def forward(self, x: Tensor | None, y: Tensor) -> Tensor:
        return tv_beta(y, self.beta, self.scale, self.normalize)


class FeatureLoss(Term):
    """Feature matching ``term(x, y) = feature_loss(features(jitter(y)), x)`` (see :func:`feature_loss`).

    ``x`` is the observation, the target features (a tensor or a dict ``name -> tensor``, as
    ``features`` returns them), ``y`` the unknown signal (an image). With ``normalize`` the value
    is Mahendran & Vedaldi's ``||phi(y) - phi_0||^2 / ||phi_0||^2``.

    Args:
        features: any differentiable callable ``y -> (B, ...)`` or ``-> {name: (B, ...)}``
            (a CNN, a random network, an encoder).
        normalize, weights: see :func:`feature_loss`.
        jitter: when > 0, every call shifts ``y`` circularly by a random offset of up to ``jitter``
            samples along each spatial axis (axes 1 and 2 of ``(B, H, W, C)``, the same offset
            for the batch) before the features: the paper's jitter, which averages the
            reconstruction over small translations. The offsets come from this term's own
            generator (``seed``), so runs are reproducible and the global random state is untouched.
        seed: seed of the jitter generator (:meth:`reseed` restarts it).
    """

    def __init__(self, features: Callable, normalize: bool = True, weights: dict | None = None,
                 jitter: int = 0, seed: int = 0):
        super().__init__()
        if not callable(features):
            raise TypeError(f"features: expected a callable y -> features, got {type(features).__name__}")
        if not isinstance(jitter, int) or jitter < 0:
            raise ValueError(f"jitter: expected an integer >= 0 (pixels), got {jitter!r}")
        self.features, self.normalize, self.weights, self.jitter = features, normalize, weights, jitter
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the jitter generator (at ``seed``, default the constructor's)."""
        self.generator.manual_seed(self.seed if seed is None else int(seed))

    def shift(self, y: Tensor) -> Tensor:
        """``y`` rolled by the next random jitter offset (``y`` itself when ``jitter == 0``)."""
        if self.jitter == 0:
            return y
        d = torch.randint(-self.jitter, self.jitter + 1, (2,), generator=self.generator).tolist()
        return torch.roll(y, shifts=d, dims=(1, 2))

    def forward(self, x, y: Tensor) -> Tensor:
        return feature_loss(self.features(self.shift(y)), x, self.normalize, self.weights)


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
