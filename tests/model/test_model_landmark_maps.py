"""The MediaPipe-468 -> iBUG-68 map and the feature points that initialise the default model's registration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facerig.model.geometry import umeyama
from facerig.model.landmark_maps import IBUG68_GROUPS, IBUG68_JAW_BARYCENTRIC, MEDIAPIPE468_TO_IBUG68

REPO = Path(__file__).resolve().parents[2]


def _contour(name):
    from mediapipe.python.solutions import face_mesh_connections as fmc
    return {v for e in getattr(fmc, name) for v in e}


@pytest.fixture(scope="module")
def tool():
    """The model-building code (facerig.model.build; tools/build_default_model.py runs it)."""
    from facerig.model import build

    return build


@pytest.fixture(scope="module")
def canonical(shared_data):
    import trimesh
    path = shared_data / "mediapipe" / "canonical_face_model.obj"
    if not path.exists():
        pytest.skip("MediaPipe canonical mesh absent")
    return np.asarray(trimesh.load(path, process=False).vertices, float)


def test_inner_points_lie_on_mediapipe_contours():
    """Each inner iBUG point is a vertex of MediaPipe's own contour of the same feature (the subject's
    left / right)."""
    m = np.asarray(MEDIAPIPE468_TO_IBUG68)
    checks = {"right_brow": "FACEMESH_RIGHT_EYEBROW", "left_brow": "FACEMESH_LEFT_EYEBROW",
              "nose_bridge": "FACEMESH_NOSE", "nostrils": "FACEMESH_NOSE", "right_eye": "FACEMESH_RIGHT_EYE",
              "left_eye": "FACEMESH_LEFT_EYE", "outer_lips": "FACEMESH_LIPS", "inner_lips": "FACEMESH_LIPS"}
    for group, name in checks.items():
        a, b = IBUG68_GROUPS[group]
        assert set(m[a:b].tolist()) <= _contour(name), group
    # the eyes are not swapped: iBUG's right eye (36-41) is not on MediaPipe's LEFT_EYE contour
    assert not set(m[36:42].tolist()) & _contour("FACEMESH_LEFT_EYE")
    # the dense jaw points are convex combinations of triangle corners
    w = np.asarray(IBUG68_JAW_BARYCENTRIC[1])
    assert w.shape == (17, 3) and (w >= 0).all() and np.allclose(w.sum(1), 1, atol=1e-5)


def test_feature_points_are_mirror_symmetric_and_label_the_same_side(tool, canonical):
    """The feature points are mirror pairs on the (symmetric) canonical mesh, on the subject's own side."""
    feats = {name: (c, ls) for name, c, ls in tool.feature_correspondences(canonical)}
    assert len(feats) == 27
    mirror_ibug = {36: 45, 39: 42, 37: 44, 38: 43, 40: 47, 41: 46, 17: 26, 21: 22, 48: 54, 60: 64}
    for name, (c, ls) in feats.items():
        if not name.startswith("right "):
            continue
        c2, ls2 = feats["left " + name[len("right "):]]
        p, q = canonical[c].mean(0), canonical[c2].mean(0)
        assert np.allclose(p * [-1, 1, 1], q, atol=1e-3), name
        assert p[0] < -0.5 < 0.5 < q[0], name  # x points to the subject's left
        if len(ls) == 1:
            assert mirror_ibug[ls[0]] == ls2[0], name
        else:
            assert sorted(mirror_ibug.get(i, {18: 25, 19: 24, 20: 23}.get(i)) for i in ls) == sorted(ls2), name
    # midline features sit on x = 0
    for name in ("upper lip top (midline)", "lower lip bottom (midline)", "nose tip", "nose base (midline)"):
        assert abs(canonical[feats[name][0]].mean(0)[0]) < 1e-3, name


def test_similarity_from_feature_points_fits_within_a_few_mm(tool, canonical, shared_data):
    """The 27 permissively defined feature points align the canonical mesh to ICT's neutral face: RMS < 3 mm,
    max < 5 mm, scale near 1 (both are average adult faces in cm); with left and right swapped no rotation fits."""
    npz = shared_data / "ict-facekit" / "ict_face_area_morphs.npz"
    if not npz.exists():
        pytest.skip("ICT-FaceKit data absent")
    neutral = np.load(npz)["neutral"].astype(float)
    idx = json.loads((shared_data / "ict-facekit" / "vertex_indices.json").read_text())
    lm = np.asarray(idx["idx_to_landmark_verts"])
    feats = tool.feature_correspondences(canonical)
    src = np.stack([canonical[c].mean(0) for _n, c, _l in feats])
    dst = np.stack([neutral[lm[ls]].mean(0) for _n, _c, ls in feats])
    s, R, t = umeyama(src, dst)
    res = np.linalg.norm(src @ (s * R).T + t - dst, axis=1) * 10
    assert np.sqrt((res ** 2).mean()) < 3.0 and res.max() < 5.0
    assert abs(s - 1) < 0.05 and np.linalg.det(R) > 0
    # a wrong left/right convention would need a reflection: the best rotation fits far worse
    s2, R2, t2 = umeyama(src * [-1, 1, 1], dst)
    swapped = src * [-1, 1, 1] @ (s2 * R2).T + t2
    assert np.sqrt(((swapped - dst) ** 2).sum(1).mean()) * 10 > 5 * np.sqrt((res ** 2).mean())


def test_contour_loops_orders_chains_and_loops(tool):
    """Open chains come out walked end to end, closed loops as cycles; input order does not matter."""
    chain = {(5, 3), (3, 9), (9, 1)}
    loop = {(10, 11), (11, 12), (12, 10)}
    out = tool.contour_loops(chain | loop)
    assert out[0] in ([5, 3, 9, 1], [1, 9, 3, 5]) and sorted(out[1]) == [10, 11, 12] and len(out) == 2
    assert tool.contour_loops(set(reversed(sorted(chain | loop)))) == out
