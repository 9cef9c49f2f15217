"""Low-rank corrective shapes learned from the video (optional).

After per-frame tracking, what the personalised blendshapes cannot explain shows as landmark
residuals. Each frame's 2D residual ``e_l`` (detected - fitted, pixels) is lifted to the smallest
3D displacement that produces it (``e_l * depth / focal`` in the camera's image plane, rotated
back into the model frame); the residual fields of the frames, minus their mean (a constant
offset is a detector bias or identity error, not an expression), are reduced by PCA to ``k``
shapes. Per frame, the corrective weights are the (temporally smoothed) projections of the frame's
residual field on them, in units of their standard deviation over the video.

Face-oval (sliding contour) points are left out: their residual along the contour is not a
surface motion.
"""

from __future__ import annotations

import numpy as np
import torch

from facerig.model.code import model_to_opencv
from facerig.render import axis_angle_to_matrix

__all__ = ["corrective_shapes"]


@torch.no_grad()
def _residual_fields(tracker, points, Y, frames_idx) -> np.ndarray:
    """(n, V, 3) model-frame displacement fields (cm) of the given frames."""
    dec = tracker.dec
    V = dec.model.n_vertices
    ids = tracker.ids.cpu().numpy()
    keep = np.ones(len(ids), bool)
    keep[tracker.contour.cpu().numpy()] = False
    M = model_to_opencv(torch.float64).numpy()
    out = np.zeros((len(frames_idx), V, 3))
    for n, t in enumerate(frames_idx):
        y = torch.as_tensor(Y[t:t + 1], dtype=tracker.dt)
        code = dec.as_code(y)
        cam = dec.vertices(code)[0].double()
        pix = dec.project(cam[None].to(tracker.dt), code.focal, (tracker.H, tracker.W), tracker.pp)[0, :, :2]
        e = np.asarray(points[t][:468], np.float64) - pix[ids].double().numpy()
        z = cam[ids, 2].numpy()
        d_cam = np.zeros((len(ids), 3))
        d_cam[:, :2] = e * (z / tracker.focal)[:, None]
        d_cam[~keep] = 0.0
        R = axis_angle_to_matrix(code.rotation.double())[0].numpy() @ M
        out[n, ids] = d_cam @ R  # row vectors: (R^T d)^T
    return out


def corrective_shapes(tracker, points, found, Y, k: int = 4, max_frames: int = 200, smooth: int = 3):
    """Learn ``k`` corrective shapes and their per-frame weights.

    Args:
        tracker: the :class:`facerig.rig.track.FrameTracker` used for tracking (personalised decoder).
        points: (T, 468, 2) detected landmarks, pixels; found: (T,) bool.
        Y: (T, D) tracked code vectors (lost frames interpolated).
        k: number of shapes; max_frames: frames (evenly spaced) used to learn them.
        smooth: width (frames) of the moving average applied to the weights (1 = none).

    Returns:
        ``(shapes (k, V, 3) cm model frame, weights (T, k), explained (k,) fraction of the residual
        variance)``; weights of lost frames are interpolated.
    """
    T = len(found)
    idx_found = np.flatnonzero(found)
    if k <= 0 or idx_found.size < 2:
        V = tracker.dec.model.n_vertices
        return np.zeros((0, V, 3)), np.zeros((T, 0)), np.zeros(0)
    learn = idx_found[np.linspace(0, idx_found.size - 1, min(max_frames, idx_found.size)).round().astype(int)]
    learn = np.unique(learn)
    F = _residual_fields(tracker, points, Y, learn)
    n, V, _ = F.shape
    X = F.reshape(n, -1)
    mean = X.mean(0)
    U, S, Vt = np.linalg.svd(X - mean, full_matrices=False)
    k = int(min(k, len(S)))
    std = S[:k] / np.sqrt(max(n - 1, 1))
    shapes = (Vt[:k] * std[:, None]).reshape(k, V, 3)
    explained = (S[:k] ** 2) / max((S ** 2).sum(), 1e-30)
    # weights of every found frame: projection of its field on the unit-variance shapes
    W = np.zeros((T, k))
    allf = _residual_fields(tracker, points, Y, idx_found).reshape(idx_found.size, -1)
    W[idx_found] = (allf - mean) @ Vt[:k].T / np.maximum(std, 1e-12)
    if idx_found.size < T:
        t = np.arange(T)
        for j in range(k):
            W[:, j] = np.interp(t, idx_found, W[idx_found, j])
    if smooth > 1:
        kern = np.ones(smooth) / smooth
        pad = smooth // 2
        Wp = np.pad(W, ((pad, smooth - 1 - pad), (0, 0)), mode="edge")
        W = np.stack([np.convolve(Wp[:, j], kern, mode="valid") for j in range(k)], 1)
    return shapes, W, explained
