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


# ---------------------------------------------------------------- opt-in eye / mouth styling
import torch  # noqa: E402
from facerig.face.synthetic import FaceRenderer, classify_loops  # noqa: E402


def _render_expr(gen, weights: dict):
    dec = gen.dec
    code = dec.zero_code(1, image_size=gen.size)
    code.focal = torch.full_like(code.focal, 2.5 * gen.size)
    code.translation = code.translation + torch.tensor([[0.0, 0.0, -12.0]])  # closer: the face fills the frame
    names = list(dec.model.expression_names)
    for k, v in weights.items():
        code.expression[0, names.index(k)] = v
    img = gen.render(code)[0].astype(np.float64) / 255.0
    with torch.no_grad():
        verts = dec.vertices(code)
        pix = dec.project(verts, code.focal, (gen.size, gen.size))[0].numpy()
    return img, pix


@pytest.fixture(scope="module")
def styled():
    grey = [np.full((160, 160, 3), 90, np.uint8)]
    return SyntheticFaces(size=160, photos=grey, styled=True, open_mouth=True)


def test_styled_loops_are_classified_and_defaults_unchanged(gen, styled):
    r = styled.renderer
    assert sorted(r.kinds) == ["eye", "eye", "mouth"]
    mouth = r.loops[r.kinds.index("mouth")]
    assert styled.dec.model.mean[mouth, 1].mean() < styled.dec.model.mean[r.loops[0], 1].mean() or r.kinds[0] == "mouth"
    # the default renderer keeps one fan per hole and no styling
    plain = gen.renderer
    assert not plain.styled and len(plain.loops) == 2
    assert len(plain.faces) == len(open_eye_faces(gen.dec.model)) + sum(len(lp) for lp in plain.loops)
    # classify_loops: a loop far below the others is a mouth
    rest = np.zeros((6, 3))
    rest[3:, 1] = -5.0
    assert classify_loops([[0, 1, 2], [3, 4, 5]], rest) == ["eye", "mouth"]
    with pytest.raises(ValueError, match="rest_vertices"):
        FaceRenderer(open_eye_faces(gen.dec.model), 468, styled=True)
    with pytest.raises(ValueError, match="open_mouth"):
        FaceRenderer.for_model(gen.dec.model, open_mouth=True)


def test_styled_closed_eye_shows_skin_and_open_mouth_is_dark(styled):
    r = styled.renderer
    eye = r.loops[r.kinds.index("eye")]
    mouth = r.loops[r.kinds.index("mouth")]

    def at(img, pix, loop, dy=0.0):
        x, y = pix[loop, :2].mean(0) + np.array([0.0, dy])
        return img[int(y), int(x)]

    img_o, pix_o = _render_expr(styled, {})
    img_c, pix_c = _render_expr(styled, {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0})
    img_j, pix_j = _render_expr(styled, {"jawOpen": 0.8})
    h = np.ptp(pix_o[eye, 0])  # eye width, px
    skin_c = at(img_c, pix_c, eye, dy=0.6 * h)        # cheek skin below the closed eye
    assert at(img_o, pix_o, eye).mean() < 0.25            # open: a dark pupil in the middle
    assert np.abs(at(img_c, pix_c, eye) - skin_c).max() < 0.12  # closed: the lid looks like skin
    assert at(img_j, pix_j, mouth).max() < 0.15           # open jaw: a dark mouth interior
    # no white rim inside an open mouth
    xs, ys = pix_j[mouth, 0], pix_j[mouth, 1]
    box = img_j[int(ys.min()) + 1:int(ys.max()), int(xs.min()) + 2:int(xs.max()) - 1]
    assert box.min(-1).max() < 0.7
