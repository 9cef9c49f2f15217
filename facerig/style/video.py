"""Video style transfer with temporal consistency (after Ruder et al. 2016).

Each frame is stylised with :func:`facerig.style.stylize`; the previous frame's result, warped to the
current frame by optical flow (OpenCV's Farnebäck), constrains it where the flow is reliable
(a forward-backward consistency check):

* ``"gatys"``: the warped result is the L-BFGS start and an extra energy term
  ``temporal * mean_u c_u ||y_u - warped_u||^2`` (``c`` the consistency mask) is added;
* ``"fast"`` / ``"flexible"``: the result is blended towards the warped one,
  ``y + min(1, temporal) c (warped - y)``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["optical_flow", "warp", "stylize_video"]


def optical_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow ``(H, W, 2)`` (pixels, x then y) from RGB uint8/float frame ``a`` to ``b``:
    ``a[y, x] ~ b[y + f_y, x + f_x]``."""
    import cv2

    def gray(x):
        x = np.asarray(x)
        x = (x * 255).astype(np.uint8) if x.dtype != np.uint8 else x
        return cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2GRAY)

    return cv2.calcOpticalFlowFarneback(gray(a), gray(b), None, 0.5, 3, 15, 3, 5, 1.2, 0)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` sampled at ``x + flow(x)`` (bilinear, border replicated): ``(H, W, C)`` float32."""
    import cv2

    H, W = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    return cv2.remap(np.ascontiguousarray(image, dtype=np.float32), gx + flow[..., 0], gy + flow[..., 1],
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _consistency(fwd: np.ndarray, bwd: np.ndarray, tol: float = 1.0) -> np.ndarray:
    """1 where following ``bwd`` (current -> previous) then ``fwd`` (previous -> current) comes back
    within ``tol`` px (+ 5 % of the motion), else 0: ``(H, W)`` float32."""
    back = warp(fwd, bwd)
    err = np.linalg.norm(bwd + back, axis=-1)
    mag = np.linalg.norm(bwd, axis=-1) + np.linalg.norm(back, axis=-1)
    return (err <= tol + 0.05 * mag).astype(np.float32)


def stylize_video(path, style, out, *, method: str = "flexible", size: int = 256, temporal: float = 1.0,
                  start: int = 0, stop: int | None = None, stride: int = 1, progress: bool = False,
                  log=None, **kwargs) -> dict:
    """Stylise a video (or a folder of frames) and write ``out`` (``.mp4`` mp4v or ``.avi`` MJPG).

    Args:
        path: the video.
        style: the style image ``(H, W, 3)`` (or a list; see :func:`facerig.style.stylize`).
        out: the output video, written atomically.
        method: ``"gatys"``, ``"fast"`` or ``"flexible"``.
        size: the longer side of the stylised frames (px; rounded down to even).
        temporal: weight of the temporal consistency (0: frames independent).
        start, stop, stride: the frames read (see :class:`facerig.video.VideoReader`).
        progress: a tqdm bar; log: ``log(message)`` per frame (e.g. print).
        **kwargs: passed to :func:`facerig.style.stylize` (iterations, intensity, model, ...).

    Returns:
        ``{"frames": n, "seconds": total, "per_frame": mean seconds, "path": out}``.
    """
    import cv2

    from facerig.style.core import stylize
    from facerig.video import VideoReader, VideoWriter

    if not temporal >= 0:
        raise ValueError(f"temporal: expected a weight >= 0, got {temporal}")
    t0 = time.perf_counter()
    n = 0
    prev_frame = prev_out = None
    with VideoReader(path, start=start, stop=stop, stride=stride) as video:
        W0, H0 = video.size
        s = size / max(W0, H0)
        w, h = max(2, int(W0 * s) // 2 * 2), max(2, int(H0 * s) // 2 * 2)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=video.frame_count, desc="style", leave=False)
        with VideoWriter(out, video.fps, (w, h)) as writer:
            for _, rgb in video:
                frame = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
                c = torch.from_numpy(frame)
                warped = cons = None
                if prev_out is not None and temporal > 0:
                    bwd = optical_flow(frame, prev_frame)  # current -> previous
                    fwd = optical_flow(prev_frame, frame)
                    warped = torch.from_numpy(warp(prev_out, bwd))
                    cons = torch.from_numpy(_consistency(fwd, bwd))
                extra, init = None, "content"
                if method == "gatys" and warped is not None:
                    wt, mk = warped[None], cons[None, ..., None]
                    extra = lambda y: temporal * ((y - wt.to(y)).square() * mk.to(y)).mean(dim=(1, 2, 3))  # noqa: E731
                    init = wt.clone()
                res = stylize(c, style, method, extra=extra, init=init, report_energy=False, **kwargs)
                y: Tensor = res.image
                if method != "gatys" and warped is not None:
                    y = y + min(1.0, temporal) * cons[..., None] * (warped - y)
                y = y.clamp(0, 1)
                writer.write((y.numpy() * 255 + 0.5).astype(np.uint8))
                prev_frame, prev_out = frame, y.numpy()
                n += 1
                if bar is not None:
                    bar.update(1)
                if log is not None:
                    log(f"frame {n}: {res.seconds:.2f} s")
        if bar is not None:
            bar.close()
    total = time.perf_counter() - t0
    return {"frames": n, "seconds": total, "per_frame": total / max(1, n), "path": Path(out)}
