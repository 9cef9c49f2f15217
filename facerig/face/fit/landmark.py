"""Stages 1 and 2 of the fitter, on the landmarks: PnP pose (:func:`pnp_pose`), the sliding
jaw / face-oval correspondences (:func:`update_contour`) and Levenberg-Marquardt on the robust
landmark energy with closed-form Jacobians (:func:`landmark_lm`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from facerig.energy.solvers import levenberg_marquardt
from facerig.face.decoder import FaceDecoder
from facerig.face.energy import FaceObservation, contour_correspondence, stacked_residuals
from facerig.face.fit.jacobians import stacked_jacobian, vertex_jacobian
from facerig.face.fit.options import FitOptions
from facerig.face.fit.params import ParameterPacker
from facerig.landmarks import MEDIAPIPE_FACE_OVAL

__all__ = ["JACOBIAN_MODE", "pnp_pose", "update_contour", "landmark_lm", "landmark_setup"]

# Jacobians of the landmark residuals by forward-mode autograd (torch.func.jacfwd, one tangent per
# free parameter) where no closed form applies: about 2x faster than reverse mode here. The first
# call in a process pays a one-time torch.func set-up of a few seconds.
JACOBIAN_MODE = "forward"


def pnp_pose(obj: np.ndarray, img: np.ndarray, f: float, pp: np.ndarray):
    """(rvec (3,), tvec (3,)) of the OpenCV camera (focal ``f`` px, principal point ``pp`` (2,) px)
    seeing object points ``obj`` (N, 3) at pixels ``img`` (N, 2): EPnP then iterative PnP; a
    frontal face at the depth matching the points' spread when PnP fails."""
    import cv2

    K = np.array([[f, 0, pp[0]], [0, f, pp[1]], [0, 0, 1]], dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj.astype(np.float64), img.astype(np.float64), K, None,
                                  flags=cv2.SOLVEPNP_EPNP)
    if ok:
        ok, rvec, tvec = cv2.solvePnP(obj.astype(np.float64), img.astype(np.float64), K, None, rvec, tvec,
                                      useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or not np.all(np.isfinite(tvec)) or tvec[2, 0] <= 0:
        # fall back: frontal face at the depth that matches the landmark spread
        spread_img = np.linalg.norm(img - img.mean(0), axis=1).mean()
        spread_obj = np.linalg.norm(obj[:, :2] - obj[:, :2].mean(0), axis=1).mean()
        z = f * spread_obj / max(spread_img, 1e-6)
        c = (img.mean(0) - pp) * z / f
        return np.zeros(3), np.array([c[0], c[1], z]) - obj.mean(0)
    return rvec.reshape(3), tvec.reshape(3)


def _residual_fn(energy, obs, packer):
    def r(p):
        return stacked_residuals(energy, obs, packer.unpack(p))
    return r


def update_contour(dec: FaceDecoder, obs: FaceObservation, y: Tensor, own_ids: Tensor) -> None:
    """Re-choose the model vertices of the contour landmarks on the current silhouette (in place)."""
    if obs.contour.numel() == 0:
        return
    with torch.no_grad():
        code = dec.as_code(y)
        verts = dec.vertices(code)
        pix = dec.project(verts, code.focal, obs.image_size, obs.principal_point)
        c = obs.contour.to(y.device)
        ids = contour_correspondence(pix, verts, dec.faces, obs.landmarks[:, c].to(pix.dtype), own_ids[c],
                                     max_dist=0.1 * obs.image_size[0])
        obs.vertex_ids = obs.vertex_ids.clone()
        obs.vertex_ids[:, c] = ids


def landmark_lm(energy, obs: FaceObservation, packer: ParameterPacker, y: Tensor, iters: int,
                dec: FaceDecoder | None = None) -> Tensor:
    """``iters`` Levenberg-Marquardt iterations on ``stacked_residuals(energy, obs, .)`` over the
    packer's free parameters, from code vectors ``y`` (B, D); returns the (B, D) codes (detached).

    With ``dec`` and a non-joint packer without albedo / SH, the Jacobian is in closed form
    (:func:`vertex_jacobian` / :func:`stacked_jacobian`); else forward-mode autograd
    (:data:`JACOBIAN_MODE`)."""
    if iters <= 0:
        return y
    jacobian = JACOBIAN_MODE
    if dec is not None and not packer.joint and all(p not in packer.layout for p in ("albedo", "sh")):
        def jacobian(q):  # closed form (see vertex_jacobian / stacked_jacobian)
            yq = packer.unpack(q)
            pix, J = vertex_jacobian(dec, packer, q, yq, obs.image_size, obs.principal_point, colours=False)
            return stacked_jacobian(energy, obs, packer, q, pix, J)
    res = levenberg_marquardt(_residual_fn(energy, obs, packer), packer.pack(y), max_iter=iters, damping=1e-3,
                              tol=1e-7, jacobian=jacobian)
    return packer.unpack(res.x).detach()


def landmark_setup(dec: FaceDecoder, kind: str, opts: FitOptions):
    """The model side of the landmark term for ``kind`` "dense" (468 Face Mesh points) or "sparse"
    (iBUG-68): ``(vertex ids (L,) int64, contour indices into the L landmarks, closed contour?,
    weights (L,) with opts.contour_weight on the contour)``."""
    m = dec.model
    if kind == "dense":
        ids = m.landmarks_mediapipe468.indices
        contour = torch.as_tensor(MEDIAPIPE_FACE_OVAL, dtype=torch.long)
        closed = True
    else:
        ids = m.landmarks_ibug68.indices
        contour = torch.arange(17)
        closed = False
    w = torch.ones(len(ids), dtype=m.dtype, device=m.device)
    w[contour] = opts.contour_weight
    return ids.to(m.device), contour.to(m.device), closed, w
