"""Atomic file writes (and image files written atomically), shared by the whole library.

Every file facerig writes goes through :func:`atomic_write`: the data is written to a temporary
file in the destination folder and renamed over the destination, so a reader never sees a
half-written file and an interrupted run never destroys an older result.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["atomic_open", "atomic_path", "atomic_write", "write_image"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager giving a temporary path beside ``path``; on success it is renamed to ``path``.

    Use it with writers that want a file name (``np.savez``, ``torch.save``, trimesh exporters).
    The temporary name keeps the destination's suffix so format-sniffing writers still work. On
    an exception the temporary file is removed and ``path`` is left untouched. Parent folders are
    created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs):
    """Open a temporary file beside ``path`` for writing (``mode`` "w" or "wb", ``kwargs`` passed
    to :func:`open`); it replaces ``path`` only when the ``with`` block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or str encoded as UTF-8) to ``path`` atomically; returns the path."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_image(path: str | os.PathLike, image) -> Path:
    """Write an RGB(A) or grayscale image atomically; the format follows the suffix (.png, .jpg).

    Args:
        image: (H, W), (H, W, 3) or (H, W, 4) array or tensor; uint8, or float in [0, 1]
            (clipped and rounded). Channels are RGB(A).
    """
    import cv2

    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"image: expected (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
    suffix = Path(path).suffix.lower() or ".png"
    ok, buf = cv2.imencode(suffix, np.ascontiguousarray(arr))
    if not ok:
        raise ValueError(f"path: OpenCV cannot encode images as {suffix!r}; use .png or .jpg")
    return atomic_write(path, buf.tobytes())
