"""Unrolled solvers (each iteration a layer with its own parameters) and free-form networks.

Building blocks:

* :class:`Unrolled`: a network ``x -> y`` made of K layers, each one iteration of a solver
  acting on a state; :meth:`Unrolled.from_factory` builds the K layers from a factory so every
  layer gets its own parameters (step sizes, thresholds, filters).
* :class:`ProxGradLayer`: one learned proximal-gradient step ``y <- prox(y - t grad(x, y), t)``
  with a learned step ``t`` (the LISTA pattern when ``grad`` has learned matrices).
* :class:`TVPrimalDualLayer` / :func:`tv_unrolled`: learned primal-dual (Chambolle-Pock)
  iterations for TV denoising / inpainting; at initialisation K layers compute exactly K
  iterations of the primal-dual algorithm for ``min_u 1/2 ||m (u - x)||^2 + w TV(u)``, and
  training adapts the step sizes, extrapolation and thresholds of every layer.
* :class:`DirectCNN`: the free-form alternative, a small residual CNN (learned 3x3 filters).

Images are channels-last ``(B, H, W, C)``; image networks treat channels independently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerig.energy._checks import check_nonneg, check_positive_int

__all__ = ["Unrolled", "ProxGradLayer", "TVPrimalDualLayer", "tv_unrolled", "DirectCNN"]


def _inv_softplus(v: float) -> float:
    return v + math.log(-math.expm1(-v))


class Unrolled(nn.Module):
    """K learned solver iterations as a network.

    The state starts as ``init(x)`` (default: ``x`` itself), every layer maps
    ``layer(state, x) -> state`` and ``readout(state)`` (default: the state, or its first entry
    when the state is a tuple) is the output ``y``.

    Args:
        layers: the K iterations, each an ``nn.Module`` with its own parameters.
        init: ``x -> state``.
        readout: ``state -> y``.
    """

    def __init__(self, layers: Sequence[nn.Module], init: Callable | None = None, readout: Callable | None = None):
        super().__init__()
        if len(layers) == 0:
            raise ValueError("layers: expected at least one layer")
        self.layers = nn.ModuleList(layers)
        self.init = init
        self.readout = readout

    @classmethod
    def from_factory(cls, factory: Callable[[int], nn.Module], n_layers: int, **kwargs) -> Unrolled:
        """Build ``n_layers`` layers ``factory(k)`` (k = 0..K-1), each with its own parameters."""
        check_positive_int(n_layers, "n_layers")
        return cls([factory(k) for k in range(n_layers)], **kwargs)

    def forward(self, x: Tensor, *args) -> Tensor:
        state = x if self.init is None else self.init(x, *args)
        for layer in self.layers:
            state = layer(state, x, *args)
        if self.readout is not None:
            return self.readout(state)
        return state[0] if isinstance(state, tuple) else state


class ProxGradLayer(nn.Module):
    """One learned proximal-gradient iteration ``y <- prox(y - t * grad(x, y), t)``.

    Args:
        grad: ``(x, y) -> (B, ...)`` gradient of the smooth part (may itself hold parameters,
            e.g. learned matrices; registered as a sub-module when it is one).
        prox: ``(v, t) -> y`` the proximal map with step ``t``.
        step: initial step ``t > 0`` (learned through a softplus, so it stays positive).
    """

    def __init__(self, grad: Callable[[Tensor, Tensor], Tensor], prox: Callable[[Tensor, Tensor], Tensor],
                 step: float = 1.0):
        super().__init__()
        check_nonneg(step, "step", strict=True)
        self.grad = grad
        self.prox = prox
        self.raw_step = nn.Parameter(torch.tensor(_inv_softplus(step)))

    @property
    def step(self) -> Tensor:
        return F.softplus(self.raw_step)

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        t = self.step
        return self.prox(y - t * self.grad(x, y), t)


def _grad2(u: Tensor) -> Tensor:
    """Forward differences of ``(N, 1, H, W)`` images, ``(N, 2, H, W)`` (Neumann boundary)."""
    dh = F.pad(u[:, :, 1:] - u[:, :, :-1], (0, 0, 0, 1))
    dw = F.pad(u[:, :, :, 1:] - u[:, :, :, :-1], (0, 1))
    return torch.cat([dh, dw], dim=1)


def _grad2_adjoint(p: Tensor) -> Tensor:
    """Adjoint of :func:`_grad2` (minus the divergence), ``(N, 2, H, W) -> (N, 1, H, W)``."""
    ph = p[:, :1, :-1]
    pw = p[:, 1:, :, :-1]
    return F.pad(ph, (0, 0, 1, 0)) - F.pad(ph, (0, 0, 0, 1)) + F.pad(pw, (1, 0)) - F.pad(pw, (0, 1))


class TVPrimalDualLayer(nn.Module):
    """One learned primal-dual (Chambolle-Pock) iteration for TV restoration.

    For ``min_u 1/2 ||m (u - x)||^2 + w ||grad u||_{2,1}`` (isotropic TV, forward differences,
    Neumann boundary) the iteration is::

        p <- project_{|p| <= w}(p + sigma grad u_bar)
        u_new <- (u + tau div p + tau m x) / (1 + tau m)
        u_bar <- u_new + theta (u_new - u)

    Learned per layer: the step sizes ``tau``, ``sigma`` (positive through a softplus), the
    extrapolation ``theta`` and the threshold ``w`` (positive through an exp). At initialisation
    (``tau = sigma = 1/sqrt(8)``, ``theta = 1``) the layers compute exactly the primal-dual
    algorithm, so an untrained K-layer network is K iterations of the iterative solver.

    State: ``(u, u_bar, p)`` with ``u, u_bar`` of shape ``(N, 1, H, W)`` and ``p`` of shape
    ``(N, 2, H, W)`` (channels of the images are folded into ``N``).

    Args:
        weight: initial TV weight ``w``.
    """

    def __init__(self, weight: float = 0.1):
        super().__init__()
        check_nonneg(weight, "weight", strict=True)
        step = 1.0 / math.sqrt(8.0)
        self.raw_tau = nn.Parameter(torch.tensor(_inv_softplus(step)))
        self.raw_sigma = nn.Parameter(torch.tensor(_inv_softplus(step)))
        self.theta = nn.Parameter(torch.tensor(1.0))
        self.raw_weight = nn.Parameter(torch.tensor(math.log(weight)))

    def forward(self, state, x: Tensor, m: Tensor | float = 1.0):
        if not torch.is_grad_enabled():
            return self._forward_inference(state, x, m)
        u, u_bar, p = state
        tau, sigma = F.softplus(self.raw_tau), F.softplus(self.raw_sigma)
        w = torch.exp(self.raw_weight)
        q = p + sigma * _grad2(u_bar)
        p = q * torch.clamp(w / (q.square().sum(dim=1, keepdim=True) + 1e-20).sqrt(), max=1.0)
        u_new = (u - tau * _grad2_adjoint(p) + tau * m * x) / (1.0 + tau * m)
        u_bar = u_new + self.theta * (u_new - u)
        return u_new, u_bar, p

    def _forward_inference(self, state, x: Tensor, m: Tensor | float):
        """The same iteration without autograd: in-place updates, about half the memory traffic.

        Relies on the invariant that the dual's last row (rows direction) and last column
        (columns direction) stay zero, which the iteration preserves from the zero start.
        """
        u, u_bar, p = state
        tau = float(F.softplus(self.raw_tau))
        sigma = float(F.softplus(self.raw_sigma))
        w = float(torch.exp(self.raw_weight))
        theta = float(self.theta)
        p = p.clone()
        ph, pw = p[:, :1], p[:, 1:]
        ph[:, :, :-1].add_(u_bar[:, :, 1:] - u_bar[:, :, :-1], alpha=sigma)
        pw[:, :, :, :-1].add_(u_bar[:, :, :, 1:] - u_bar[:, :, :, :-1], alpha=sigma)
        scale = torch.hypot(ph, pw).clamp_(min=w).reciprocal_().mul_(w)
        p.mul_(scale)
        div = ph.clone()
        div[:, :, 1:].sub_(ph[:, :, :-1])
        div.add_(pw)
        div[:, :, :, 1:].sub_(pw[:, :, :, :-1])
        if isinstance(m, Tensor):
            u_new = div.mul_(tau).add_(u).addcmul_(m, x, value=tau).div_(m * tau + 1.0)
        else:
            u_new = div.mul_(tau).add_(u).add_(x, alpha=tau * m).div_(1.0 + tau * m)
        return u_new, torch.lerp(u_new, u, -theta), p


def _fold_channels(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """``(B, H, W, C)`` images (and an optional mask) to ``(B*C, 1, H, W)``."""
    if x.dim() != 4:
        raise ValueError(f"x: expected (B, H, W, C) images, got shape {tuple(x.shape)}")
    b, h, w, c = x.shape
    xn = x.permute(0, 3, 1, 2).reshape(b * c, 1, h, w)
    if mask is None:
        return xn, None
    m = mask.to(device=x.device, dtype=x.dtype)
    m = m if m.dim() == 4 else m[..., None]
    if m.dim() != 4 or m.shape[:3] != x.shape[:3] or m.shape[3] not in (1, c):
        raise ValueError(f"mask: expected shape {(b, h, w)} or {(b, h, w, c)}, got {tuple(mask.shape)}")
    return xn, m.expand(b, h, w, c).permute(0, 3, 1, 2).reshape(b * c, 1, h, w)


def _unfold_channels(y: Tensor, like: Tensor) -> Tensor:
    b, h, w, c = like.shape
    return y.reshape(b, c, h, w).permute(0, 2, 3, 1)


class _ChannelsToBatch(nn.Module):
    """Run an ``(N, 1, H, W)`` network on channels-last ``(B, H, W, C)`` images, channel by channel."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        xn, m = _fold_channels(x, mask)
        return _unfold_channels(self.net(xn) if m is None else self.net(xn, m), x)


def _pd_init(x: Tensor, m: Tensor | float = 1.0):
    n, _, h, w = x.shape
    return x, x, torch.zeros(n, 2, h, w, dtype=x.dtype, device=x.device)


def tv_unrolled(n_layers: int = 10, weight: float = 0.1) -> nn.Module:
    """An unrolled learned primal-dual TV solver for ``(B, H, W, C)`` images.

    ``net(x)`` denoises; ``net(x, mask)`` (``(B, H, W)`` or ``(B, H, W, C)``, 1 where observed)
    inpaints. Untrained, it computes ``n_layers`` primal-dual iterations of
    ``min_u 1/2 ||mask (u - x)||^2 + weight TV(u)`` (channels separately); train it with
    :func:`facerig.energy.training.train`.

    Args:
        n_layers: number of iterations / layers K.
        weight: initial TV weight of every layer.
    """
    check_positive_int(n_layers, "n_layers")
    check_nonneg(weight, "weight", strict=True)
    return _ChannelsToBatch(Unrolled.from_factory(lambda k: TVPrimalDualLayer(weight), n_layers, init=_pd_init))


class DirectCNN(nn.Module):
    """Free-form residual CNN ``y = x - cnn(x)`` for ``(B, H, W, C)`` images (channels independent).

    ``depth`` 3x3 convolutions of ``width`` channels with ReLUs (DnCNN-style, without batch
    norm), predicting the noise. With ``masked=True`` the network is called ``net(x, mask)``
    and the mask is a second input channel.

    Args:
        width: hidden channels.
        depth: number of convolutions (>= 2).
        masked: take a mask as second input channel.
    """

    def __init__(self, width: int = 16, depth: int = 5, masked: bool = False):
        super().__init__()
        check_positive_int(width, "width")
        check_positive_int(depth, "depth", minimum=2)
        layers: list[nn.Module] = [nn.Conv2d(2 if masked else 1, width, 3, padding=1, padding_mode="replicate"),
                                   nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate"), nn.ReLU()]
        layers.append(nn.Conv2d(width, 1, 3, padding=1, padding_mode="replicate"))
        self.body = nn.Sequential(*layers)
        self.masked = masked

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.masked and mask is None:
            raise ValueError("mask: this network was built with masked=True and needs a mask")
        xn, m = _fold_channels(x, mask if self.masked else None)
        inp = torch.cat([xn, m], dim=1) if self.masked else xn
        return _unfold_channels(xn - self.body(inp), x)
