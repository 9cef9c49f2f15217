"""Images for style transfer: reading files or bundled pictures, resizing, and procedural training styles.

Every image is a channels-last float32 RGB tensor in [0, 1]: ``(H, W, 3)`` (one) or ``(B, H, W, 3)``.

Bundled pictures (offline, shipped with installed packages) are named ``skimage:NAME`` (a function
of :mod:`skimage.data`, e.g. ``skimage:astronaut``) or ``mpl:FILE`` (matplotlib's sample data,
e.g. ``mpl:grace_hopper.jpg``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["load_image", "resize_image", "fit_size", "procedural_style", "TRAIN_STYLES", "HELDOUT_STYLES",
           "TRAIN_CONTENT", "HELDOUT_CONTENT"]

#: Real pictures used as training styles of the flexible solver (besides procedural ones).
TRAIN_STYLES = ("skimage:chelsea", "skimage:rocket", "skimage:brick", "skimage:grass", "skimage:text",
                "skimage:colorwheel", "skimage:retina", "skimage:coins", "skimage:moon")
#: Real pictures never used in training: the benchmark's styles.
HELDOUT_STYLES = ("skimage:hubble_deep_field", "skimage:immunohistochemistry", "skimage:gravel")
#: Photographs used as training content (with video frames).
TRAIN_CONTENT = ("skimage:camera", "skimage:chelsea", "skimage:rocket", "skimage:stereo_motorcycle",
                 "skimage:clock", "mpl:grace_hopper.jpg")
#: Photographs never used in training: the benchmark's contents.
HELDOUT_CONTENT = ("skimage:astronaut", "skimage:coffee")


def _bundled(name: str) -> np.ndarray:
    kind, _, key = name.partition(":")
    if kind == "skimage":
        import skimage.data

        fn = getattr(skimage.data, key, None)
        if fn is None or not callable(fn) or key.startswith("_"):
            raise ValueError(f"image: {name!r} is not a picture of skimage.data (e.g. 'skimage:astronaut')")
        img = fn()
        return np.asarray(img[0] if isinstance(img, tuple) else img)
    if kind == "mpl":
        import matplotlib.cbook

        try:
            path = matplotlib.cbook.get_sample_data(key, asfileobj=False)
        except (ValueError, OSError) as err:
            raise ValueError(f"image: {name!r} is not in matplotlib's sample data") from err
        from facerig.io import load_image as _read

        return _read(path)
    raise ValueError(f"image: unknown bundled source {kind!r} in {name!r}; use 'skimage:NAME' or 'mpl:FILE'")


def load_image(source, size: int | None = None) -> Tensor:
    """Read an image as an ``(H, W, 3)`` float32 RGB tensor in [0, 1].

    Args:
        source: a file path, a bundled picture name (``"skimage:NAME"``, ``"mpl:FILE"``), an
            ``(H, W)`` / ``(H, W, 3|4)`` array or tensor (uint8, or float in [0, 1]).
        size: when given, resize so the longer side is ``size`` pixels (aspect kept).

    Raises:
        ValueError: the file does not exist or cannot be decoded (the message names it), or the
            array has the wrong shape.
    """
    if isinstance(source, (str, os.PathLike)) and not (isinstance(source, str) and ":" in source
                                                        and not Path(source).exists()):
        from facerig.io import load_image as _read

        arr = _read(source)
    elif isinstance(source, str):
        arr = _bundled(source)
    else:
        arr = source.detach().cpu().numpy() if isinstance(source, Tensor) else np.asarray(source)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image: expected (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    if arr.shape[2] == 4:
        a = arr[..., 3:].astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
        rgb = arr[..., :3].astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
        arr = rgb * a + (1.0 - a)  # composite on white
    elif arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    img = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).clamp(0, 1)
    if size is not None:
        img = resize_image(img, fit_size(img.shape[:2], size))
    return img


def fit_size(shape, size: int) -> tuple[int, int]:
    """``(h, w)`` with the longer side ``size`` and the aspect ratio of ``shape = (H, W)``."""
    H, W = int(shape[0]), int(shape[1])
    s = size / max(H, W)
    return max(1, round(H * s)), max(1, round(W * s))


def resize_image(image: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Resize ``(H, W, C)`` or ``(B, H, W, C)`` images (bilinear, antialiased when shrinking).

    Args:
        size: the output side (square) or ``(h, w)``.
    """
    single = image.dim() == 3
    x = image[None] if single else image
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if tuple(x.shape[1:3]) != (h, w):
        x = F.interpolate(x.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False,
                          antialias=h < x.shape[1] or w < x.shape[2]).permute(0, 2, 3, 1)
    return x[0] if single else x


def procedural_style(size: int, generator: torch.Generator) -> Tensor:
    """A random painting-like texture ``(size, size, 3)`` in [0, 1]: a training style.

    A random palette of 2-5 colours is laid out by smooth multi-scale noise, then overdrawn with
    oriented strokes (elongated Gaussian blobs of a palette colour) and sometimes stripes or dots,
    so that the styles vary in colour, scale, orientation and texture.
    """
    g = generator
    k = int(torch.randint(2, 6, (1,), generator=g))
    palette = torch.rand(k, 3, generator=g)
    if float(torch.rand((), generator=g)) < 0.3:  # a dark / light contrast palette
        palette[0] = palette[0] * 0.2
        palette[-1] = 1.0 - 0.2 * palette[-1]
    # smooth noise at a random scale -> palette index field
    cells = int(torch.randint(2, 12, (1,), generator=g))
    noise = torch.rand(1, k, cells, cells, generator=g)
    field = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)[0]
    sharp = float(torch.empty(()).uniform_(2.0, 20.0, generator=g))
    wts = torch.softmax(field * sharp, dim=0)  # (k, S, S)
    img = torch.einsum("kij,kc->ijc", wts, palette)
    # strokes
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    n = int(torch.randint(20, 120, (1,), generator=g))
    base_angle = float(torch.rand((), generator=g)) * math.pi
    spread = float(torch.rand((), generator=g)) * math.pi
    length = float(torch.empty(()).uniform_(0.02, 0.15, generator=g)) * size
    for _ in range(n):
        cy, cx = (torch.rand(2, generator=g) * size).tolist()
        a = base_angle + (float(torch.rand((), generator=g)) - 0.5) * spread
        L = length * float(torch.empty(()).uniform_(0.5, 1.5, generator=g))
        Wd = L * float(torch.empty(()).uniform_(0.08, 0.35, generator=g))
        dy, dx = yy - cy, xx - cx
        u = dx * math.cos(a) + dy * math.sin(a)
        v = -dx * math.sin(a) + dy * math.cos(a)
        blob = torch.exp(-0.5 * ((u / L) ** 2 + (v / Wd) ** 2))[..., None]
        col = palette[int(torch.randint(k, (1,), generator=g))] * float(torch.empty(()).uniform_(0.7, 1.2, generator=g))
        img = img * (1 - 0.9 * blob) + 0.9 * blob * col
    r = float(torch.rand((), generator=g))
    if r < 0.25:  # stripes
        freq = float(torch.empty(()).uniform_(4, 30, generator=g)) * 2 * math.pi / size
        a = float(torch.rand((), generator=g)) * math.pi
        s = 0.5 + 0.5 * torch.sin(freq * (xx * math.cos(a) + yy * math.sin(a)))
        img = img * (0.6 + 0.4 * s[..., None])
    elif r < 0.45:  # dots
        step = int(torch.randint(6, 24, (1,), generator=g))
        d = ((yy % step - step / 2) ** 2 + (xx % step - step / 2) ** 2).sqrt()
        img = img * (0.5 + 0.5 * (d > step / 4).float()[..., None])
    return img.clamp(0, 1)
