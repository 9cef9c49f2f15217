"""The learned inverse: up-convolutional decoders features -> image (Dosovitskiy & Brox 2016).

One small decoder per layer maps a layer's channels-last features ``(B, h, w, C)`` back to the
image ``(B, H, W, 3)`` with ``H = h * 2^k`` (``k`` the layer's number of poolings): a 1x1
convolution, then ``k`` up-convolutions (4x4 transposed convolution, stride 2) each followed by a
3x3 convolution, then a 3x3 convolution to RGB and a sigmoid. The decoders are trained
self-supervised with the core's :func:`facerig.energy.train`: draw photographs ``y`` (random crops,
the prior), synthesise their features ``x = phi(y)``, regress ``y`` from ``x`` (mean squared error in
image space). One forward pass of the feature network serves every layer's decoder at each step.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facerig.energy import Problem, TrainResult, feature_loss, train
from facerig.io import read_network, save_network

__all__ = ["UpconvDecoder", "LearnedInverse", "train_learned_inverse", "load_learned_inverse",
           "DEFAULT_INVERSE"]

DEFAULT_INVERSE = "inversion_vgg16.pt"
"""File name of the shipped learned inverse of :class:`~facerig.features.VGG16Features` in ``assets/``."""
_FORMAT = "facerig-learned-inverse-1"


class UpconvDecoder(nn.Module):
    """Features ``(B, h, w, C)`` -> image ``(B, h * 2^k, w * 2^k, 3)`` in [0, 1].

    Args:
        in_channels: ``C``.
        upsample: ``k``, the number of 2x up-convolutions (the layer's number of poolings).
        width: hidden channels at the features' resolution; halved at each up-convolution, down to
            ``min_width`` (the cost per pixel falls as the resolution grows).
        min_width: the narrowest hidden layer.
        in_scale: the features are multiplied by this first (about 1 / their RMS).
    """

    def __init__(self, in_channels: int, upsample: int, width: int = 64, min_width: int = 16, in_scale: float = 1.0):
        super().__init__()
        if in_channels < 1 or upsample < 0 or width < 1 or min_width < 1:
            raise ValueError(f"in_channels, upsample, width, min_width: expected >= 1, >= 0, >= 1, >= 1, got "
                             f"{in_channels}, {upsample}, {width}, {min_width}")
        self.in_channels, self.upsample, self.width = int(in_channels), int(upsample), int(width)
        self.register_buffer("in_scale", torch.tensor(float(in_scale)))
        w = int(width)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, w, 1), nn.LeakyReLU(0.2),
                                   nn.Conv2d(w, w, 3, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(upsample):
            w2 = max(int(min_width), w // 2)
            layers += [nn.ConvTranspose2d(w, w2, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                       nn.Conv2d(w2, w2, 3, padding=1), nn.LeakyReLU(0.2)]
            w = w2
        layers.append(nn.Conv2d(w, 3, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() != 4 or features.shape[-1] != self.in_channels:
            raise ValueError(f"features: expected (B, h, w, {self.in_channels}), got shape {tuple(features.shape)}")
        x = features.permute(0, 3, 1, 2) * self.in_scale
        return torch.sigmoid(self.body(x)).permute(0, 2, 3, 1)


class LearnedInverse(nn.Module):
    """Decoders for several layers of a feature network: ``forward({name: features}) -> {name: image}``.

    Args:
        channels: ``{layer: C}`` of the layers to invert (e.g. ``VGG16Features.channels``).
        downsampling: ``{layer: factor}`` (a power of two; ``VGG16Features.downsampling``).
        width: hidden channels of every decoder, or ``{layer: width}``.
        features_info: metadata stored with the weights (which feature network they invert).

    Features are ``(B, h, w, C)`` channels-last (as :class:`~facerig.features.VGG16Features` returns
    them); images ``(B, h * factor, w * factor, 3)`` RGB in [0, 1]. Layers absent from the input dict
    are skipped.
    """

    def __init__(self, channels: dict[str, int], downsampling: dict[str, int], width: int | dict = 64,
                 features_info: dict | None = None):
        super().__init__()
        if set(channels) != set(downsampling) or not channels:
            raise ValueError("channels, downsampling: expected the same non-empty set of layers")
        self.layers = tuple(channels)
        self.config = {"channels": dict(channels), "downsampling": dict(downsampling),
                       "width": width if isinstance(width, int) else dict(width)}
        self.features_info = dict(features_info or {})
        self.decoders = nn.ModuleDict()
        for n in self.layers:
            k = int(round(math.log2(downsampling[n])))
            if 2 ** k != downsampling[n]:
                raise ValueError(f"downsampling: {n}'s factor {downsampling[n]} is not a power of two")
            w = width if isinstance(width, int) else width[n]
            self.decoders[n] = UpconvDecoder(channels[n], k, w)

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        unknown = [n for n in features if n not in self.decoders]
        if unknown:
            raise ValueError(f"features: no decoder for layer(s) {unknown}; this inverse has {list(self.layers)}")
        return {n: self.decoders[n](f) for n, f in features.items()}

    def save(self, path: str | os.PathLike, half: bool = True) -> None:
        """Write the decoders (float16 by default: half the file) and their configuration atomically."""
        save_network(path, self, _FORMAT, key="format", config=self.config, extra={"features": self.features_info},
                     half=half)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LearnedInverse:
        """Read a file written by :meth:`save` (weights back in float32)."""
        blob = read_network(path, _FORMAT, key="format", what=f"facerig learned inverse ({_FORMAT})",
                            hint="tools/train_inversion.py makes it")
        net = cls(features_info=blob["features"], **blob["config"])
        net.load_state_dict(blob["state"])
        return net.eval()


def load_learned_inverse(path: str | os.PathLike | None = None) -> LearnedInverse:
    """The shipped learned inverse of VGG16 (``assets/inversion_vgg16.pt``), or one from ``path``."""
    if path is None:
        from facerig.assets import asset_path

        path = asset_path(DEFAULT_INVERSE, missing_hint="Train it with tools/train_inversion.py.")
    return LearnedInverse.load(path)


class _Stacked(nn.Module):
    """``features dict -> (B, L, H, W, 3)``: every decoder's image, stacked (the training network)."""

    def __init__(self, inverse: LearnedInverse):
        super().__init__()
        self.inverse = inverse

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        out = self.inverse(features)
        return torch.stack([out[n] for n in self.inverse.layers], dim=1)


def train_learned_inverse(
    features,
    sampler,
    layers: Sequence[str] | None = None,
    *,
    width: int | dict = 64,
    steps: int = 2000,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    log_every: int = 50,
    checkpoint=None,
    resume: bool = False,
    progress: bool = True,
    callback=None,
) -> tuple[LearnedInverse, TrainResult]:
    """Train one up-convolutional decoder per layer, self-supervised, with :func:`facerig.energy.train`.

    The problem: the code ``y`` is an image drawn by ``sampler`` (the prior), the observation is
    its features ``x = features(y)`` (the forward model), and each decoder regresses ``y`` from
    its layer of ``x`` (mean squared error; the decoders' losses are averaged).

    Args:
        features: the feature network ``(B, H, W, 3) -> {name: (B, h, w, C)}`` (frozen), e.g.
            ``VGG16Features(layers)``; it must have ``channels`` and ``downsampling`` dicts.
        sampler: ``(n, generator) -> (n, H, W, 3)`` training images (e.g. a
            :class:`~facerig.inversion.data.CropSampler`).
        layers: the layers to invert (default: all of ``features.layers``).
        width: decoders' hidden channels (one number or ``{layer: width}``).
        steps, batch_size, lr, seed, log_every, checkpoint, resume, progress, callback: as
            :func:`facerig.energy.train` (cosine learning-rate schedule, 100 warm-up steps).

    Returns:
        ``(inverse, result)``: the trained :class:`LearnedInverse` (eval mode) and the
        :class:`~facerig.energy.TrainResult`.
    """
    layers = tuple(features.layers if layers is None else layers)
    missing = [n for n in layers if n not in features.layers]
    if missing:
        raise ValueError(f"layers: {missing} are not computed by the feature network ({list(features.layers)})")
    info = {"network": type(features).__name__, "source": Path(str(getattr(features, "source", ""))).name,
            "layers": list(layers)}
    inverse = LearnedInverse({n: features.channels[n] for n in layers},
                             {n: features.downsampling[n] for n in layers}, width, info)
    # input scale: 1 / RMS of each layer's features on a batch of training images
    with torch.no_grad():
        probe = features(sampler(16, torch.Generator().manual_seed(seed + 1)))
        for n in layers:
            rms = float(probe[n].square().mean().sqrt())
            inverse.decoders[n].in_scale.fill_(1.0 / max(rms, 1e-6))

    def synthesize(y: Tensor) -> dict[str, Tensor]:
        f = features(y)
        return {n: f[n] for n in layers}

    def energy(x: dict[str, Tensor], y: Tensor) -> Tensor:
        # the inversion energy of the decoded images (reporting only: the self-supervised mode
        # regresses images): mean over layers of the normalised feature error
        errs = [feature_loss({n: features(y[:, i])[n]}, {n: x[n]}) for i, n in enumerate(layers)]
        return torch.stack(errs).mean(dim=0)

    problem = Problem(
        energy=energy,
        synthesize=synthesize,
        sample_prior=sampler,
        code_loss=lambda pred, y: F.mse_loss(pred, y[:, None].expand_as(pred)),
    )
    net = _Stacked(inverse)
    result = train(net, problem, mode="self_supervised", steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                   log_every=log_every, checkpoint=checkpoint, resume=resume, progress=progress,
                   callback=callback, lr_schedule="cosine", warmup=min(100, steps // 10))
    return inverse.eval(), result
