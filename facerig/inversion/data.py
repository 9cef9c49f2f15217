"""Photographs for feature inversion: scikit-image's bundled images (offline), as RGB tensors.

The learned inverses are trained on :data:`TRAIN_IMAGES` (random crops, scales and flips) and
benchmarked on :data:`HELDOUT_IMAGES`, which training never sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TRAIN_IMAGES", "HELDOUT_IMAGES", "load_photo", "resize_image", "CropSampler"]

#: scikit-image photographs the learned inverses are trained on (gray ones are repeated to RGB).
TRAIN_IMAGES = ("chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle",
                "colorwheel", "camera", "coins", "moon", "clock", "brick", "grass", "gravel", "text", "page")
#: held-out photographs for the benchmark and the README (never in training).
HELDOUT_IMAGES = ("astronaut", "coffee")


def load_photo(name: str) -> Tensor:
    """A bundled scikit-image photograph as an ``(H, W, 3)`` float32 RGB tensor in [0, 1].

    ``name`` is a function of :mod:`skimage.data` (e.g. ``"astronaut"``); gray images are repeated
    to three channels, RGBA is composited on white, stereo pairs give their left image.
    """
    import numpy as np
    import skimage.color
    import skimage.data
    import skimage.util

    loader = getattr(skimage.data, str(name), None)
    if loader is None or not callable(loader):
        raise ValueError(f"name: expected an image of skimage.data (e.g. 'astronaut'), got {name!r}")
    img = loader()
    if isinstance(img, tuple):
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 4:
        img = skimage.color.rgba2rgb(img)
    img = skimage.util.img_as_float32(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))


def resize_image(image: Tensor, size: int | tuple[int, int], crop: bool = True) -> Tensor:
    """Resize an ``(H, W, C)`` or ``(B, H, W, C)`` image with antialiasing.

    Args:
        image: float image(s), channels-last.
        size: the output side (square) or ``(height, width)``.
        crop: first cut the largest centred crop of the output's aspect ratio (else stretch).

    Returns:
        ``(h, w, C)`` or ``(B, h, w, C)``, values clamped to the input's range.
    """
    single = image.dim() == 3
    x = image[None] if single else image
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if crop:
        H, W = x.shape[1:3]
        s = min(H / h, W / w)
        ch, cw = int(round(h * s)), int(round(w * s))
        top, left = (H - ch) // 2, (W - cw) // 2
        x = x[:, top:top + ch, left:left + cw]
    y = F.interpolate(x.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    y = y.permute(0, 2, 3, 1).clamp(float(image.min()), float(image.max()))
    return y[0] if single else y


class CropSampler:
    """Random square crops of photographs, resized to ``size``: the prior of self-supervised training.

    Each sample picks an image uniformly, a crop side uniform in ``[min_frac, 1]`` of the image's
    shorter side, a uniform position and a random horizontal flip.

    Args:
        images: ``(H, W, 3)`` tensors (e.g. :func:`load_photo`); each is first shrunk so its shorter
            side is at most ``4 * size`` (faster crops).
        size: output side in pixels.
        min_frac: the smallest crop, as a fraction of the shorter side.

    ``sampler(n, generator) -> (n, size, size, 3)`` float32 in [0, 1] (the signature of
    :attr:`facerig.energy.Problem.sample_prior`).
    """

    def __init__(self, images: Sequence[Tensor], size: int = 64, min_frac: float = 0.3):
        if not images:
            raise ValueError("images: give at least one (H, W, 3) image")
        if not 0 < min_frac <= 1:
            raise ValueError(f"min_frac: expected a fraction in (0, 1], got {min_frac}")
        self.size, self.min_frac = int(size), float(min_frac)
        self.images = []
        for im in images:
            if im.dim() != 3 or im.shape[2] != 3:
                raise ValueError(f"images: expected (H, W, 3) tensors, got shape {tuple(im.shape)}")
            short = min(im.shape[:2])
            if short > 4 * size:
                s = 4 * size / short
                im = resize_image(im, (round(im.shape[0] * s), round(im.shape[1] * s)), crop=False)
            self.images.append(im.float().contiguous())

    def __call__(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        out = []
        for _ in range(n):
            im = self.images[int(torch.randint(len(self.images), (1,), generator=generator))]
            H, W = im.shape[:2]
            short = min(H, W)
            lo = max(8, int(self.min_frac * short))
            side = int(torch.randint(lo, short + 1, (1,), generator=generator))
            top = int(torch.randint(H - side + 1, (1,), generator=generator))
            left = int(torch.randint(W - side + 1, (1,), generator=generator))
            crop = resize_image(im[top:top + side, left:left + side], self.size, crop=False)
            if bool(torch.rand((), generator=generator) < 0.5):
                crop = crop.flip(1)
            out.append(crop)
        return torch.stack(out)
