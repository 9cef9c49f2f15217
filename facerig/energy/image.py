"""Total-variation image restoration on the core: denoising (ROF) and inpainting.

Images follow the library layout, channels-last floats in [0, 1]. The entry points accept

* ``(H, W)`` grayscale, ``(H, W, C)`` with channels last, or batched ``(B, H, W, C)``;
* a ``torch.Tensor`` (dtype and device are kept) or a NumPy array (``uint8`` is scaled to
  [0, 1] as float32; float arrays keep their dtype),

and return a tensor of the input's shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from facerig.energy._checks import as_tensor, check_finite, check_nonneg, check_positive_int
from facerig.energy.ops import finite_diff, pointwise_norm
from facerig.energy.prox import prox_tv
from facerig.energy.solvers import SolverResult, fista

__all__ = ["tv_denoise", "tv_inpaint", "rof_energy", "psnr", "to_batched_image"]


def to_batched_image(image, name: str = "image") -> tuple[Tensor, tuple[int, ...]]:
    """Return ``(B, H, W, C)`` view of an image and the original shape (to undo with ``reshape``).

    Accepts ``(H, W)``, ``(H, W, C)`` or ``(B, H, W, C)`` tensors / arrays (see module docs).
    """
    x = as_tensor(image, name)
    shape = tuple(x.shape)
    if x.dim() == 2:
        x = x[None, :, :, None]
    elif x.dim() == 3:
        x = x[None]
    elif x.dim() != 4:
        raise ValueError(f"{name}: expected (H, W), (H, W, C) or (B, H, W, C), got shape {shape}")
    check_finite(x, name)
    return x, shape


def _image_pair_float64(a, b, name_a: str, name_b: str) -> tuple[Tensor, Tensor]:
    """Two images of the same shape as ``(B, H, W, C)`` float64 tensors on ``a``'s device."""
    a4, _ = to_batched_image(a, name_a)
    b4, _ = to_batched_image(b, name_b)
    if a4.shape != b4.shape:
        raise ValueError(f"{name_b}: shape {tuple(b4.shape)} does not match {name_a} {tuple(a4.shape)}")
    return a4.double(), b4.to(dtype=torch.float64, device=a4.device)


def rof_energy(u: Tensor, f: Tensor, weight: float, isotropic: bool = True, channels: str = "separate") -> Tensor:
    """ROF energy ``1/2 ||u - f||^2 + weight * TV(u)`` per image.

    This is the objective of ``skimage.restoration.denoise_tv_chambolle(f, weight)`` (its
    docstring's ``lambda`` is ``1 / weight``); TV uses forward differences with a Neumann
    boundary, channels separately.

    Args:
        u, f: images of the same shape (any layout accepted by :func:`tv_denoise`).
        weight: TV weight >= 0.

    Returns:
        ``(B,)`` float64 energies (``B = 1`` for unbatched inputs).
    """
    u4, f4 = _image_pair_float64(u, f, "u", "f")
    tv = pointwise_norm(finite_diff(u4), isotropic, channels).sum(dim=(0, 2, 3, 4))
    return 0.5 * (u4 - f4).square().sum(dim=(1, 2, 3)) + weight * tv


def tv_denoise(
    image,
    weight: float = 0.1,
    *,
    tol: float = 1e-2,
    max_iter: int = 500,
    isotropic: bool = True,
    channels: str = "separate",
    method: str = "fgp",
    check_every: int = 5,
    return_result: bool = False,
) -> Tensor | SolverResult:
    """Total-variation denoising: the ROF problem of ``skimage.restoration.denoise_tv_chambolle``.

    Solves ``min_u 1/2 ||u - image||^2 + weight * TV(u)`` per image (isotropic TV, forward
    differences, Neumann boundary, each channel separately). For the same ``weight`` this is
    the problem ``denoise_tv_chambolle(image, weight, channel_axis=-1)`` solves (``(H, W)``
    images: ``channel_axis=None``). The solver is the fast gradient projection on the dual
    (Beck & Teboulle 2009); it stops when the relative duality gap, an upper bound on
    ``(E(u) - E*) / E(u)``, drops below ``tol``.

    Args:
        image: noisy image, ``(H, W)``, ``(H, W, C)`` or ``(B, H, W, C)`` tensor or array.
        weight: TV weight >= 0 (larger removes more noise); 0.1 suits noise sigma ~ 0.1.
        tol: relative duality-gap tolerance. The default 1e-2 is within 1 % of the optimal
            energy; ``tol=0.1`` stops at about the energy skimage's default stopping rule reaches.
        max_iter: iteration limit.
        isotropic: isotropic (default) or anisotropic TV.
        channels: ``"separate"`` (as skimage) or ``"coupled"`` (vectorial colour TV).
        method: ``"fgp"`` (default) or ``"chambolle"`` (the algorithm skimage runs).
        check_every: iterations between duality-gap checks.
        return_result: return the :class:`SolverResult` (``x`` in the input's shape).

    Returns:
        The denoised image as a tensor of the input's shape (float; ``uint8`` input gives float32).
    """
    x, shape = to_batched_image(image)
    check_nonneg(weight, "weight")
    res = prox_tv(x, weight, ndim=2, isotropic=isotropic, channels=channels, method=method,
                  max_iter=max_iter, tol=tol, check_every=check_every, return_result=True)
    out = res.x.reshape(shape)
    if not return_result:
        return out
    res.x = out
    return res


def _box(t: Tensor, k: int) -> Tensor:
    """Separable k x k box average of ``(N, 1, H, W)`` (the normalisation cancels in ratios)."""
    t = F.avg_pool2d(t, (1, k), 1, (0, k // 2), count_include_pad=False)
    return F.avg_pool2d(t, (k, 1), 1, (k // 2, 0), count_include_pad=False)


def _fill_missing(x: Tensor, known: Tensor) -> Tensor:
    """Initial guess: fill unknown pixels by normalised box averages of growing size."""
    b, h, w, c = x.shape
    v = torch.where(known, x, torch.zeros((), dtype=x.dtype, device=x.device)).permute(0, 3, 1, 2)
    m = known.to(x.dtype).expand(b, h, w, c).permute(0, 3, 1, 2).contiguous()
    filled = v.clone()
    have = m > 0
    k = 3
    while not bool(have.all()) and k <= 2 * max(h, w) + 1:
        num = _box(v.reshape(b * c, 1, h, w), k)
        den = _box(m.reshape(b * c, 1, h, w), k)
        est = (num / den.clamp(min=1e-12)).reshape(b, c, h, w)
        ok = den.reshape(b, c, h, w) > 0
        new = ok & ~have
        filled = torch.where(new, est, filled)
        have = have | ok
        k = 2 * k + 1
    return filled.permute(0, 2, 3, 1).contiguous()


def tv_inpaint(
    image,
    mask,
    weight: float = 0.02,
    *,
    fixed=None,
    max_iter: int = 50,
    inner_iter: int = 5,
    tol: float = 0.0,
    progress: bool = False,
    return_result: bool = False,
) -> Tensor | SolverResult:
    """Total-variation inpainting with fixed values: fill unknown pixels, denoise known ones.

    Solves ``min_u 1/2 ||mask * (u - image)||^2 + weight * TV(u)  s.t.  u = image on fixed``
    by FISTA (step 1, the Lipschitz constant of the masked data term) whose prox, an ROF problem
    with the fixed pixels as box constraints ``lower = upper = image``, is solved by
    ``inner_iter`` warm-started dual iterations (:func:`facerig.energy.prox_tv`). Unknown pixels
    start from normalised local averages of the known ones.

    Args:
        image: observed image, ``(H, W)``, ``(H, W, C)`` or ``(B, H, W, C)``; values under
            ``~mask`` are ignored.
        mask: bool, ``True`` where the pixel is observed; the image's shape, or without the
            channel axis (shared by the channels).
        weight: TV weight >= 0 (small: inpainting; ~0.1 also removes noise sigma 0.1).
        fixed: optional bool mask (same rules as ``mask``) of pixels held exactly at ``image``
            (boundary conditions such as the ring around a hole).
        max_iter: FISTA iterations.
        inner_iter: dual iterations of the prox per FISTA iteration.
        tol: FISTA relative energy-change tolerance (0: run ``max_iter``).
        progress: show a progress bar.
        return_result: return the :class:`SolverResult` (``x`` in the input's shape).

    Returns:
        The restored image, a tensor of the input's shape.
    """
    x, shape = to_batched_image(image)
    known = _mask4(mask, x, shape, "mask")
    check_nonneg(weight, "weight")
    check_positive_int(max_iter, "max_iter")
    check_positive_int(inner_iter, "inner_iter")
    if not bool(known.any()):
        raise ValueError("mask: no pixel is observed")
    lower = upper = None
    if fixed is not None:
        fx = _mask4(fixed, x, shape, "fixed").expand_as(x)
        inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
        lower = torch.where(fx, x, -inf)
        upper = torch.where(fx, x, inf)
    m = known.to(x.dtype)
    state: dict[str, Tensor] = {}

    def grad(u):
        return m * (u - x)

    def f(u):
        return 0.5 * (m * (u - x)).square().sum(dim=(1, 2, 3))

    def g(u):
        return weight * pointwise_norm(finite_diff(u)).sum(dim=(0, 2, 3, 4))

    def prox(v, t):
        r = prox_tv(v, t * weight, max_iter=inner_iter, tol=0.0, lower=lower, upper=upper,
                    dual_init=state.get("dual"), return_result=True)
        state["dual"] = r.extra["dual"]
        return r.x

    u0 = _fill_missing(x, known)
    if lower is not None:
        u0 = torch.clamp(u0, lower, upper)
    res = fista(u0, f=f, grad=grad, prox=prox, g=g, step=1.0, max_iter=max_iter, tol=tol,
                history_every=max(1, max_iter // 20) if tol == 0 else 1, progress=progress)
    out = res.x.reshape(shape)
    if not return_result:
        return out
    res.x = out
    return res


def _mask4(mask, x: Tensor, shape: tuple[int, ...], name: str) -> Tensor:
    """A bool mask as ``(B or 1, H, W, C or 1)``, broadcastable to the ``(B, H, W, C)`` image ``x``.

    Accepted: the image's original ``shape``, ``(H, W)`` (shared), or ``(B, H, W)`` for batches.
    """
    if not isinstance(mask, Tensor):
        mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name}: expected a bool mask")
    m = mask.to(x.device)
    b, h, w, _ = x.shape
    if tuple(m.shape) == shape:
        return m.reshape(x.shape)
    if tuple(m.shape) == (h, w):
        return m.reshape(1, h, w, 1)
    if len(shape) == 4 and tuple(m.shape) == (b, h, w):
        return m.reshape(b, h, w, 1)
    raise ValueError(f"{name}: shape {tuple(m.shape)} does not match the image {shape} or its (H, W)")


def psnr(pred, target, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB, per image.

    Args:
        pred, target: images of the same shape (layouts as :func:`tv_denoise`).
        data_range: the value range (1 for [0, 1] images).

    Returns:
        ``(B,)`` float64 tensor (``B = 1`` for unbatched inputs).
    """
    check_nonneg(data_range, "data_range", strict=True)
    p, t = _image_pair_float64(pred, target, "pred", "target")
    mse = (p - t).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(data_range**2 / mse.clamp(min=1e-30))
