"""Index maps and regions: iBUG-68 subset, flip permutation, MediaPipe face oval; drawing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import facerig.model.landmark_maps as maps
from facerig.landmarks import (
    IBUG68_FLIP,
    MEDIAPIPE468_TO_IBUG68,
    MEDIAPIPE_FACE_OVAL,
    detect_landmarks,
    draw_landmarks,
    mesh_edges,
    to_ibug68,
)


def test_map_is_the_model_packages_single_copy():
    assert MEDIAPIPE468_TO_IBUG68 is maps.MEDIAPIPE468_TO_IBUG68
    assert len(MEDIAPIPE468_TO_IBUG68) == 68 and len(set(MEDIAPIPE468_TO_IBUG68)) == 68
    assert all(0 <= i < 468 for i in MEDIAPIPE468_TO_IBUG68)


def test_to_ibug68_numpy_and_torch():
    pts = np.random.default_rng(0).normal(size=(2, 478, 3))
    sub = to_ibug68(pts)
    assert sub.shape == (2, 68, 3)
    np.testing.assert_array_equal(sub[1, 5], pts[1, MEDIAPIPE468_TO_IBUG68[5]])
    t = torch.from_numpy(pts[:, :468, :2].copy())
    ts = to_ibug68(t)
    assert isinstance(ts, torch.Tensor) and ts.dtype == torch.float64 and ts.shape == (2, 68, 2)
    np.testing.assert_array_equal(ts.numpy(), sub[..., :2])
    with pytest.raises(ValueError, match="468 or 478"):
        to_ibug68(np.zeros((68, 2)))


def test_face_oval_is_mediapipes_loop():
    edges = {tuple(sorted(e)) for e in mesh_edges("contours").tolist()}
    loop = {tuple(sorted((a, b))) for a, b in zip(MEDIAPIPE_FACE_OVAL, MEDIAPIPE_FACE_OVAL[1:] + MEDIAPIPE_FACE_OVAL[:1])}
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    assert loop == {tuple(sorted(e)) for e in FACEMESH_FACE_OVAL}
    assert loop <= edges
    assert mesh_edges("tessellation").shape == (2556, 2)


def test_flip_permutation_matches_a_mirrored_photo(astronaut, astronaut_face):
    assert sorted(IBUG68_FLIP) == list(range(68))
    assert all(IBUG68_FLIP[IBUG68_FLIP[i]] == i for i in range(68))  # an involution
    mirrored = detect_landmarks(np.ascontiguousarray(astronaut[:, ::-1]))[0]
    w = astronaut.shape[1]
    back = to_ibug68(mirrored.xy)[list(IBUG68_FLIP)] * [-1, 1] + [w, 0]
    err = np.linalg.norm(back - astronaut_face.ibug68()[:, :2], axis=1)
    assert np.median(err) < 2.5 and err.max() < 8.0  # the 468 -> 68 map is left-right symmetric


def test_draw_landmarks(astronaut, astronaut_face):
    before = astronaut.copy()
    out = draw_landmarks(astronaut, astronaut_face, color=(255, 0, 255), radius=1.5)
    np.testing.assert_array_equal(astronaut, before)  # input untouched
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    # every landmark's pixel (floor of the pixel-centre coordinate) is painted
    ij = np.floor(astronaut_face.xy).astype(int)
    painted = out[ij[:, 1], ij[:, 0]]
    assert (np.abs(painted.astype(int) - [255, 0, 255]).max(axis=1) < 60).mean() > 0.95
    mesh = draw_landmarks(astronaut, astronaut_face, tessellation=True, color=(255, 0, 255))
    assert (mesh != astronaut).any(axis=2).sum() > (out != astronaut).any(axis=2).sum()
    only68 = draw_landmarks(astronaut, [astronaut_face], ibug68=True)
    assert (only68 != astronaut).any(axis=2).sum() < (out != astronaut).any(axis=2).sum()
    with pytest.raises(ValueError, match="landmarks"):
        draw_landmarks(astronaut, np.zeros((5, 4)))


def test_jaw_contour_is_the_lower_face_oval(astronaut_face):
    from facerig.landmarks import IBUG68_CONTOUR, MEDIAPIPE_JAW_CONTOUR

    oval = list(MEDIAPIPE_FACE_OVAL)
    a, b = oval.index(356), oval.index(127)
    assert list(MEDIAPIPE_JAW_CONTOUR) == oval[a: b + 1][::-1]  # a contiguous, reversed part of the loop
    jaw = astronaut_face.xy[list(MEDIAPIPE_JAW_CONTOUR)]
    assert jaw[0, 0] < jaw[-1, 0]  # starts on the subject's right = image left, like iBUG 0..16
    assert np.argmax(jaw[:, 1]) == MEDIAPIPE_JAW_CONTOUR.index(152)  # the chin is the lowest point
    # the iBUG jaw points lie on or just inside this silhouette line (within 5 % of the face size)
    ib = to_ibug68(astronaut_face.xy)[list(IBUG68_CONTOUR)]
    seg_a, seg_b = jaw[:-1], jaw[1:]
    d = []
    for p in ib:
        t = np.clip(((p - seg_a) * (seg_b - seg_a)).sum(1) / ((seg_b - seg_a) ** 2).sum(1), 0, 1)
        d.append(np.linalg.norm(seg_a + t[:, None] * (seg_b - seg_a) - p, axis=1).min())
    assert max(d) < 0.05 * astronaut_face.size
