"""Post-processing of stylised images: colour preservation, the photorealism step, masks.

All images are channels-last ``(B, H, W, 3)`` (or ``(H, W, 3)``) float RGB in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["rgb_to_yiq", "yiq_to_rgb", "preserve_color", "guided_filter", "photorealistic", "apply_mask"]

_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
                    dtype=torch.float64)


def rgb_to_yiq(rgb: Tensor) -> Tensor:
    """``(..., 3)`` RGB -> YIQ (Y the luminance in [0, 1], I and Q the chrominance)."""
    return rgb @ _YIQ.to(rgb).T


def yiq_to_rgb(yiq: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_yiq`."""
    return yiq @ torch.linalg.inv(_YIQ).to(yiq).T


def preserve_color(stylized: Tensor, content: Tensor, match_luminance: bool = True) -> Tensor:
    """Keep the content's colours: the stylised image's luminance with the content's chrominance
    (Gatys et al. 2017, "luminance-only transfer", applied after the transfer).

    Args:
        stylized, content: ``(..., H, W, 3)`` of the same shape.
        match_luminance: first shift and scale the stylised luminance to the content's mean and
            standard deviation (per image), so the content's brightness is kept too.

    Returns:
        the same shape, clamped to [0, 1].
    """
    if stylized.shape != content.shape:
        raise ValueError(f"content: shape {tuple(content.shape)} does not match the stylised image's "
                         f"{tuple(stylized.shape)}")
    s, c = rgb_to_yiq(stylized), rgb_to_yiq(content)
    y = s[..., :1]
    if match_luminance:
        dims = (-3, -2, -1)
        ys = (y - y.mean(dims, keepdim=True)) / y.std(dims, keepdim=True).clamp(min=1e-6)
        y = ys * c[..., :1].std(dims, keepdim=True) + c[..., :1].mean(dims, keepdim=True)
    return yiq_to_rgb(torch.cat([y, c[..., 1:]], dim=-1)).clamp(0, 1)


def _box(x: Tensor, r: int) -> Tensor:
    """Mean over a (2r+1)^2 window of NCHW ``x``, windows clipped at the border."""
    k = 2 * r + 1
    ones = torch.ones_like(x[:, :1])
    s = F.avg_pool2d(F.pad(x, (r, r, r, r)), k, stride=1)
    n = F.avg_pool2d(F.pad(ones, (r, r, r, r)), k, stride=1)
    return s / n


def guided_filter(guide: Tensor, src: Tensor, radius: int = 4, eps: float = 1e-3) -> Tensor:
    """He et al.'s guided filter: smooth ``src`` while keeping the edges of ``guide``.

    Per window ``w`` the output is locally affine in the guide's luminance ``I``:
    ``q = a_w I + b_w`` with ``(a_w, b_w)`` the ridge regression of ``src`` on ``I``
    (regularised by ``eps``), averaged over the windows covering each pixel. It is the closed-form
    minimiser of a local quadratic energy, the "prox" step of the photorealism option.

    Args:
        guide: ``(B, H, W, 3)`` (its luminance is the guide) or ``(B, H, W, 1)``.
        src: ``(B, H, W, C)``.
        radius: window radius in pixels (>= 1).
        eps: regularisation (larger: smoother; in squared intensity units).

    Returns:
        ``(B, H, W, C)``.
    """
    if radius < 1 or eps <= 0:
        raise ValueError(f"radius/eps: expected radius >= 1 and eps > 0, got {radius}, {eps}")
    if guide.shape[:3] != src.shape[:3]:
        raise ValueError(f"guide: shape {tuple(guide.shape)} does not match src {tuple(src.shape)}")
    g = rgb_to_yiq(guide)[..., :1] if guide.shape[-1] == 3 else guide
    I = g.permute(0, 3, 1, 2).to(src)
    p = src.permute(0, 3, 1, 2)
    mI, mp = _box(I, radius), _box(p, radius)
    cov = _box(I * p, radius) - mI * mp
    var = _box(I * I, radius) - mI * mI
    a = cov / (var + eps)
    b = mp - a * mI
    q = _box(a, radius) * I + _box(b, radius)
    return q.permute(0, 2, 3, 1)


def photorealistic(stylized: Tensor, content: Tensor, radius: int = 4, eps: float = 2e-3) -> Tensor:
    """The photorealism option: :func:`guided_filter` of the stylised image guided by the content,
    so the result's edges are the content photograph's (the style's brush texture is smoothed
    away, its colours stay). Shapes ``(B, H, W, 3)``; clamped to [0, 1]."""
    return guided_filter(content, stylized, radius, eps).clamp(0, 1)


def apply_mask(stylized: Tensor, content: Tensor, mask: Tensor | None) -> Tensor:
    """``mask * stylized + (1 - mask) * content`` with ``mask`` ``(B, H, W)`` (or ``(H, W)``) in [0, 1]."""
    if mask is None:
        return stylized
    m = mask.to(stylized)
    if m.dim() == 2:
        m = m[None]
    if m.shape[-2:] != stylized.shape[-3:-1]:
        raise ValueError(f"mask: shape {tuple(mask.shape)} does not match the image's {tuple(stylized.shape[-3:-1])}")
    return m[..., None] * stylized + (1 - m[..., None]) * content
