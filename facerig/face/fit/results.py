"""What the fitter returns: :class:`FaceFit` (one face in one image) and :class:`MultiFrameFit`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from facerig.face.decoder import FaceDecoder
from facerig.io import as_rgb_uint8
from facerig.model import GraphicCode

__all__ = ["FaceFit", "MultiFrameFit"]


@dataclass
class FaceFit:
    """The result of fitting one face in one image.

    All pixel quantities are in the INPUT image's pixels (x right, y down, pixel centre of column
    j at j + 0.5); the camera is OpenCV pinhole with focal ``code.focal`` and the principal
    point at the image centre.

    Attributes:
        code: :class:`~facerig.model.GraphicCode` (batch 1): identity, expression, albedo, pose
            (camera frame), focal (input pixels), SH light (renderer basis, see
            :mod:`facerig.face.decoder`).
        vertices: (V, 3) camera-frame vertices, cm.
        energies: per-term energy values at the solution and "total" (weighted by the
            stage-3 weights: ``w_landmarks_photo``, ``w_photometric``, ``w_albedo`` and the LM's
            ``w_identity_lm`` / ``w_expression_lm`` or Adam's ``w_identity_photo`` / ``w_expression_photo``).
        landmark_error_px: mean 2D distance (input pixels) between the fitted model's iBUG-68
            landmarks and the detected ones.
        landmark_error_dense_px: the same over all 468 Face Mesh points (None in sparse mode /
            for models without the Face Mesh map).
        landmarks68: (68, 2) the fitted model's iBUG-68 landmarks projected into the input image.
        detected: (N, 2) the detected landmarks (468 Face Mesh points, or 68).
        detected68: (68, 2) the iBUG-68 subset of the detections.
        image_size: (H, W) of the input image.
        model_name: the face model's name.
        timings: seconds per stage ("detect", "pose", "shape", "photometric", "total").
        stages: camera-frame vertices (V, 3) after each stage ("pose", "landmarks", "photometric").
        crop_box: (4,) the working crop's window in input pixels.
    """

    code: GraphicCode
    vertices: Tensor
    energies: dict
    landmark_error_px: float
    landmark_error_dense_px: float | None
    landmarks68: np.ndarray
    detected: np.ndarray
    detected68: np.ndarray
    image_size: tuple
    model_name: str
    timings: dict
    stages: dict = field(default_factory=dict)
    crop_box: np.ndarray | None = None
    decoder: FaceDecoder | None = field(default=None, repr=False)

    @property
    def principal_point(self) -> tuple:
        """``(cx, cy)`` = the input image's centre, pixels."""
        H, W = self.image_size
        return (W / 2.0, H / 2.0)

    def camera_dict(self) -> dict:
        """JSON-ready camera: OpenCV intrinsics K, image size, convention."""
        f = float(self.code.focal.reshape(-1)[0])
        cx, cy = self.principal_point
        return {"model": "opencv-pinhole", "K": [[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]],
                "image_size": [int(self.image_size[0]), int(self.image_size[1])],
                "convention": "x right, y down, z forward; X_cam = R(rotation) @ diag(1,-1,-1) @ X_model + "
                              "translation (cm); pixel (row i, col j) centre at (j+0.5, i+0.5)"}

    def to_dict(self, decimals: int = 5) -> dict:
        """JSON-ready dict: code parts, model name, camera, landmarks, energies, errors, timings."""
        def r(a):
            return np.round(np.asarray(a, dtype=np.float64), decimals).tolist()

        c = self.code
        return {
            "model": self.model_name,
            "image_size": [int(v) for v in self.image_size],
            "camera": self.camera_dict(),
            "code": {"identity": r(c.identity[0].detach().cpu()), "expression": r(c.expression[0].detach().cpu()),
                     "albedo": r(c.albedo[0].detach().cpu()), "rotation_axis_angle": r(c.rotation[0].detach().cpu()),
                     "translation_cm": r(c.translation[0].detach().cpu()), "focal_px": float(c.focal.reshape(-1)[0]),
                     "sh": r(c.sh[0].detach().cpu())},
            "expression_names": list(self.decoder.model.expression_names) if self.decoder is not None else None,
            "landmarks68": r(self.landmarks68),
            "detected_landmarks": r(self.detected),
            "detected_landmarks68": r(self.detected68),
            "landmark_error_px": float(self.landmark_error_px),
            "landmark_error_dense_px": None if self.landmark_error_dense_px is None else float(self.landmark_error_dense_px),
            "energies": {k: float(v) for k, v in self.energies.items()},
            "timings_s": {k: round(float(v), 4) for k, v in self.timings.items()},
            "crop_box": None if self.crop_box is None else r(self.crop_box),
        }

    def render(self, image=None, max_side: int = 1024, alpha: float = 1.0) -> np.ndarray:
        """The fitted face rendered over ``image`` (or black), (H', W', 3) uint8 RGB.

        Rendered at the input resolution, or scaled so the longer side is at most ``max_side``.
        ``alpha`` blends the render with the photo (1 = opaque face).
        """
        H, W = self.image_size
        s = min(1.0, max_side / max(H, W))
        h, w = max(1, round(H * s)), max(1, round(W * s))
        sx = w / W
        dec = self.decoder
        code = self.code.clone()
        with torch.no_grad():
            # scaling the image scales focal and principal point (square pixels: use sx ~ sy)
            code.focal = code.focal * sx
            out = dec(code, (h, w), torch.tensor([[w / 2.0, h / 2.0]], dtype=code.focal.dtype), antialias_edges=True)
        rgb = out.image[0].clamp(0, 1).cpu().numpy()
        a = out.alpha[0].cpu().numpy() * alpha
        if image is not None:
            photo = as_rgb_uint8(image)
            if photo.shape[:2] != (h, w):
                import cv2
                photo = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
            bg = photo.astype(np.float32) / 255.0
        else:
            bg = np.zeros_like(rgb)
        return (np.clip(a * rgb + (1 - a) * bg, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class MultiFrameFit:
    """Result of :func:`fit_frames`: one identity and albedo, per-frame everything else.

    Attributes:
        frames: one :class:`FaceFit` per input frame (their codes share identity and albedo).
        identity: (K_id,) shared identity coefficients; albedo: (K_alb,) shared albedo.
        energies: per-term energies summed over the frames, and "total".
        timings: seconds per stage.
    """

    frames: list
    identity: Tensor
    albedo: Tensor
    energies: dict
    timings: dict
