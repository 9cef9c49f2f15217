"""A flexible, learned, unrolled solver of the style energy (after Puy & Pérez 2019).

The solver is the core's :class:`facerig.energy.Unrolled`: K learned steps, each one iteration
of a preconditioned gradient method on the energy of *this* content and *this* style::

    g_k = grad_y E(y_k) / rms(grad_y E(y_k))                      (the energy's gradient, normalised)
    y_{k+1} = y_k - a_k g_k - CNN_k([y_k, g_k, c]; z)             (a learned correction)

The energy's gradient carries the style (its target Gram matrices), the per-layer weights and the
intensity, all chosen at run time; the CNNs are also conditioned (FiLM: per-channel scale and
shift) on ``z``, a vector of the run-time choices and of the style's statistics (log intensity,
the per-layer weights, the log norms of the target Gram matrices). So one network, trained once on
many styles with the core's :func:`facerig.energy.train` (unsupervised: the loss is the energy of
the last step's output), solves for any style, any mix of styles, intensity and layer weights.

The gradient is taken with ``create_graph=False``: training back-propagates through the steps
(``y_k`` and the CNNs) but not through the gradient computation itself (a first-order
approximation that halves the cost). ``grad_size`` evaluates the gradient on a downsampled copy of
``y`` (cheaper; the gradient is brought back by the resize's adjoint).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerig.energy import Problem, TrainResult, Unrolled, train
from facerig.io import load_network, save_network
from facerig.style.energy import StyleEnergy, StyleTargets
from facerig.style.images import fit_size, resize_image

__all__ = ["FlexibleSolver", "FlexContext", "train_flexible", "save_flexible", "load_flexible"]


@dataclass
class FlexContext:
    """The run-time problem of the solver (what the unrolled layers receive besides the state).

    Attributes:
        energy: the :class:`StyleEnergy`.
        targets: targets at the output resolution (content ``(B, H, W, 3)``).
        intensity: ``(B,)`` style intensities.
        layer_weights: ``(B, L)`` per-layer style weights.
        mask: optional ``(B, H, W)`` style mask.
        surrogate: when a list, every gradient evaluation on a ``y`` that requires grad appends
            ``E(y)`` (summed over the batch) as a first-order surrogate whose gradient w.r.t. ``y``
            is the energy's: training then also lowers the energy of the intermediate steps (used
            by :func:`train_flexible`).
        grad_targets: targets at ``grad_size`` (None: ``targets``).
        grad_size: ``(h, w)`` of the gradient evaluation (None: the output's).
    """

    energy: StyleEnergy
    targets: StyleTargets
    intensity: Tensor
    layer_weights: Tensor
    mask: Tensor | None = None
    grad_targets: StyleTargets | None = None
    grad_size: tuple | None = None
    surrogate: list | None = None

    def condition(self) -> Tensor:
        """``z``, ``(B, 1 + 2 L)``: log intensity, layer weights, log norms of the target Grams."""
        B = self.targets.image.shape[0]
        norms = torch.stack([self.targets.grams[n].square().sum(dim=(-2, -1)).clamp(min=1e-12).log().expand(B)
                             for n in self.energy.style_layers], dim=1)
        return torch.cat([self.intensity.clamp(min=1e-6).log()[:, None], self.layer_weights, 0.1 * norms], dim=1)

    def gradient(self, y: Tensor) -> Tensor:
        """Normalised ``grad_y E(y)`` ``(B, H, W, 3)`` (detached), evaluated at ``grad_size``."""
        with torch.enable_grad():
            yd = y.detach().requires_grad_(True)
            if self.grad_size is not None and tuple(self.grad_size) != tuple(y.shape[1:3]):
                ys = resize_image(yd, self.grad_size)
                tg = self.grad_targets
                m = None if self.mask is None else F.adaptive_avg_pool2d(self.mask[:, None], self.grad_size)[:, 0]
            else:
                ys, tg, m = yd, self.targets, self.mask
            e = self.energy(ys, tg, self.intensity, self.layer_weights, m).sum()
            (g,) = torch.autograd.grad(e, yd)
        if self.surrogate is not None and y.requires_grad:
            # E(y_k) for training, at no extra cost: its value, and the gradient g = dE/dy_k (first order)
            self.surrogate.append(e.detach() + (g * (y - y.detach())).sum())
        rms = g.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp(min=1e-12)
        return (g / rms).detach()


class _FiLMConv(nn.Module):
    def __init__(self, ci: int, co: int, cond: int):
        super().__init__()
        self.conv = nn.Conv2d(ci, co, 3, padding=1, padding_mode="replicate")
        self.film = nn.Linear(cond, 2 * co)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: Tensor, z: Tensor) -> Tensor:
        s, b = self.film(z).chunk(2, dim=1)
        return F.relu(self.conv(h) * (1 + s[:, :, None, None]) + b[:, :, None, None])


class FlexStep(nn.Module):
    """One learned step ``y <- y - a g - CNN([y, g, c]; z)`` (see the module docstring).

    Args:
        width: hidden channels of the CNN; depth: its hidden convolutions; cond: size of ``z``;
        step: initial ``a`` (learned, positive through a softplus). The CNN's last convolution
        starts at zero, so an untrained step is a normalised gradient step.
    """

    def __init__(self, width: int, depth: int, cond: int, step: float = 0.02):
        super().__init__()
        self.raw_step = nn.Parameter(torch.tensor(math.log(math.expm1(step))))
        self.hidden = nn.ModuleList([_FiLMConv(9 if i == 0 else width, width, cond) for i in range(depth)])
        self.out = nn.Conv2d(width, 3, 3, padding=1, padding_mode="replicate")
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, y: Tensor, ctx: FlexContext) -> Tensor:
        g = ctx.gradient(y)
        z = ctx.condition()
        h = torch.cat([y, g, ctx.targets.image], dim=-1).permute(0, 3, 1, 2)
        for layer in self.hidden:
            h = layer(h, z)
        d = self.out(h).permute(0, 2, 3, 1)
        return y - F.softplus(self.raw_step) * g - 0.1 * d


class FlexibleSolver(nn.Module):
    """K learned steps (the core's :class:`~facerig.energy.Unrolled`) for the style energy.

    Args:
        n_steps: K; width, depth: of every step's CNN; n_layers: number of style layers (the size
            of the per-layer weights); step: initial gradient step of each layer.

    ``solver(ctx, steps=None) -> (B, H, W, 3)``: runs the first ``steps`` (default all) learned
    steps from the content image; the output is clamped to [0, 1]. Use :meth:`solve` for the
    plain interface.
    """

    def __init__(self, n_steps: int = 4, width: int = 24, depth: int = 2, n_layers: int = 4, step: float = 0.02):
        super().__init__()
        cond = 1 + 2 * n_layers
        self.unrolled = Unrolled.from_factory(lambda k: FlexStep(width, depth, cond, step), n_steps,
                                              init=lambda ctx: ctx.targets.image.clone())
        self.config = {"n_steps": n_steps, "width": width, "depth": depth, "n_layers": n_layers, "step": step}

    @property
    def n_steps(self) -> int:
        return len(self.unrolled.layers)

    def forward(self, ctx: FlexContext, steps: int | None = None) -> Tensor:
        k = self.n_steps if steps is None else int(steps)
        if not 1 <= k <= self.n_steps:
            raise ValueError(f"steps: expected 1..{self.n_steps}, got {steps}")
        if k == self.n_steps:
            return self.unrolled(ctx).clamp(0, 1)
        y = ctx.targets.image.clone()
        for layer in list(self.unrolled.layers)[:k]:
            y = layer(y, ctx)
        return y.clamp(0, 1)

    def context(self, energy: StyleEnergy, targets: StyleTargets, intensity=1.0, layer_weights=None,
                mask: Tensor | None = None, grad_size: int | None = None, style=None, mix=None) -> FlexContext:
        """Build the :class:`FlexContext` of a problem.

        Args:
            energy, targets: the energy and :meth:`StyleEnergy.targets` (content ``(B, H, W, 3)``).
            intensity: a number or ``(B,)``.
            layer_weights: ``{layer: w}`` or ``(B, L)`` (default the energy's).
            mask: ``(B, H, W)`` where the style applies.
            grad_size: longer side of the gradient evaluation (None: full resolution); the
                content targets are recomputed at that size, the Gram matrices are kept.
        """
        c = targets.image
        B = c.shape[0]
        inten = torch.as_tensor(intensity, dtype=c.dtype, device=c.device).reshape(-1).expand(B).clone()
        if layer_weights is None:
            layer_weights = energy.layer_weights
        if isinstance(layer_weights, dict):
            lw = energy._layer_weights(layer_weights)
            layer_weights = torch.tensor([[lw[n] for n in energy.style_layers]], dtype=c.dtype).expand(B, -1)
        lw = energy._layer_weights(layer_weights).to(c)
        if lw.shape[1] != self.config["n_layers"]:
            raise ValueError(f"layer_weights: this solver was trained with {self.config['n_layers']} style layers")
        gt, gs = None, None
        if grad_size is not None and grad_size < max(c.shape[1:3]):
            gs = fit_size(c.shape[1:3], grad_size)
            gt = energy.targets(resize_image(c, gs), grams=targets.grams)
        return FlexContext(energy, targets, inten, lw, mask, gt, gs)

    def solve(self, energy: StyleEnergy, targets: StyleTargets, steps: int | None = None, **kwargs) -> Tensor:
        """Stylise: ``(B, H, W, 3)`` in [0, 1] (keyword arguments: :meth:`context`; no gradient kept)."""
        ctx = self.context(energy, targets, **kwargs)
        with torch.no_grad():
            return self(ctx, steps)


def train_flexible(solver: FlexibleSolver, energy: StyleEnergy, batches, *, steps: int = 1000, lr: float = 1e-3,
                   seed: int = 0, log_every: int = 25, progress: bool = False, checkpoint=None, resume: bool = False,
                   callback=None, grad_clip: float | None = 1.0, intermediate: float = 0.5) -> TrainResult:
    """Train the solver on many problems with the core's :func:`~facerig.energy.train` (unsupervised).

    Args:
        batches: an iterable of dict batches ``{"content": (B, H, W, 3), "grams": {layer: (B, C, C)},
            "intensity": (B,), "layer_weights": (B, L)}`` (e.g. :class:`facerig.style.training.StyleBatches`).
        steps, lr, seed, log_every, progress, checkpoint, resume, callback, grad_clip: see
            :func:`facerig.energy.train`.
        intermediate: weight of the intermediate steps' energies in the loss.

    The loss of a batch is ``mean_b E(y_K) + intermediate * mean_{k<K} mean_b E(y_k)`` with the
    batch's own weights: the last step's energy, and the intermediate steps' (through the
    first-order surrogate of :class:`FlexContext`, free: the next step computes their gradient
    anyway), so that fewer steps (``steps=k``) also give good results.
    """

    def batch_loss(net, batch, modes):
        tg = energy.targets(batch["content"], grams=batch["grams"])
        ctx = net.context(energy, tg, batch["intensity"], batch["layer_weights"], grad_size=batch.get("grad_size"))
        ctx.surrogate = []
        y = net(ctx)
        B = y.shape[0]
        loss = energy(y, tg, ctx.intensity, ctx.layer_weights).mean()
        if intermediate > 0 and ctx.surrogate:
            loss = loss + intermediate * sum(ctx.surrogate) / (len(ctx.surrogate) * B)
        return {"unsupervised": loss}

    problem = Problem(energy=lambda x, y: None, batch_loss=batch_loss)
    return train(solver, problem, batches, mode="unsupervised", steps=steps, lr=lr, seed=seed, log_every=log_every,
                 progress=progress, checkpoint=checkpoint, resume=resume, callback=callback, grad_clip=grad_clip)


def save_flexible(path: str | os.PathLike, solver: FlexibleSolver, meta: dict | None = None) -> Path:
    """Write the solver (half-precision weights, configuration, ``meta``) atomically."""
    return save_network(path, solver, "facerig.style.flexible", config=solver.config, extra={"meta": meta or {}})


def load_flexible(path: str | os.PathLike) -> FlexibleSolver:
    """Read a solver written by :func:`save_flexible` (float32, eval mode)."""
    return load_network(path, "facerig.style.flexible", FlexibleSolver, what="facerig flexible style solver",
                        hint="train one with tools/train_style.py flexible", arg="model", weights_only=False)
