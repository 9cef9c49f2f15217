"""Square face crops that remember how to map points back to the original image.

A crop is an axis-aligned square window of the original image, resampled to ``size x size``
pixels. With the package's pixel convention (pixel centre of column j at ``j + 0.5``), the map
from original to crop coordinates is exactly ``u' = s * u + t`` per axis, where ``s = size / side``
and ``t = -s * (window origin)``. :class:`Crop` keeps this map as a 3x3 matrix and provides
:meth:`Crop.to_crop` / :meth:`Crop.to_original`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facerig.io import as_rgb_uint8

__all__ = ["Crop", "square_crop", "box_of"]

_BORDERS = ("constant", "replicate", "reflect")


@dataclass(frozen=True)
class Crop:
    """A square crop and its transform.

    Attributes
    ----------
    image : (size, size, 3) uint8 RGB (or (size, size, C) with the input's dtype for raw arrays)
    matrix : (3, 3) float64
        Homogeneous map from original pixel coordinates to crop pixel coordinates (both with
        pixel centres at +0.5): ``[u', v', 1] = matrix @ [u, v, 1]``. Its top 2x3 block is the
        same map as an OpenCV affine matrix on *continuous* coordinates.
    box : (4,) float64
        The window ``(x0, y0, x1, y1)`` in original pixels (square; may extend past the image).
    original_size : (int, int)
        ``(H, W)`` of the original image.
    valid : (size, size) bool
        True where the crop pixel's centre lies inside the original image (False: border fill).
    """

    image: np.ndarray
    matrix: np.ndarray
    box: np.ndarray
    original_size: tuple[int, int]
    valid: np.ndarray

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    @property
    def scale(self) -> float:
        """Crop pixels per original pixel."""
        return float(self.matrix[0, 0])

    @property
    def inverse(self) -> np.ndarray:
        """(3, 3) map from crop to original pixel coordinates."""
        return np.linalg.inv(self.matrix)

    def to_crop(self, points) -> np.ndarray:
        """Map original-image points to crop coordinates.

        ``points``: (..., 2) ``(x, y)`` or (..., 3) ``(x, y, z)`` in original pixels; z (a depth in
        pixel units, e.g. Face Mesh's) is multiplied by :attr:`scale`. Returns float64, same shape.
        """
        return _apply(self.matrix, points, self.scale)

    def to_original(self, points) -> np.ndarray:
        """Map crop points back to original-image coordinates (inverse of :meth:`to_crop`)."""
        return _apply(self.inverse, points, 1.0 / self.scale)

    def to_original_image(self, crop_image, interpolation: str = "linear") -> tuple[np.ndarray, np.ndarray]:
        """Warp an image defined on the crop (e.g. a render of a face fitted on the crop) back
        onto the original image's pixel grid.

        ``crop_image``: (size, size) or (size, size, C) NumPy array (uint8 or float; any C).
        ``interpolation``: ``"linear"``, ``"nearest"`` or ``"cubic"``.
        Returns ``(image, mask)``: (H, W[, C]) with the input's dtype (0 outside the crop) and an
        (H, W) bool mask of the original pixels whose centre falls inside the crop window. Blend
        with e.g. ``np.where(mask[..., None], alpha * image + (1 - alpha) * photo, photo)``.
        """
        import cv2

        flags = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC}
        if interpolation not in flags:
            raise ValueError(f"interpolation must be one of {sorted(flags)}, got {interpolation!r}")
        arr = np.asarray(crop_image)
        if arr.shape[:2] != (self.size, self.size) or arr.ndim not in (2, 3):
            raise ValueError(f"crop_image must have shape ({self.size}, {self.size}[, C]), got {arr.shape}")
        h, w = self.original_size
        inv = self.inverse
        # continuous map original <- crop, expressed on pixel indices (centres at integers)
        m_idx = np.array(
            [[inv[0, 0], 0.0, inv[0, 2] + 0.5 * inv[0, 0] - 0.5], [0.0, inv[1, 1], inv[1, 2] + 0.5 * inv[1, 1] - 0.5]]
        )
        work = arr.astype(np.float32) if arr.dtype not in (np.uint8, np.float32, np.float64) else arr
        chans = [work] if work.ndim == 2 or work.shape[2] <= 4 else [work[..., k] for k in range(work.shape[2])]
        outs = [
            cv2.warpAffine(np.ascontiguousarray(c), m_idx, (w, h), flags=flags[interpolation],
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            for c in chans
        ]
        out = outs[0] if len(outs) == 1 else np.stack(outs, axis=-1)
        if arr.ndim == 3 and out.ndim == 2:
            out = out[..., None]
        xs = self.to_crop(np.stack([np.arange(w) + 0.5, np.full(w, 0.5)], axis=1))[:, 0]
        ys = self.to_crop(np.stack([np.full(h, 0.5), np.arange(h) + 0.5], axis=1))[:, 1]
        mask = ((ys >= 0) & (ys <= self.size))[:, None] & ((xs >= 0) & (xs <= self.size))[None, :]
        return out.astype(arr.dtype, copy=False), mask


def _apply(m: np.ndarray, points, zscale: float) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim < 1 or p.shape[-1] not in (2, 3):
        raise ValueError(f"points must have shape (..., 2) or (..., 3), got {p.shape}")
    out = p.copy()
    out[..., 0] = m[0, 0] * p[..., 0] + m[0, 1] * p[..., 1] + m[0, 2]
    out[..., 1] = m[1, 0] * p[..., 0] + m[1, 1] * p[..., 1] + m[1, 2]
    if p.shape[-1] == 3:
        out[..., 2] = p[..., 2] * zscale
    return out


def box_of(target) -> np.ndarray:
    """The ``(x0, y0, x1, y1)`` box of a crop target.

    ``target``: a :class:`~facerig.landmarks.FaceLandmarks` (its landmark box), a
    :class:`~facerig.landmarks.FaceDetection` (its box), a (4,) box, or (N, 2|3) points (their
    bounding box).
    """
    box = getattr(target, "box", None)
    if box is not None:
        return np.asarray(box, dtype=np.float64)
    arr = np.asarray(target, dtype=np.float64)
    if arr.shape == (4,):
        b = arr
    elif arr.ndim == 2 and arr.shape[1] in (2, 3) and arr.shape[0] >= 1:
        b = np.array([arr[:, 0].min(), arr[:, 1].min(), arr[:, 0].max(), arr[:, 1].max()])
    else:
        raise ValueError(
            "landmarks_or_box must be FaceLandmarks, FaceDetection, a (4,) box (x0, y0, x1, y1) or "
            f"(N, 2|3) points; got an array of shape {arr.shape}"
        )
    if not np.all(np.isfinite(b)) or b[2] < b[0] or b[3] < b[1]:
        raise ValueError(f"landmarks_or_box gives an invalid box {b.tolist()} (need x0 <= x1, y0 <= y1)")
    return b


def square_crop(
    image,
    landmarks_or_box,
    size: int = 224,
    margin: float = 0.25,
    border: str = "constant",
    border_value: int | float = 0,
    center_offset: tuple[float, float] = (0.0, 0.0),
) -> Crop:
    """Cut a square window around a face and resample it to ``size x size`` pixels.

    Parameters
    ----------
    image : any input accepted by :func:`~facerig.landmarks.as_rgb_uint8` (converted to uint8 RGB)
    landmarks_or_box : FaceLandmarks, FaceDetection, (4,) box or (N, 2|3) points (see :func:`box_of`)
    size : int
        Output side in pixels.
    margin : float
        Extra space on each side, as a fraction of the box's longer side: the window side is
        ``max(w, h) * (1 + 2 * margin)``, centred on the box centre (plus ``center_offset`` times
        the box's longer side, e.g. ``(0, -0.1)`` moves the window up).
    border : "constant" | "replicate" | "reflect"
        How pixels outside the image are filled (``constant`` uses ``border_value``).

    Returns
    -------
    Crop
        With the exact affine map (pixel-centre convention). Resampling: bicubic when enlarging,
        bilinear when shrinking by less than 2x; when shrinking by 2x or more, the part of the
        image under the window is first area-averaged (``cv2.INTER_AREA``) to twice the crop's
        resolution, warped bilinearly, then averaged over 2x2 blocks, so small crops of large
        images neither alias nor allocate window-sized buffers. The map is the same in all cases.
    """
    import cv2

    rgb = as_rgb_uint8(image)
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if not np.isfinite(margin) or margin <= -0.5:
        raise ValueError(f"margin must be > -0.5, got {margin!r}")
    if border not in _BORDERS:
        raise ValueError(f"border must be one of {_BORDERS}, got {border!r}")
    b = box_of(landmarks_or_box)
    h, w = rgb.shape[:2]
    longest = max(b[2] - b[0], b[3] - b[1], 1e-6)
    side = longest * (1.0 + 2.0 * margin)
    cx = (b[0] + b[2]) / 2 + center_offset[0] * longest
    cy = (b[1] + b[3]) / 2 + center_offset[1] * longest
    ox, oy = cx - side / 2, cy - side / 2
    s = size / side
    matrix = np.array([[s, 0.0, -s * ox], [0.0, s, -s * oy], [0.0, 0.0, 1.0]])
    border_mode = {
        "constant": cv2.BORDER_CONSTANT,
        "replicate": cv2.BORDER_REPLICATE,
        "reflect": cv2.BORDER_REFLECT_101,
    }[border]

    src = rgb
    m = matrix[:2].copy()  # continuous coordinates: src -> crop
    k = 1
    if s < 0.5:
        # Shrinking 2x or more: area-downscale the part of the image under the window to twice
        # the crop's resolution, warp that, then average 2x2 blocks. Exact map, no aliasing, and
        # memory proportional to the crop, not to the window.
        f = 2.0 * s
        pad = int(np.ceil(3.0 / f))  # 3 downscaled pixels of context for the interpolation
        x0 = int(min(max(np.floor(ox) - pad, 0), w))
        x1 = int(min(max(np.ceil(ox + side) + pad, 0), w))
        y0 = int(min(max(np.floor(oy) - pad, 0), h))
        y1 = int(min(max(np.ceil(oy + side) + pad, 0), h))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            nw, nh = max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f))
            # float32 from here on (the downscaled part is small): a single final rounding
            src = cv2.resize(rgb[y0:y1, x0:x1], (nw, nh), interpolation=cv2.INTER_AREA).astype(np.float32)
            fx, fy = nw / (x1 - x0), nh / (y1 - y0)  # src continuous: us = (u - x0) * fx
            m = np.array([[s / fx, 0.0, s * (x0 - ox)], [0.0, s / fy, s * (y0 - oy)]])
            k = 2
    mk = m * k
    # warpAffine works on pixel indices (centre at integer): j' = a (j + .5) + b - .5
    m_idx = mk.copy()
    m_idx[0, 2] += 0.5 * mk[0, 0] - 0.5
    m_idx[1, 2] += 0.5 * mk[1, 1] - 0.5
    flag = cv2.INTER_CUBIC if mk[0, 0] > 1.0 + 1e-9 else cv2.INTER_LINEAR
    big = cv2.warpAffine(
        src, m_idx, (size * k, size * k), flags=flag, borderMode=border_mode,
        borderValue=(border_value,) * 3,
    )
    if k > 1:
        big = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
        out = np.clip(np.rint(big), 0, 255).astype(np.uint8)
    else:
        out = big
    centres = (np.arange(size) + 0.5) / s
    vx = (centres + ox >= 0) & (centres + ox <= w)
    vy = (centres + oy >= 0) & (centres + oy <= h)
    valid = vy[:, None] & vx[None, :]
    return Crop(
        image=np.ascontiguousarray(out),
        matrix=matrix,
        box=np.array([ox, oy, ox + side, oy + side]),
        original_size=(h, w),
        valid=valid,
    )
