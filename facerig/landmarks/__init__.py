"""Face detection and Face Mesh landmarks (mediapipe 0.10.21, offline), crops, index maps, smoothing.

Main entry points
-----------------
detect_faces(image) -> list[FaceDetection]          BlazeFace boxes, scores, 6 keypoints
detect_landmarks(image) -> list[FaceLandmarks]      478 (or 468) points per face, still images
LandmarkTracker                                     video frames in order, One-Euro smoothing
square_crop(image, face) -> Crop                    square crop + exact map back to the image
                                                    (to_crop / to_original / to_original_image)
to_ibug68(points)                                   the iBUG-68 subset of the 468 points
draw_landmarks(image, faces)                        uint8 RGB picture of the landmarks

Conventions
-----------
* Inputs: (H, W, 3) uint8 RGB, (H, W) gray, (H, W, 4) RGBA, float arrays in [0, 1], (H, W, C)
  torch tensors in [0, 1], or a file path (see :func:`as_rgb_uint8`).
* Outputs are float64 NumPy arrays in pixels of the input image: x right, y down, the centre of
  pixel (row i, column j) at (j + 0.5, i + 0.5). Face Mesh z is a relative depth in the same pixel
  scale (smaller = closer to the camera, 0 at the centre of the face mesh).
* mediapipe is imported on first use, not at import time. The index-map names
  (``to_ibug68``, ``MEDIAPIPE468_TO_IBUG68``, ``IBUG68_*``, ``MEDIAPIPE_*``) are loaded on
  first access from :mod:`facerig.landmarks.regions`, which imports the single copy of the map in
  :mod:`facerig.model.landmark_maps` (and with it the ``facerig.model`` package and torch).
"""

from facerig.landmarks.crop import Crop, box_of, square_crop
from facerig.landmarks.detect import DEFAULT_MAX_SIDE, detect_faces, detect_landmarks, release_models
from facerig.landmarks.draw import draw_landmarks, mesh_edges
from facerig.landmarks.filters import OneEuroFilter
from facerig.io import ImageReadError, as_rgb_uint8, load_image
from facerig.landmarks.tracker import LandmarkTracker
from facerig.landmarks.types import DETECTION_KEYPOINT_NAMES, FaceDetection, FaceLandmarks

_REGION_NAMES = (
    "IBUG68_CONTOUR",
    "IBUG68_FLIP",
    "IBUG68_INNER",
    "MEDIAPIPE468_TO_IBUG68",
    "MEDIAPIPE_FACE_OVAL",
    "MEDIAPIPE_JAW_CONTOUR",
    "to_ibug68",
)


def __getattr__(name):  # PEP 562: load the index maps (and facerig.model, torch) only when used
    if name in _REGION_NAMES:
        from facerig.landmarks import regions

        return getattr(regions, name)
    raise AttributeError(f"module 'facerig.landmarks' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_REGION_NAMES))


__all__ = [
    "Crop",
    "DEFAULT_MAX_SIDE",
    "DETECTION_KEYPOINT_NAMES",
    "FaceDetection",
    "FaceLandmarks",
    "IBUG68_CONTOUR",
    "IBUG68_FLIP",
    "IBUG68_INNER",
    "ImageReadError",
    "LandmarkTracker",
    "MEDIAPIPE468_TO_IBUG68",
    "MEDIAPIPE_FACE_OVAL",
    "MEDIAPIPE_JAW_CONTOUR",
    "OneEuroFilter",
    "as_rgb_uint8",
    "box_of",
    "detect_faces",
    "detect_landmarks",
    "draw_landmarks",
    "load_image",
    "mesh_edges",
    "release_models",
    "square_crop",
    "to_ibug68",
]
