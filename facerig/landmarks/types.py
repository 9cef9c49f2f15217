"""Result types of the landmark detectors (plain NumPy, float64, pixel units).

Coordinates follow the package convention: x right, y down, in pixels of the *input* image,
the centre of pixel (row i, column j) at ``(j + 0.5, i + 0.5)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FaceDetection", "FaceLandmarks", "DETECTION_KEYPOINT_NAMES"]

#: Names of the 6 BlazeFace keypoints, in order. "right"/"left" are the *subject's* sides: for a
#: face looking at the camera, the right eye is on the image's left.
DETECTION_KEYPOINT_NAMES = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_center",
    "right_ear_tragion",
    "left_ear_tragion",
)


def _box_area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0 when both are empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = _box_area(a) + _box_area(b) - inter
    return float(inter / union) if union > 0 else 0.0


def _f(x: float):
    return None if not np.isfinite(x) else float(x)


@dataclass(frozen=True, eq=False)
class FaceDetection:
    """One BlazeFace detection.

    Attributes
    ----------
    box : (4,) float64
        ``(x0, y0, x1, y1)`` in pixels (edges, not pixel centres); may extend past the image.
    score : float
        Detector confidence in [0, 1].
    keypoints : (6, 2) float64
        ``(x, y)`` pixels, in the order of :data:`DETECTION_KEYPOINT_NAMES`.
    model : str
        ``"short"`` (faces within ~2 m, 128x128 input) or ``"full"`` (up to ~5 m, 192x192 input).
    """

    box: np.ndarray
    score: float
    keypoints: np.ndarray
    model: str = "short"

    @property
    def center(self) -> np.ndarray:
        """(2,) box centre in pixels."""
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])

    @property
    def size(self) -> float:
        """Box side in pixels (the geometric mean of width and height)."""
        return float(np.sqrt(_box_area(self.box)))

    def to_dict(self) -> dict:
        """JSON-ready dict: ``box``, ``score``, ``keypoints`` (lists, pixels), ``model``."""
        return {
            "box": [float(v) for v in self.box],
            "score": _f(self.score),
            "keypoints": {n: [float(v) for v in p] for n, p in zip(DETECTION_KEYPOINT_NAMES, self.keypoints)},
            "model": self.model,
        }


@dataclass(frozen=True, eq=False)
class FaceLandmarks:
    """Face Mesh landmarks of one face.

    Attributes
    ----------
    points : (N, 3) float64, N = 468 or 478
        Columns ``x, y`` in pixels of the input image and ``z``: MediaPipe's relative depth scaled
        to pixels like x (``z_px = z_norm * W``), *smaller is closer to the camera*. Its origin is
        the mesh's own centre (the mean z of the 468 points is ~0; on ``astronaut()`` the nose tip
        is at -23 px, the ear-side points at up to +43 px, for a 99 px face). It is a
        weak-perspective, per-frame relative estimate, not a metric depth: only differences
        within a face are meaningful. Points 468..477 (``refine=True``) are the iris centres and
        rims: 468-472 the subject's right iris (image left for a frontal face), 473-477 the left.
        Vertex i of points 0..467 is vertex i of MediaPipe's canonical face mesh.
    box : (4,) float64
        Tight ``(x0, y0, x1, y1)`` box of the 2D points.
    score : float
        Confidence, from the BlazeFace detection that seeded this face (see ``detection``).
        Face Mesh's own face-presence score is not exposed by mediapipe 0.10.21's legacy API; it
        is only known to be >= ``presence_threshold`` (otherwise no landmarks are returned). In
        tracking mode mediapipe runs the detector only to (re)acquire faces, so the score is the
        one of the most recent detection associated with the track (usually the one that started
        it). NaN when no detection could be associated.
    presence_threshold : float
        The Face Mesh presence threshold these landmarks passed.
    image_size : (int, int)
        ``(H, W)`` of the input image.
    detection : FaceDetection or None
        The associated detection (box in input pixels), if any.
    track_id : int or None
        Identity of the face in :class:`~facerig.landmarks.LandmarkTracker` (None for still images).
    smoothed : bool
        True when ``points`` went through the tracker's temporal filter.
    """

    points: np.ndarray
    box: np.ndarray
    score: float
    presence_threshold: float
    image_size: tuple[int, int]
    detection: FaceDetection | None = None
    track_id: int | None = None
    smoothed: bool = False

    @property
    def xy(self) -> np.ndarray:
        """(N, 2) pixel coordinates."""
        return self.points[:, :2]

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def refined(self) -> bool:
        """True for 478 points (with irises)."""
        return self.points.shape[0] == 478

    @property
    def size(self) -> float:
        """Face size in pixels: geometric mean of the landmark box's width and height."""
        return float(np.sqrt(_box_area(self.box)))

    def to_dict(self, decimals: int = 3) -> dict:
        """JSON-ready dict (``points`` as an (N, 3) nested list rounded to ``decimals``, ``box``,
        ``score`` (None when NaN), ``presence_threshold``, ``image_size``, ``detection``,
        ``track_id``, ``smoothed``, ``convention``)."""
        return {
            "points": np.round(self.points, decimals).tolist(),
            "box": [round(float(v), decimals) for v in self.box],
            "score": _f(self.score),
            "presence_threshold": float(self.presence_threshold),
            "image_size": [int(v) for v in self.image_size],
            "detection": None if self.detection is None else self.detection.to_dict(),
            "track_id": self.track_id,
            "smoothed": bool(self.smoothed),
            "convention": "x right, y down, pixels; pixel (row i, col j) centre at (j+0.5, i+0.5); "
            "z relative depth in pixels, smaller = closer",
        }

    def ibug68(self) -> np.ndarray:
        """(68, 3) the iBUG-68 subset of :attr:`points` (see :func:`facerig.landmarks.to_ibug68`)."""
        from facerig.landmarks.regions import to_ibug68  # lazily: it imports facerig.model (torch)

        return to_ibug68(self.points)
