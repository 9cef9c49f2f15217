"""Feature inversion by energy minimisation (Mahendran & Vedaldi, CVPR 2015), and its learned and
hybrid solvers.

The energy of an image ``y`` (``(B, H, W, 3)`` RGB in [0, 1]) given target features ``phi_0``::

    E(y) = ||phi(y) - phi_0||^2 / ||phi_0||^2                       (normalised feature loss)
         + lam_alpha * 1/(H W) sum_u (||y_u - m|| / B)^alpha         (alpha-norm, alpha = 6)
         + lam_tv    * 1/(H W) sum_{u,c} (|grad y_{u,c}|^2 / V^2)^(beta/2)   (TV^beta, beta = 2)

with the paper's normalisation carried to images in [0, 1]: ``B = 80 / 255`` the mean pixel norm of
natural images (80 in 0-255 units), ``V = B / 6.5``, ``m`` the mean pixel; optional jitter shifts
``y`` by a random offset of up to ``jitter`` pixels at each evaluation. The energy is a
:class:`facerig.energy.WeightedSum` of the core's :class:`~facerig.energy.FeatureLoss`,
:class:`~facerig.energy.AlphaNorm` and :class:`~facerig.energy.TVBeta`, minimised by the core's
:func:`~facerig.energy.minimize_adam` (or :func:`~facerig.energy.minimize_lbfgs`) with the image
kept in [0, 1].

Three solvers, one result type (:class:`Inversion`):

* :func:`invert` - optimisation from a grey image (or any start);
* :func:`invert_learned` - a :class:`~facerig.inversion.learned.LearnedInverse` decoder, one pass;
* :func:`invert_hybrid` - the decoder's image as the start of a few optimisation steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from facerig.energy import (AlphaNorm, FeatureLoss, SolverResult, TVBeta, WeightedSum, feature_loss, minimize_adam,
                            minimize_lbfgs)

__all__ = ["PIXEL_NORM", "MEAN_PIXEL", "PRIORS", "Inversion", "inversion_energy", "feature_error", "invert",
           "invert_learned", "invert_hybrid"]

#: ``B``: mean Euclidean norm of a (mean-removed) natural-image pixel, Mahendran & Vedaldi's 80 in 0-255 units.
PIXEL_NORM = 80.0 / 255.0
#: ``m``: the mean RGB pixel in [0, 1] (ImageNet's, as VGG16 subtracts it).
MEAN_PIXEL = (122.67892 / 255.0, 116.66877 / 255.0, 104.00699 / 255.0)
#: The prior choices of :func:`inversion_energy`.
PRIORS = ("both", "alpha", "tv", "none")


@dataclass
class Inversion:
    """What every inversion solver returns.

    Attributes:
        image: ``(B, H, W, 3)`` the reconstruction, RGB in [0, 1].
        feature_error: ``(B,)`` normalised feature error ``||phi(image) - phi_0||^2 / ||phi_0||^2``
            (no jitter).
        seconds: wall time of the solver (for the learned inverse: the decoder pass; the features of
            the target are an input, not counted).
        cpu_seconds: the process's CPU time over the same span (``time.process_time``): with one
            torch thread, a time that other jobs on a loaded machine do not inflate.
        method: ``"opt"``, ``"learned"`` or ``"hybrid"``.
        result: the core solver's :class:`~facerig.energy.SolverResult` (None for ``"learned"``).
        info: the settings used (prior, weights, steps, ...).
    """

    image: Tensor
    feature_error: Tensor
    seconds: float
    method: str
    result: SolverResult | None = None
    info: dict = field(default_factory=dict)
    cpu_seconds: float = float("nan")


def _as_dict(f) -> dict:
    return f if isinstance(f, dict) else {"output": f}


def inversion_energy(
    features: Callable,
    *,
    prior: str = "both",
    lam_alpha: float = 1e-3,
    lam_tv: float = 1e-3,
    alpha: float = 6.0,
    beta: float = 2.0,
    jitter: int = 0,
    seed: int = 0,
    pixel_norm: float = PIXEL_NORM,
    center=MEAN_PIXEL,
) -> WeightedSum:
    """Mahendran & Vedaldi's energy as a :class:`~facerig.energy.WeightedSum` ``E(phi_0, y) -> (B,)``.

    Args:
        features: the feature map ``(B, H, W, 3) -> (B, ...)`` or ``-> {name: (B, ...)}`` (any
            differentiable network; all returned layers are matched, each normalised).
        prior: ``"both"`` (alpha-norm + TV^beta), ``"alpha"``, ``"tv"`` or ``"none"``.
        lam_alpha, lam_tv: the priors' weights (>= 0).
        alpha, beta: the exponents (paper: 6 and 2).
        jitter: random shift (pixels) of the image at each evaluation (0: none).
        seed: seed of the jitter.
        pixel_norm: ``B``; the TV scale is ``V = B / 6.5``.
        center: the mean pixel removed inside the alpha-norm (a number or 3 values).

    Returns:
        ``WeightedSum`` with terms ``"feature"`` and, per ``prior``, ``"alpha"`` / ``"tv"``; call it
        as ``E(phi_0, y)``.
    """
    if prior not in PRIORS:
        raise ValueError(f"prior: expected one of {PRIORS}, got {prior!r}")
    terms = {"feature": (1.0, FeatureLoss(features, jitter=jitter, seed=seed))}
    if prior in ("both", "alpha"):
        c = torch.tensor(center, dtype=torch.float32) if not isinstance(center, (int, float)) else center
        terms["alpha"] = (lam_alpha, AlphaNorm(alpha, pixel_norm, c))
    if prior in ("both", "tv"):
        terms["tv"] = (lam_tv, TVBeta(beta, pixel_norm / 6.5))
    return WeightedSum(**terms)


def feature_error(features: Callable, image: Tensor, target) -> Tensor:
    """``(B,)`` normalised feature error ``sum_l ||phi_l(image) - phi_0,l||^2 / ||phi_0,l||^2`` (no grad)."""
    with torch.no_grad():
        return feature_loss(_as_dict(features(image)), _as_dict(target))


def _check_target(target) -> dict:
    t = _as_dict(target)
    if not t or not all(isinstance(v, Tensor) for v in t.values()):
        raise ValueError("target: expected the features phi_0 (a tensor or a dict name -> tensor)")
    return {k: v.detach() for k, v in t.items()}


def invert(
    features: Callable,
    target,
    size: tuple[int, int] | None = None,
    *,
    init: Tensor | None = None,
    prior: str = "both",
    steps: int = 200,
    lr: float = 0.03,
    solver: str = "adam",
    seed: int = 0,
    progress: bool = False,
    callback=None,
    **energy_kwargs,
) -> Inversion:
    """Invert features by minimising :func:`inversion_energy` with the core's solvers.

    Args:
        features: the feature map (see :func:`inversion_energy`); frozen (no parameter is changed).
        target: ``phi_0``, the features to match, as ``features`` returns them (batch ``B``).
        size: ``(H, W)`` of the image to find, when ``init`` is not given.
        init: ``(B, H, W, 3)`` start (default: mid-grey 0.5 plus a little seeded noise, 0.01).
        prior, seed: see :func:`inversion_energy` (``seed`` also seeds the default start's noise).
        **energy_kwargs: the other arguments of :func:`inversion_energy` (``lam_alpha``, ``lam_tv``,
            ``alpha``, ``beta``, ``jitter``, ``pixel_norm``, ``center``).
        steps: solver iterations (the default budget: 200 Adam steps).
        lr: step size (Adam learning rate; L-BFGS initial step is 1).
        solver: ``"adam"`` (:func:`~facerig.energy.minimize_adam`, one energy evaluation per step)
            or ``"lbfgs"`` (:func:`~facerig.energy.minimize_lbfgs`, no jitter).
        progress: tqdm bar; callback: passed to the solver (``callback(k, y, energy)``).

    Returns:
        :class:`Inversion` (``method="opt"``), ``image`` kept in [0, 1] (projected after every step).
    """
    tgt = _check_target(target)
    if solver not in ("adam", "lbfgs"):
        raise ValueError(f"solver: expected 'adam' or 'lbfgs', got {solver!r}")
    B = next(iter(tgt.values())).shape[0]
    ref = next(iter(tgt.values()))
    if init is None:
        if size is None:
            raise ValueError("size: give the image size (H, W) or an initial image init")
        H, W = size
        gen = torch.Generator().manual_seed(seed)
        init = 0.5 + 0.01 * torch.randn(B, H, W, 3, generator=gen)
        init = init.to(dtype=ref.dtype if ref.is_floating_point() else torch.float32, device=ref.device)
    elif init.dim() != 4 or init.shape[-1] != 3:
        raise ValueError(f"init: expected (B, H, W, 3) images, got shape {tuple(init.shape)}")
    energy = inversion_energy(features, prior=prior, seed=seed, **energy_kwargs)

    def f(y):
        return energy(tgt, y)

    def box(y):
        return y.clamp(0.0, 1.0)

    t0, c0 = time.perf_counter(), time.process_time()
    if solver == "adam":
        res = minimize_adam(f, init.clamp(0, 1), lr=lr, max_iter=steps, tol=0.0, project=box, progress=progress,
                            callback=callback, reeval=False)
    else:
        res = minimize_lbfgs(f, init.clamp(0, 1), max_iter=steps, tol=0.0, project=box, progress=progress,
                             callback=callback)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    err = feature_error(features, res.x, tgt)
    info = dict(prior=prior, steps=steps, lr=lr, solver=solver, **energy_kwargs)
    return Inversion(res.x, err, seconds, "opt", res, info, cpu)


def invert_learned(inverse, target, layer: str | None = None, features: Callable | None = None) -> Inversion:
    """One pass of a learned inverse (up-convolutional decoder) on the target features.

    Args:
        inverse: a :class:`~facerig.inversion.learned.LearnedInverse`.
        target: ``{layer: (B, h, w, C)}`` features (one layer is used).
        layer: which layer to decode (default: the only one in ``target``).
        features: the feature map, to report the feature error of the result (else NaN).

    Returns:
        :class:`Inversion` (``method="learned"``); ``seconds`` is the decoder pass alone.
    """
    tgt = _check_target(target)
    if layer is None:
        if len(tgt) != 1:
            raise ValueError(f"layer: the target has layers {list(tgt)}; say which one to decode")
        layer = next(iter(tgt))
    if layer not in tgt:
        raise ValueError(f"layer: {layer!r} is not in the target's layers {list(tgt)}")
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        img = inverse({layer: tgt[layer]})[layer]
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if features is not None:
        err = feature_error(features, img, {layer: tgt[layer]} if len(tgt) > 1 else tgt)
    else:
        err = torch.full((img.shape[0],), float("nan"))
    return Inversion(img, err, seconds, "learned", None, {"layer": layer}, cpu)


def invert_hybrid(features: Callable, target, inverse, *, layer: str | None = None, steps: int = 40,
                  lr: float = 0.03, **kwargs) -> Inversion:
    """The learned inverse's image as the start of a few optimisation steps (:func:`invert`).

    Args:
        features, target: as :func:`invert` (``target`` holds ``layer``'s features).
        inverse, layer: as :func:`invert_learned`.
        steps: optimisation steps after the decoder (default 40, a fifth of :func:`invert`'s budget).
        lr: Adam learning rate (as :func:`invert`'s; 0.01 converged more slowly from the decoder's image).
        **kwargs: the other arguments of :func:`invert` (prior, weights, solver, ...).

    Returns:
        :class:`Inversion` (``method="hybrid"``); ``seconds`` counts the decoder and the steps.
    """
    start = invert_learned(inverse, target, layer)
    res = invert(features, target, init=start.image, steps=steps, lr=lr, **kwargs)
    res.method = "hybrid"
    res.seconds += start.seconds
    res.cpu_seconds += start.cpu_seconds
    res.info.update(layer=start.info["layer"])
    return res
