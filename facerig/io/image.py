"""Image input for the whole library: every accepted form -> ``(H, W, 3)`` uint8 RGB.

Accepted inputs (see :func:`as_rgb_uint8`):

* NumPy ``(H, W, 3)`` uint8 RGB (returned as is, made C-contiguous),
* NumPy ``(H, W)`` or ``(H, W, 1)`` grayscale (replicated to three channels),
* NumPy ``(H, W, 4)`` RGBA (the alpha channel is dropped, colours are *not* premultiplied),
* float NumPy arrays in [0, 1] with any of the shapes above (scaled by 255 and rounded),
* a torch tensor ``(H, W, C)`` or ``(1, H, W, C)`` (C in 1, 3, 4), float in [0, 1] or uint8
  (moved to the CPU and detached),
* a path (``str`` / ``os.PathLike``) to any file OpenCV can decode (read as RGB, EXIF orientation
  applied by OpenCV).

Pixel convention used by the whole package: x to the right, y down, in pixels, the centre of
the pixel in row ``i``, column ``j`` is at ``(j + 0.5, i + 0.5)``; the image covers
``[0, W] x [0, H]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["ImageReadError", "load_image", "as_rgb_uint8", "resize_max_side"]


class ImageReadError(ValueError):
    """An image file is missing, unreadable, corrupt or in a format OpenCV cannot decode."""


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB.

    Raises :class:`ImageReadError` (a ``ValueError``) naming the file when it does not exist,
    is a folder, or cannot be decoded (corrupt, truncated, not an image).
    """
    import cv2

    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"image file {str(p)!r} does not exist")
    if not p.is_file():
        raise ImageReadError(f"image path {str(p)!r} is not a file")
    try:
        buf = np.fromfile(str(p), dtype=np.uint8)  # works with non-ASCII paths, unlike cv2.imread
    except OSError as err:
        raise ImageReadError(f"cannot read image file {str(p)!r}: {err}") from err
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None or bgr.size == 0:
        raise ImageReadError(
            f"cannot decode image file {str(p)!r}: it is empty, corrupt or not an image format "
            "OpenCV can read (PNG, JPEG, BMP, TIFF, WebP, ...)"
        )
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _float_to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ValueError(
            f"{name} is a float image with values in [{lo:.3g}, {hi:.3g}]; expected values in [0, 1] "
            "(or pass uint8 in [0, 255])"
        )
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def as_rgb_uint8(image, name: str = "image") -> np.ndarray:
    """Convert any accepted image form (see module docstring) to C-contiguous ``(H, W, 3)`` uint8 RGB.

    Raises ``TypeError`` for unsupported types, ``ValueError`` for bad shapes / value ranges, and
    :class:`ImageReadError` for unreadable files.
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    mod = type(image).__module__
    if mod.startswith("torch"):
        t = image.detach().cpu()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError(f"{name}: a batched tensor must have B == 1, got shape {tuple(t.shape)}")
            t = t[0]
        image = t.numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"{name} must be a NumPy array, a torch tensor or a path, got {type(image).__name__}"
        )
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(
            f"{name} must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (channels last), "
            f"got {arr.shape}"
        )
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    if arr.dtype == np.uint8:
        pass
    elif np.issubdtype(arr.dtype, np.floating):
        arr = _float_to_uint8(arr.astype(np.float32, copy=False), name)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    else:
        raise ValueError(f"{name} must be uint8 in [0, 255] or float in [0, 1], got dtype {arr.dtype}")
    return np.ascontiguousarray(arr)


def resize_max_side(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float, float]:
    """Downscale ``image`` (area interpolation) so that its longer side is at most ``max_side``.

    Returns ``(small, sx, sy)`` where ``sx = W / W_small`` and ``sy = H / H_small``: a point
    ``(x, y)`` of ``small`` (pixel-centre convention) is ``(x * sx, y * sy)`` in ``image``.
    Images already small enough are returned unchanged with ``sx = sy = 1``.
    """
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image, 1.0, 1.0
    import cv2

    s = max_side / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    return small, w / nw, h / nh
