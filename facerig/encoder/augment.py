"""Photo degradations for training the encoder on real crops: what real photos do to a face.

The hidden real-face benchmark has faces 30-100 px wide, brought up to the encoder's crop size
(:func:`facerig.landmarks.square_crop` upsamples them), often blurred, JPEG-compressed, noisy and
colour-cast. :func:`degrade_photo` imitates that on a crop whose face is large: it shrinks the crop
(area interpolation, as a camera integrates), blurs, adds noise, JPEG-compresses *at the small size*
and brings it back up (bilinear, as inference does), then applies a colour cast. The geometry of
the crop is unchanged (same side, same pixel grid), so its landmarks and camera stay exact.

:func:`split_by_video` holds data out by video (never by frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DegradeOptions", "degrade_photo", "split_by_video"]


@dataclass
class DegradeOptions:
    """Probabilities and ranges of :func:`degrade_photo`.

    ``low_res``: probability of the shrink-and-enlarge; ``low_res_side``: (min, max) side in px the
    crop is shrunk to (log-uniform; a crop of side S with the default 0.25 margin holds a face about
    S / 1.5 wide, so 40-128 px sides are faces of ~27-85 px); ``blur``/``blur_sigma``: Gaussian blur
    (sigma in px of the small image); ``noise``/``noise_sigma``: Gaussian noise (sigma in 0-255 units);
    ``jpeg``/``jpeg_quality``: JPEG re-compression (quality 1-100); ``cast``/``cast_gain``/``gamma``:
    colour cast (per-channel gain ~ N(1, cast_gain), clipped to 0.7-1.3) and a gamma in the range.
    """

    low_res: float = 0.5
    low_res_side: tuple = (40.0, 128.0)
    blur: float = 0.25
    blur_sigma: tuple = (0.3, 1.2)
    noise: float = 0.3
    noise_sigma: tuple = (1.0, 8.0)
    jpeg: float = 0.35
    jpeg_quality: tuple = (25, 85)
    cast: float = 0.5
    cast_gain: float = 0.1
    gamma: tuple = (0.8, 1.25)


def degrade_photo(image: np.ndarray, rng: np.random.Generator, options: DegradeOptions | None = None) -> np.ndarray:
    """A randomly degraded copy of a crop (see the module docstring).

    Args:
        image: (S, S, 3) uint8 RGB (any H x W works; the output has the same shape).
        rng: numpy random generator (every random choice is drawn from it: same seed, same result).
        options: :class:`DegradeOptions` (default: its defaults).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    import cv2

    o = options or DegradeOptions()
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image: expected an (H, W, 3) uint8 array, got {img.dtype} {img.shape}")
    H, W = img.shape[:2]
    out = np.ascontiguousarray(img)
    small = False
    if rng.random() < o.low_res:
        lo, hi = o.low_res_side
        side = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        s = side / max(H, W)
        if s < 0.95:
            out = cv2.resize(out, (max(4, round(W * s)), max(4, round(H * s))), interpolation=cv2.INTER_AREA)
            small = True
    if rng.random() < o.blur:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(*o.blur_sigma)))
    if rng.random() < o.noise:
        sigma = float(rng.uniform(*o.noise_sigma))
        out = np.clip(out.astype(np.float32) + rng.normal(0.0, sigma, out.shape).astype(np.float32), 0, 255)
        out = np.round(out).astype(np.uint8)
    if rng.random() < o.jpeg:
        q = int(rng.integers(o.jpeg_quality[0], o.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    if small:
        out = cv2.resize(np.ascontiguousarray(out), (W, H), interpolation=cv2.INTER_LINEAR)
    if rng.random() < o.cast:
        gain = np.clip(rng.normal(1.0, o.cast_gain, 3), 0.7, 1.3).astype(np.float32)
        gamma = float(rng.uniform(*o.gamma))
        f = (out.astype(np.float32) / 255.0) ** gamma * gain
        out = np.round(np.clip(f, 0, 1) * 255).astype(np.uint8)
    return np.ascontiguousarray(out)


def split_by_video(sources, held_out) -> tuple[np.ndarray, np.ndarray]:
    """Indices of items to train on and to hold out, split by source video (never by frame).

    Args:
        sources: sequence of N source paths (or names), one per item (e.g.
            ``[ds.info(i)["source"] for i in range(len(ds))]`` of a
            :class:`facerig.encoder.data.PreparedFaces`).
        held_out: video names to hold out: file stems (``"franck"``) or full names / paths.

    Returns:
        ``(train, held)`` int64 index arrays; every source is entirely in one of them.

    Raises:
        ValueError: a held-out name matches no source (a typo would otherwise hold out nothing).
    """
    names = [str(s) for s in sources]
    want = {str(h) for h in held_out}
    keys = [{n, Path(n).name, Path(n).stem} for n in names]
    held = np.array([bool(k & want) for k in keys], bool)
    unknown = sorted(w for w in want if not any(w in k for k in keys))
    if unknown:
        raise ValueError(f"held_out: {unknown} match no source (sources: {sorted({Path(n).stem for n in names})})")
    idx = np.arange(len(names), dtype=np.int64)
    return idx[~held], idx[held]
