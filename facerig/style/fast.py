"""Feed-forward style transfer (Johnson et al. 2016; Ulyanov et al. 2016): one network per style.

:class:`TransformNet` maps a content photo to its stylisation in one pass. It is trained without
labels: the core's :func:`facerig.energy.train` in its unsupervised mode, whose loss is the style
energy of the network's output (:class:`facerig.style.energy.StyleEnergy` with the style's Gram
matrices fixed). Instance normalisation (Ulyanov et al.) and a small width keep it fast on a CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from facerig.energy import Problem, TrainResult, train
from facerig.io import load_network, save_network
from facerig.style.energy import StyleEnergy

__all__ = ["TransformNet", "train_fast", "save_fast", "load_fast"]


class _Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")
        self.n1 = nn.InstanceNorm2d(c, affine=True)
        self.c2 = nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")
        self.n2 = nn.InstanceNorm2d(c, affine=True)

    def forward(self, x):
        return x + self.n2(self.c2(F.relu(self.n1(self.c1(x)))))


class TransformNet(nn.Module):
    """A small image transformation network, sized for the CPU: two stride-2 convolutions (to 1/4
    resolution), residual blocks there, two x2 upsamplings each followed by a convolution, and a
    residual output ``y = clamp(x + net(x))``. About 1.1 GMAC at 512x512 (width 16).

    Args:
        width: channels at 1/2 resolution (2x at 1/4).
        n_res: residual blocks at 1/4 resolution.

    ``forward(x)``: ``(B, H, W, 3)`` RGB in [0, 1] (any size; H, W multiples of 4 are exact, others
    are resized back) -> ``(B, H, W, 3)`` in [0, 1].
    """

    def __init__(self, width: int = 16, n_res: int = 3):
        super().__init__()
        w1, w2 = width, 2 * width

        def block(ci, co, stride=1):
            return nn.Sequential(nn.Conv2d(ci, co, 3, stride=stride, padding=1, padding_mode="reflect"),
                                 nn.InstanceNorm2d(co, affine=True), nn.ReLU())

        self.down = nn.Sequential(block(3, w1, 2), block(w1, w2, 2))
        self.res = nn.Sequential(*[_Res(w2) for _ in range(n_res)])
        self.up = block(w2, w1)
        self.out = nn.Conv2d(w1, 3, 3, padding=1, padding_mode="reflect")
        self.config = {"width": width, "n_res": n_res}

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"x: expected (B, H, W, 3) images, got {tuple(x.shape)}")
        h = x.permute(0, 3, 1, 2)
        H, W = h.shape[-2:]
        z = self.res(self.down(h))
        z = self.up(F.interpolate(z, scale_factor=2, mode="nearest"))
        d = self.out(F.interpolate(z, size=(H, W), mode="bilinear", align_corners=False))
        return (h + d).clamp(0, 1).permute(0, 2, 3, 1)


def train_fast(net: TransformNet, energy: StyleEnergy, grams: dict, contents: Tensor, *, steps: int = 1000,
               batch_size: int = 4, lr: float = 1e-3, seed: int = 0, log_every: int = 50, progress: bool = False,
               checkpoint=None, resume: bool = False, callback=None) -> TrainResult:
    """Train ``net`` for one style with the core's :func:`~facerig.energy.train` (unsupervised mode).

    The loss is ``mean_b E(net(x_b))`` with ``E`` the style energy of content ``x_b`` and the fixed
    target Gram matrices ``grams`` (:meth:`StyleEnergy.grams`).

    Args:
        contents: ``(N, H, W, 3)`` training content crops (batches drawn with replacement).
        steps, batch_size, lr, seed, log_every, progress, checkpoint, resume, callback: see
            :func:`facerig.energy.train`.
    """

    def e(x: Tensor, y: Tensor) -> Tensor:
        return energy(y, energy.targets(x, grams=grams))

    return train(net, Problem(energy=e), contents, mode="unsupervised", steps=steps, batch_size=batch_size, lr=lr,
                 seed=seed, log_every=log_every, progress=progress, checkpoint=checkpoint, resume=resume,
                 callback=callback)


def save_fast(path: str | os.PathLike, net: TransformNet, meta: dict | None = None) -> Path:
    """Write the network (half precision weights, its configuration and ``meta``) atomically."""
    return save_network(path, net, "facerig.style.fast", config=net.config, extra={"meta": meta or {}})


def load_fast(path: str | os.PathLike) -> TransformNet:
    """Read a network written by :func:`save_fast` (float32, eval mode)."""
    return load_network(path, "facerig.style.fast", TransformNet, what="facerig fast style network",
                        hint="train one with tools/train_style.py fast", arg="model", weights_only=False)
