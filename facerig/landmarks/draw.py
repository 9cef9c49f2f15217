"""Drawing landmarks (and optionally the Face Mesh tessellation) on an image."""

from __future__ import annotations

import numpy as np

from facerig.io import as_rgb_uint8
from facerig.landmarks.detect import _mediapipe

__all__ = ["draw_landmarks", "mesh_edges"]

_SHIFT = 4  # OpenCV sub-pixel drawing: coordinates in 1/16 px


def mesh_edges(kind: str = "tessellation") -> np.ndarray:
    """(E, 2) int64 Face Mesh edges from mediapipe: ``"tessellation"`` (2556 edges of the 898
    triangles), ``"contours"`` (eyes, brows, lips, face oval) or ``"irises"``."""
    mp = _mediapipe()
    fm = mp.solutions.face_mesh
    table = {
        "tessellation": fm.FACEMESH_TESSELATION,
        "contours": fm.FACEMESH_CONTOURS,
        "irises": fm.FACEMESH_IRISES,
    }
    if kind not in table:
        raise ValueError(f"kind must be one of {sorted(table)}, got {kind!r}")
    return np.array(sorted(table[kind]), dtype=np.int64).reshape(-1, 2)


def _as_point_sets(landmarks) -> list[np.ndarray]:
    if landmarks is None:
        return []
    if hasattr(landmarks, "points"):
        return [np.asarray(landmarks.points, dtype=np.float64)]
    if isinstance(landmarks, (list, tuple)):
        out = []
        for item in landmarks:
            out += _as_point_sets(item)
        return out
    arr = np.asarray(landmarks, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] in (2, 3):
        return [arr]
    if arr.ndim == 3 and arr.shape[2] in (2, 3):
        return list(arr)
    raise ValueError(
        "landmarks must be FaceLandmarks, a list of them, or (N, 2|3) / (F, N, 2|3) pixel points; "
        f"got shape {arr.shape}"
    )


def _cv(pt) -> tuple[int, int]:
    # package convention (centre of pixel j at j + .5) -> OpenCV drawing (centre at j), in 1/16 px
    return (int(round((pt[0] - 0.5) * (1 << _SHIFT))), int(round((pt[1] - 0.5) * (1 << _SHIFT))))


def draw_landmarks(
    image,
    landmarks,
    tessellation: bool = False,
    contours: bool = False,
    ibug68: bool = False,
    color: tuple[int, int, int] = (0, 255, 0),
    edge_color: tuple[int, int, int] = (200, 200, 200),
    radius: float | None = None,
    boxes: bool = False,
) -> np.ndarray:
    """Draw landmarks on a copy of an image.

    Parameters
    ----------
    image : any form accepted by :func:`~facerig.landmarks.as_rgb_uint8`
    landmarks : FaceLandmarks, a list of them, or (N, 2|3) / (F, N, 2|3) points in pixels
        (package convention: pixel centres at +0.5).
    tessellation / contours : draw the Face Mesh edges (for 468 / 478 point sets) in ``edge_color``.
    ibug68 : draw only the iBUG-68 subset of 468/478-point sets (as larger dots).
    color : RGB dot colour; radius : dot radius in pixels (default: scales with the image).
    boxes : also draw the landmark boxes of FaceLandmarks.

    Returns
    -------
    (H, W, 3) uint8 RGB image (the input is not modified).
    """
    import cv2

    out = as_rgb_uint8(image).copy()
    h, w = out.shape[:2]
    if radius is None:
        radius = max(1.0, min(h, w) / 400.0)
    sets = _as_point_sets(landmarks)
    edges = None
    for pts in sets:
        if not np.all(np.isfinite(pts[:, :2])):
            raise ValueError("landmarks contain NaN or infinite values")
        n = pts.shape[0]
        if (tessellation or contours) and n in (468, 478):
            if edges is None:
                kinds = (["tessellation"] if tessellation else []) + (["contours"] if contours else [])
                edges = np.concatenate([mesh_edges(k) for k in kinds])
            for a, b in edges:
                cv2.line(out, _cv(pts[a]), _cv(pts[b]), edge_color, 1, cv2.LINE_AA, _SHIFT)
        if ibug68 and n in (468, 478):
            from facerig.landmarks.regions import to_ibug68  # lazily: it imports facerig.model (torch)

            pts = to_ibug68(pts)
            r = radius * 2
        else:
            r = radius
        rr = int(round(r * (1 << _SHIFT)))
        for p in pts:
            cv2.circle(out, _cv(p), rr, color, -1, cv2.LINE_AA, _SHIFT)
    if boxes and landmarks is not None:
        items = landmarks if isinstance(landmarks, (list, tuple)) else [landmarks]
        for f in items:
            if hasattr(f, "box"):
                b = f.box
                cv2.rectangle(out, _cv(b[:2]), _cv(b[2:]), (255, 0, 0), 1, cv2.LINE_AA, _SHIFT)
    return out
