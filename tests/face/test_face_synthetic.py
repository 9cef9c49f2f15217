"""Synthetic face generator: reproducible samples, consistent ground truth, closed eye holes."""

import numpy as np
import pytest
from facerig.face.synthetic import SyntheticFaces, close_holes, open_eye_faces, random_crop, random_rotation
from facerig.render import axis_angle_to_matrix


@pytest.fixture(scope="module")
def gen():
    return SyntheticFaces(size=128)


def test_sample_is_reproducible_and_consistent(gen):
    a = gen.sample(np.random.default_rng(3))
    b = gen.sample(np.random.default_rng(3))
    assert a.image.shape == (128, 128, 3) and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image) and np.allclose(a.vertices, b.vertices)
    # ground-truth landmarks are the projections of the ground-truth vertices
    idx = gen.dec.model.landmark_maps["mediapipe468"].indices.numpy()
    v = a.vertices[idx]
    proj = v[:, :2] / v[:, 2:] * a.focal + 64.0
    assert np.allclose(proj, a.landmarks468, atol=1e-3)
    assert 60 <= a.vertices[:, 2].mean() <= 82
    assert (a.landmarks68 > 0).all() and (a.landmarks68 < 128).all()


def test_rotation_angles_match_matrix():
    rng = np.random.default_rng(0)
    aa, yaw, pitch, roll = random_rotation(rng, 60, 30, 10)
    R = axis_angle_to_matrix(aa.double())
    # R = Ry(yaw) Rx(pitch) Rz(roll): its third column is (sin y cos p, -sin p, cos y cos p)
    assert np.degrees(np.arctan2(float(R[0, 2]), float(R[2, 2]))) == pytest.approx(yaw, abs=1e-3)
    assert np.degrees(-np.arcsin(float(R[1, 2]))) == pytest.approx(pitch, abs=1e-3)
    assert abs(yaw) <= 60 and abs(pitch) <= 30 and abs(roll) <= 10


def test_close_holes_makes_a_disc_watertight_inside(gen):
    model = gen.dec.model
    faces = open_eye_faces(model)
    assert len(faces) < len(model.faces)
    loops, filled = close_holes(faces, model.n_vertices)
    assert len(loops) == 2  # the two eyes (the mouth opening stays closed by its face group)
    e = np.sort(np.concatenate([filled[:, [0, 1]], filled[:, [1, 2]], filled[:, [2, 0]]]), 1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    n_boundary = int((counts == 1).sum())
    # only the outer rim remains open: its length equals the longest boundary loop of the original
    e0 = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    _, c0 = np.unique(e0, axis=0, return_counts=True)
    assert n_boundary == int((c0 == 1).sum()) - sum(len(lp) for lp in loops)


def test_random_crop_shape_and_range():
    rng = np.random.default_rng(0)
    photo = (np.arange(300 * 400 * 3) % 251).astype(np.uint8).reshape(300, 400, 3)
    c = random_crop(rng, [photo], 64, scale_range=(1.0, 3.0))
    assert c.shape == (64, 64, 3) and c.dtype == np.uint8
