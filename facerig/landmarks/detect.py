"""Face detection (BlazeFace) and Face Mesh landmarks for still images, with mediapipe 0.10.21.

Both models ship inside the ``mediapipe==0.10.21`` wheel and run offline on the CPU. mediapipe is
imported lazily (on the first call), so ``import facerig.landmarks`` stays fast.

Coordinates: mediapipe returns coordinates normalised by the image size. On the CPU, its
graphs cut the face region with ``cv2.warpPerspective`` on pixel *indices* (pixel centre at an
integer) and project the model's output back the same way, so ``x_n * W`` is an index
coordinate: the centre of column j is at ``x_n * W = j``. We return ``x = x_n * W + 0.5``,
``y = y_n * H + 0.5`` (the package convention, centre of column j at ``j + 0.5``) and
``z = z_n * W`` (mediapipe scales z like x; no offset). Measured, not only read from the code:
Face Mesh run on crops of ``astronaut()`` resampled by 0.57x ... 3.3x and mapped back gives
mean residuals that are constant over the scale with this rule (spread <= 0.2 px), while the
"``x_n * W`` is a continuous coordinate" reading drifts by 0.6 px (x) and 0.9 px (y) over that
range, as it predicts (0.73 px) for the wrong convention. (mediapipe's own ``drawing_utils``
floors ``x_n * W``, half a pixel off.) BlazeFace boxes and keypoints get the same rule; their
own scatter (several pixels) makes the half pixel immaterial there.

Processes: mediapipe 0.10.21 is not fork-safe. Once it has run in a process, a child made with
``fork`` aborts (``malloc(): unaligned tcache chunk``) even with fresh graphs, so use the
``spawn`` start method for worker processes (``DataLoader(multiprocessing_context="spawn")``) or
detect landmarks in the main process. Threads are fine: each cached graph has a lock.

mediapipe's native log lines (TFLite / absl) are silenced while a graph is built and first run;
set the environment variable ``FACERIG_MEDIAPIPE_LOGS=1`` to see them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

import numpy as np

from facerig.io import as_rgb_uint8, resize_max_side
from facerig.landmarks.crop import square_crop
from facerig.landmarks.types import FaceDetection, FaceLandmarks, box_iou

__all__ = ["detect_faces", "detect_landmarks", "DEFAULT_MAX_SIDE", "release_models"]

#: Images whose longer side exceeds this many pixels are processed on an area-downscaled copy and
#: the results are mapped back to the original pixels (mediapipe itself resamples the whole image
#: to 128x128 / 192x192 without antialiasing, which aliases badly on very large images).
DEFAULT_MAX_SIDE = 1920

_MIN_DETECTION_KEY = (
    "facedetectionshortrangecpu__facedetectionshortrange__facedetection__"
    "TensorsToDetectionsCalculator.min_score_thresh"
)
_PRESENCE_KEY = "facelandmarkcpu__ThresholdingCalculator.threshold"

_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def _mediapipe():
    """Import mediapipe quietly, or explain how to install it."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import mediapipe  # noqa: F401
        from mediapipe.python.solution_base import SolutionBase  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "facerig.landmarks needs mediapipe==0.10.21, whose wheel ships the BlazeFace and Face "
            "Mesh models (newer releases do not): pip install mediapipe==0.10.21"
        ) from err
    return mediapipe


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence the C++ log lines mediapipe prints on a graph's first run (TFLite / absl INFO and
    warnings written straight to file descriptor 2). Set ``FACERIG_MEDIAPIPE_LOGS=1`` to keep them."""
    if os.environ.get("FACERIG_MEDIAPIPE_LOGS"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _check_unit(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _check_max_faces(max_faces) -> int:
    if not isinstance(max_faces, (int, np.integer)) or isinstance(max_faces, bool) or max_faces < 1:
        raise ValueError(f"max_faces must be a positive int, got {max_faces!r}")
    return int(max_faces)


class _MeshGraph:
    """mediapipe's face_landmark_front_cpu graph, also returning the face detections.

    The legacy ``mp.solutions.face_mesh.FaceMesh`` only exposes the landmarks; the same graph
    also has a ``face_detections`` output, which gives an honest per-face confidence.
    """

    def __init__(self, max_faces: int, refine: bool, static: bool, min_score: float, min_presence: float):
        _mediapipe()
        from mediapipe.python.solution_base import SolutionBase
        from mediapipe.python.solutions import face_mesh

        self.lock = threading.Lock()
        self._warm = False
        self.refine = refine
        with _quiet_native_stderr():
            self._graph = SolutionBase(
                binary_graph_path=face_mesh._BINARYPB_FILE_PATH,
                side_inputs={
                    "num_faces": int(max_faces),
                    "with_attention": bool(refine),
                    "use_prev_landmarks": not static,
                },
                calculator_params={_MIN_DETECTION_KEY: min_score, _PRESENCE_KEY: min_presence},
                outputs=["multi_face_landmarks", "face_detections"],
            )

    def process(self, rgb: np.ndarray):
        """Returns (list of (N, 3) normalised landmark arrays, list of normalised detections)."""
        with self.lock:
            if self._warm:
                res = self._graph.process({"image": rgb})
            else:
                with _quiet_native_stderr():
                    res = self._graph.process({"image": rgb})
                self._warm = True
        lms = [
            np.array([(p.x, p.y, p.z) for p in lm.landmark], dtype=np.float64)
            for lm in (res.multi_face_landmarks or [])
        ]
        return lms, list(res.face_detections or [])

    def close(self):
        with self.lock:
            self._graph.close()


class _Detector:
    def __init__(self, model: str, min_score: float):
        mp = _mediapipe()
        self.lock = threading.Lock()
        self._warm = False
        with _quiet_native_stderr():
            self._det = mp.solutions.face_detection.FaceDetection(
                model_selection=0 if model == "short" else 1, min_detection_confidence=min_score
            )

    def process(self, rgb: np.ndarray):
        with self.lock:
            if self._warm:
                res = self._det.process(rgb)
            else:
                with _quiet_native_stderr():
                    res = self._det.process(rgb)
                self._warm = True
        return list(res.detections or [])

    def close(self):
        with self.lock:
            self._det.close()


def _cached(key, factory):
    with _CACHE_LOCK:
        obj = _CACHE.get(key)
        if obj is None:
            obj = _CACHE[key] = factory()
        return obj


def release_models() -> None:
    """Close the cached mediapipe graphs (they are created on first use and reused)."""
    with _CACHE_LOCK:
        items = list(_CACHE.values())
        _CACHE.clear()
    for obj in items:
        obj.close()


def _to_detection(d, w: int, h: int, sx: float, sy: float, model: str) -> FaceDetection:
    """mediapipe Detection proto (normalised on a (h, w) image) -> FaceDetection in original pixels."""
    bb = d.location_data.relative_bounding_box
    # index coordinate x_n * w -> pixel-centre convention (+ 0.5) -> input pixels (* sx)
    box = np.array(
        [
            (bb.xmin * w + 0.5) * sx,
            (bb.ymin * h + 0.5) * sy,
            ((bb.xmin + bb.width) * w + 0.5) * sx,
            ((bb.ymin + bb.height) * h + 0.5) * sy,
        ]
    )
    kps = np.array(
        [((k.x * w + 0.5) * sx, (k.y * h + 0.5) * sy) for k in d.location_data.relative_keypoints],
        dtype=np.float64,
    )
    score = float(d.score[0]) if len(d.score) else float("nan")
    return FaceDetection(box=box, score=score, keypoints=kps.reshape(-1, 2), model=model)


def _points_box(pts: np.ndarray) -> np.ndarray:
    return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])


def _associate(boxes: list[np.ndarray], dets: list[FaceDetection], min_iou: float = 0.2) -> list[int | None]:
    """Greedy max-IoU matching of landmark boxes to detections; index into dets or None."""
    pairs = sorted(
        ((box_iou(b, d.box), i, j) for i, b in enumerate(boxes) for j, d in enumerate(dets)),
        reverse=True,
    )
    out: list[int | None] = [None] * len(boxes)
    used = set()
    for iou, i, j in pairs:
        if iou < min_iou:
            break
        if out[i] is None and j not in used:
            out[i] = j
            used.add(j)
    return out


def detect_faces(
    image,
    model: str = "full",
    min_score: float = 0.5,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> list[FaceDetection]:
    """Detect faces with BlazeFace.

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB, (H, W) gray, (H, W, 4) RGBA, float in [0, 1], an (H, W, C) torch
        tensor or a path (see :func:`facerig.landmarks.as_rgb_uint8`).
    model : "full" | "short"
        BlazeFace full-range (faces up to ~5 m, better on small faces) or short-range (faces
        within ~2 m, the model Face Mesh uses internally).
    min_score : float in [0, 1]
        Detections below this score are dropped.
    max_side : int or None
        Larger images are detected on an area-downscaled copy (results mapped back).

    Returns
    -------
    list[FaceDetection]
        Boxes and 6 keypoints in input-image pixels, sorted by decreasing score; empty if no face.
    """
    if model not in ("full", "short"):
        raise ValueError(f"model must be 'full' or 'short', got {model!r}")
    min_score = _check_unit("min_score", min_score)
    rgb = as_rgb_uint8(image)
    small, sx, sy = resize_max_side(rgb, max_side)
    det = _cached(("det", model, min_score), lambda: _Detector(model, min_score))
    h, w = small.shape[:2]
    out = [_to_detection(d, w, h, sx, sy, model) for d in det.process(small)]
    return sorted(out, key=lambda d: -d.score)


def _mesh_faces(
    rgb_small: np.ndarray, sx: float, sy: float, graph: _MeshGraph, min_presence: float, image_size
) -> list[FaceLandmarks]:
    h, w = rgb_small.shape[:2]
    lms, raw_dets = graph.process(rgb_small)
    dets = [_to_detection(d, w, h, sx, sy, "short") for d in raw_dets]
    faces = []
    # x_n * w is an index coordinate (see the module docstring): + 0.5, then scale to the input
    scale = np.array([w * sx, h * sy, w * sx])
    offset = np.array([0.5 * sx, 0.5 * sy, 0.0])
    pts_list = [lm * scale + offset for lm in lms]
    boxes = [_points_box(p) for p in pts_list]
    match = _associate(boxes, dets)
    for pts, box, j in zip(pts_list, boxes, match):
        det = dets[j] if j is not None else None
        faces.append(
            FaceLandmarks(
                points=pts,
                box=box,
                score=det.score if det is not None else float("nan"),
                presence_threshold=min_presence,
                image_size=image_size,
                detection=det,
            )
        )
    return faces


def detect_landmarks(
    image,
    max_faces: int = 1,
    refine: bool = True,
    min_score: float = 0.5,
    min_presence: float = 0.5,
    max_side: int | None = DEFAULT_MAX_SIDE,
    small_faces: bool = True,
) -> list[FaceLandmarks]:
    """Face Mesh landmarks of the faces in a still image (mediapipe ``static_image_mode``).

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB, (H, W) gray, (H, W, 4) RGBA, float in [0, 1], an (H, W, C) torch
        tensor or a path (see :func:`facerig.landmarks.as_rgb_uint8`).
    max_faces : int
        At most this many faces are returned. Face Mesh keeps its ``max_faces`` most confident
        detections (then the small-face fallback may add more, up to ``max_faces``); the result
        is sorted by size, so with ``max_faces=1`` and several faces you get the most confident
        one, and with a larger ``max_faces`` the largest comes first.
    refine : bool
        True: 478 points (mediapipe's attention model, refined eyes and lips, plus 10 iris points);
        False: the 468-point model.
    min_score : float in [0, 1]
        BlazeFace detection threshold.
    min_presence : float in [0, 1]
        Face Mesh face-presence threshold (mediapipe's ``min_tracking_confidence``): a face whose
        mesh presence score is below it is dropped.
    max_side : int or None
        Larger images are processed on an area-downscaled copy; points are mapped back to the
        input's pixels (z scaled by the same factor as x).
    small_faces : bool
        Face Mesh's internal detector is the short-range BlazeFace, which misses faces smaller than
        about a tenth of the image. When fewer than ``max_faces`` faces are found, also run the
        full-range detector and run Face Mesh on a square crop (2x the box, 256 px, cut from the
        full-resolution input) around every detection not already covered.

    Returns
    -------
    list[FaceLandmarks]
        Sorted by decreasing face size (largest first); empty when no face is found. ``points`` are
        (478 | 468, 3) float64: x, y in input pixels (pixel-centre convention), z relative depth in
        pixels (smaller = closer). ``score`` is the associated BlazeFace detection's score.
    """
    max_faces = _check_max_faces(max_faces)
    min_score = _check_unit("min_score", min_score)
    min_presence = _check_unit("min_presence", min_presence)
    rgb = as_rgb_uint8(image)
    H, W = rgb.shape[:2]
    small, sx, sy = resize_max_side(rgb, max_side)
    refine = bool(refine)
    graph = _cached(
        ("mesh", max_faces, refine, min_score, min_presence),
        lambda: _MeshGraph(max_faces, refine, True, min_score, min_presence),
    )
    faces = _mesh_faces(small, sx, sy, graph, min_presence, (H, W))
    if small_faces and len(faces) < max_faces:
        faces += _small_faces(rgb, small, faces, max_faces, refine, min_score, min_presence)
    faces.sort(key=lambda f: -f.size)
    return faces[:max_faces]


def _small_faces(rgb, small, faces, max_faces, refine, min_score, min_presence):
    """Faces the full-range detector finds but Face Mesh's short-range detector missed."""
    H, W = rgb.shape[:2]
    extra: list[FaceLandmarks] = []
    graph1 = _cached(
        ("mesh", 1, refine, min_score, min_presence),
        lambda: _MeshGraph(1, refine, True, min_score, min_presence),
    )
    to_input = np.array([W / small.shape[1], H / small.shape[0]])  # `small` pixels -> input pixels
    for det in detect_faces(small, "full", min_score, None):
        if len(faces) + len(extra) >= max_faces:
            break
        det = FaceDetection(
            box=det.box * np.tile(to_input, 2), score=det.score, keypoints=det.keypoints * to_input,
            model=det.model,
        )
        cx, cy = det.center
        covered = any(
            box_iou(det.box, g.box) > 0.1 or (g.box[0] <= cx <= g.box[2] and g.box[1] <= cy <= g.box[3])
            for g in faces + extra
        )
        if covered:
            continue
        crop = square_crop(rgb, det, size=256, margin=0.5, border="replicate")
        found = _mesh_faces(crop.image, 1.0, 1.0, graph1, min_presence, crop.image.shape[:2])
        if not found:
            continue
        pts = crop.to_original(found[0].points)
        box = _points_box(pts)
        c = box[:2] / 2 + box[2:] / 2
        if not (det.box[0] <= c[0] <= det.box[2] and det.box[1] <= c[1] <= det.box[3]):
            continue  # the crop's mesh landed on a neighbouring face
        extra.append(
            FaceLandmarks(
                points=pts, box=box, score=det.score, presence_threshold=min_presence,
                image_size=(H, W), detection=det,
            )
        )
    return extra
