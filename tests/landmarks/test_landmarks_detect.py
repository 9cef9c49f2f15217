"""Face detection and Face Mesh on real photos (scikit-image astronaut(), brick(), camera())."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerig.landmarks import (
    DETECTION_KEYPOINT_NAMES,
    ImageReadError,
    detect_faces,
    detect_landmarks,
    to_ibug68,
)
from facerig.landmarks.regions import (
    IBUG68_CONTOUR,
    IBUG68_LEFT_BROW,
    IBUG68_LEFT_EYE,
    IBUG68_MOUTH,
    IBUG68_NOSE,
    IBUG68_RIGHT_BROW,
    IBUG68_RIGHT_EYE,
    MEDIAPIPE_LEFT_IRIS,
    MEDIAPIPE_RIGHT_IRIS,
)


def _inside(points, box, pad=0.0):
    return (
        (points[:, 0] >= box[0] - pad) & (points[:, 0] <= box[2] + pad)
        & (points[:, 1] >= box[1] - pad) & (points[:, 1] <= box[3] + pad)
    )


def test_astronaut_one_face_478_points_in_box(astronaut, astronaut_face):
    f = astronaut_face
    assert f.points.shape == (478, 3) and f.points.dtype == np.float64 and f.refined
    assert np.all(np.isfinite(f.points))
    assert f.image_size == astronaut.shape[:2]
    # the face is in the upper middle of the 512x512 photo, about 90-110 px wide
    assert 150 < f.box[0] < f.box[2] < 300 and 50 < f.box[1] < f.box[3] < 200
    assert 80 < f.size < 130
    # the associated BlazeFace detection: confident, box overlapping the mesh (the mesh reaches up
    # to the forehead above the detector's box, so allow a margin of a quarter of the box)
    d = f.detection
    assert d is not None and f.score == d.score and 0.8 < f.score <= 1.0
    side = d.box[2] - d.box[0]
    assert _inside(f.points, d.box, pad=0.25 * side).all()
    assert _inside(d.center[None], f.box).all()
    # z: relative depth in pixels, nose tip (1) closer to the camera (smaller z) than the ears (234, 454)
    assert f.points[1, 2] < f.points[234, 2] and f.points[1, 2] < f.points[454, 2]
    assert np.ptp(f.points[:, 2]) < 1.5 * f.size
    assert abs(f.points[:468, 2].mean()) < 0.05 * f.size  # z is centred on the mesh


def test_refine_false_gives_468_points_close_to_refined(astronaut, astronaut_face):
    g = detect_landmarks(astronaut, refine=False)
    assert len(g) == 1 and g[0].points.shape == (468, 3) and not g[0].refined
    # the two models agree to a few pixels on a 100 px face
    assert np.median(np.linalg.norm(g[0].xy - astronaut_face.xy[:468], axis=1)) < 3.0


def test_ibug68_geometry(astronaut_face):
    p = to_ibug68(astronaut_face.points)
    assert p.shape == (68, 3)
    np.testing.assert_array_equal(p, astronaut_face.ibug68())
    y = lambda r: p[list(r), 1].mean()  # noqa: E731
    x = lambda r: p[list(r), 0].mean()  # noqa: E731
    # brows above eyes above nose tip above mouth above chin (y grows downwards)
    assert y(IBUG68_RIGHT_BROW) < y(IBUG68_RIGHT_EYE) and y(IBUG68_LEFT_BROW) < y(IBUG68_LEFT_EYE)
    assert y(IBUG68_RIGHT_EYE) < p[30, 1] < y(IBUG68_MOUTH) < p[8, 1]
    # subject's right (iBUG 36-41, jaw 0, brow 17-21) is on the image's left for a frontal face
    assert x(IBUG68_RIGHT_EYE) < x(IBUG68_NOSE) < x(IBUG68_LEFT_EYE)
    assert x(IBUG68_RIGHT_BROW) < x(IBUG68_LEFT_BROW)
    assert p[0, 0] < p[8, 0] < p[16, 0]
    assert p[36, 0] < p[39, 0] < p[42, 0] < p[45, 0]  # eye corners, outer-inner-inner-outer
    assert p[48, 0] < p[51, 0] < p[54, 0]  # mouth corners around the upper-lip centre
    assert np.argmax(p[list(IBUG68_CONTOUR), 1]) in (7, 8, 9)  # the chin is the lowest jaw point


def test_irises_inside_their_eyes(astronaut_face):
    f = astronaut_face
    ib = f.ibug68()
    for iris, eye in ((MEDIAPIPE_RIGHT_IRIS, IBUG68_RIGHT_EYE), (MEDIAPIPE_LEFT_IRIS, IBUG68_LEFT_EYE)):
        c = f.points[iris[0], :2]
        e = ib[list(eye), :2]
        assert e[:, 0].min() < c[0] < e[:, 0].max()
        assert e[:, 1].min() - 3 < c[1] < e[:, 1].max() + 3


def test_detect_faces_keypoints_match_mesh(astronaut, astronaut_face):
    for model in ("full", "short"):
        dets = detect_faces(astronaut, model=model)
        assert len(dets) == 1
        d = dets[0]
        assert d.keypoints.shape == (6, 2) and d.box.shape == (4,) and 0.8 < d.score <= 1
        assert len(DETECTION_KEYPOINT_NAMES) == 6
        kp = dict(zip(DETECTION_KEYPOINT_NAMES, d.keypoints))
        ib = astronaut_face.ibug68()[:, :2]
        assert kp["right_eye"][0] < kp["left_eye"][0]  # subject's right eye on the image's left
        assert np.linalg.norm(kp["right_eye"] - ib[36:42].mean(0)) < 10
        assert np.linalg.norm(kp["left_eye"] - ib[42:48].mean(0)) < 10
        assert np.linalg.norm(kp["nose_tip"] - ib[30]) < 12
        assert _inside(astronaut_face.xy, d.box, pad=0.3 * (d.box[2] - d.box[0])).all()


@pytest.mark.parametrize("name", ["brick", "noise", "flat"])
def test_faceless_images_give_empty_lists(name):
    from skimage import data

    img = {
        "brick": lambda: data.brick(),
        "noise": lambda: np.random.default_rng(0).integers(0, 256, (384, 512, 3), dtype=np.uint8),
        "flat": lambda: np.full((64, 80, 3), 127, np.uint8),
    }[name]()
    assert detect_faces(img) == []
    assert detect_landmarks(img, max_faces=3) == []


def test_camera_has_a_face():
    # scikit-image's camera() is a photo of a cameraman: not a faceless image. Face Mesh's own
    # short-range detector misses his face; the full-range fallback (small_faces=True) finds it.
    from skimage import data

    cam = data.camera()
    assert len(detect_faces(cam)) == 1
    assert detect_landmarks(cam, small_faces=False) == []
    faces = detect_landmarks(cam)
    assert len(faces) == 1 and faces[0].detection.model == "full"
    assert _inside(faces[0].xy, faces[0].detection.box, pad=20).mean() > 0.95


def test_input_forms_give_identical_results(astronaut, tmp_path):
    gray = (astronaut @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)
    ref_gray = detect_landmarks(np.repeat(gray[:, :, None], 3, axis=2))
    assert len(ref_gray) == 1
    for form in (gray, gray[:, :, None]):
        np.testing.assert_array_equal(detect_landmarks(form)[0].points, ref_gray[0].points)

    ref = detect_landmarks(astronaut)[0].points
    rgba = np.concatenate([astronaut, np.full(astronaut.shape[:2] + (1,), 200, np.uint8)], axis=2)
    np.testing.assert_array_equal(detect_landmarks(rgba)[0].points, ref)
    as_float = torch.from_numpy(astronaut).float() / 255.0
    np.testing.assert_array_equal(detect_landmarks(as_float)[0].points, ref)
    np.testing.assert_array_equal(detect_landmarks(as_float[None])[0].points, ref)  # (1, H, W, 3)
    np.testing.assert_array_equal(detect_landmarks(astronaut / 255.0)[0].points, ref)
    import cv2

    path = tmp_path / "astronaut.png"
    assert cv2.imwrite(str(path), astronaut[:, :, ::-1])
    np.testing.assert_array_equal(detect_landmarks(path)[0].points, ref)
    np.testing.assert_array_equal(detect_landmarks(str(path))[0].points, ref)


def test_unreadable_files_raise_clear_errors(tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (corrupt, empty):
        with pytest.raises(ImageReadError, match=path.name) as err:
            detect_landmarks(path)
        assert "cannot decode" in str(err.value)
        assert isinstance(err.value, ValueError)
    with pytest.raises(ImageReadError, match="does not exist"):
        detect_faces(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="not a file"):
        detect_faces(tmp_path)


def test_bad_arguments_are_rejected(astronaut):
    with pytest.raises(ValueError, match="shape"):
        detect_landmarks(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detect_landmarks(np.full((8, 8, 3), 3.0))
    with pytest.raises(ValueError, match="dtype"):
        detect_landmarks(np.zeros((8, 8, 3), np.int32))
    with pytest.raises(TypeError, match="NumPy array"):
        detect_landmarks([[1, 2, 3]])
    with pytest.raises(ValueError, match="max_faces"):
        detect_landmarks(astronaut, max_faces=0)
    with pytest.raises(ValueError, match="min_score"):
        detect_landmarks(astronaut, min_score=1.5)
    with pytest.raises(ValueError, match="model"):
        detect_faces(astronaut, model="tiny")
    with pytest.raises(ValueError, match="B == 1"):
        detect_faces(torch.zeros(2, 8, 8, 3))


def test_several_faces_sorted_by_size(astronaut):
    import cv2

    face = astronaut[20:300, 90:370]  # 280 x 280, face about 95 px
    small = cv2.resize(face[:, ::-1], (196, 196), interpolation=cv2.INTER_AREA)  # mirrored, 0.7x
    img = np.full((300, 520, 3), 90, np.uint8)
    img[10:290, 0:280] = face
    img[50:246, 310:506] = small
    faces = detect_landmarks(img, max_faces=3)
    assert len(faces) == 2
    big, little = faces
    assert big.size > little.size
    assert big.box[2] < 280 <= little.box[0]  # the larger face is the left one
    assert little.size == pytest.approx(0.7 * big.size, rel=0.12)
    assert np.isfinite(big.score) and np.isfinite(little.score)
    assert big.detection is not little.detection
    one = detect_landmarks(img, max_faces=1)
    assert len(one) == 1 and one[0].box[2] < 280


def test_huge_image_is_processed_downscaled_and_mapped_back(astronaut, astronaut_face):
    import cv2

    big = cv2.resize(astronaut, (2400, 2400), interpolation=cv2.INTER_LINEAR)  # > DEFAULT_MAX_SIDE
    faces = detect_landmarks(big)
    assert len(faces) == 1 and faces[0].image_size == (2400, 2400)
    s = 2400 / 512
    err = np.linalg.norm(faces[0].xy / s - astronaut_face.xy, axis=1)
    assert np.median(err) < 1.5  # in original (512 px) pixels
    # z is scaled like x
    np.testing.assert_allclose(np.ptp(faces[0].points[:, 2]) / s, np.ptp(astronaut_face.points[:, 2]), rtol=0.15)


def test_small_face_in_large_image_found_by_full_range_fallback(astronaut, astronaut_face):
    import cv2

    small = cv2.resize(astronaut, (320, 320), interpolation=cv2.INTER_AREA)  # face about 60 px
    canvas = np.full((1024, 1024, 3), 128, np.uint8)
    canvas[500:820, 300:620] = small
    assert detect_landmarks(canvas, small_faces=False) == []
    faces = detect_landmarks(canvas)
    assert len(faces) == 1 and faces[0].detection.model == "full"
    expected = astronaut_face.xy * (320 / 512) + np.array([300, 500])
    assert np.median(np.linalg.norm(faces[0].xy - expected, axis=1)) < 1.5


@pytest.mark.parametrize("angle", [-30.0, 20.0])
def test_rotated_face_in_non_square_image(astronaut, astronaut_face, angle):
    """Rotate the photo about the face centre into a wide canvas; landmarks rotate along."""
    import cv2

    h, w = 512, 760
    c = astronaut_face.box.reshape(2, 2).mean(axis=0)
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    t = np.array([w / 2, h / 2]) - rot @ c  # continuous coordinates: u' = rot @ u + t
    m_idx = np.hstack([rot, (rot @ [0.5, 0.5] + t - 0.5)[:, None]])  # same map on pixel indices
    img = cv2.warpAffine(astronaut, m_idx, (w, h), flags=cv2.INTER_LINEAR)
    faces = detect_landmarks(img)
    assert len(faces) == 1
    expected = astronaut_face.xy @ rot.T + t
    err = np.linalg.norm(faces[0].xy - expected, axis=1)
    assert np.median(err) < 2.5
    assert np.linalg.norm((faces[0].xy - expected).mean(axis=0)) < 1.5


def test_small_face_in_huge_image_is_cropped_at_full_resolution(astronaut, astronaut_face):
    import cv2

    s = 1000 / 512
    face = cv2.resize(astronaut, (1000, 1000), interpolation=cv2.INTER_LINEAR)  # face about 200 px
    canvas = np.full((2250, 3000, 3), 128, np.uint8)  # downscaled to 1920 x 1440 for detection
    canvas[950:1950, 1500:2500] = face
    assert detect_landmarks(canvas, small_faces=False) == []  # too small for Face Mesh's detector
    faces = detect_landmarks(canvas)
    assert len(faces) == 1 and faces[0].image_size == (2250, 3000)
    assert faces[0].detection.model == "full"
    expected = astronaut_face.xy * s + np.array([1500, 950])
    # the mesh ran on a crop of the full-resolution image: error in original 512 px units
    assert np.median(np.linalg.norm(faces[0].xy - expected, axis=1)) / s < 1.0
