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


def test_smooth_subdivide_interpolates_and_rounds_a_sphere():
    """Phong-tessellation subdivision keeps the original vertices, quadruples the faces per level,
    averages per-vertex colours on edges, and on an icosahedron (vertex normals = radial, exactly)
    moves the new vertices toward the circumscribed sphere: every new vertex is at the radius of the
    closed form ``(1 - alpha) m + alpha (pi_a(m) + pi_b(m)) / 2`` with ``pi_i(m) = m - ((m - x_i).n_i) n_i``,
    alpha = 3/4, well outside the edge midpoints' radius 0.85."""
    from facerig.face.synthetic import FaceRenderer, smooth_subdivide

    t = (1 + 5 ** 0.5) / 2
    V = torch.tensor([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                      [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=torch.float64)
    V = V / V.norm(dim=1, keepdim=True)
    F = torch.tensor([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                      [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                      [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    col = torch.rand(1, 12, 3, dtype=torch.float64)
    v1, c1, f1 = smooth_subdivide(V[None], F, col, 1)
    assert v1.shape == (1, 12 + 30, 3) and f1.shape == (80, 3) and torch.equal(v1[0, :12], V)
    r_mid = float(((V[0] + V[11]) / 2).norm())
    # analytic: normals are radial (n_i = x_i); the projections pull m out by alpha * (1 - m.x_i) along x_i, averaged
    a, b = V[0], V[11]
    m = (a + b) / 2
    pa, pb = m - ((m - a) @ a) * a, m - ((m - b) @ b) * b
    expect = float((0.25 * m + 0.75 * 0.5 * (pa + pb)).norm())
    r_new = v1[0, 12:].norm(dim=1)
    assert torch.allclose(r_new, torch.full_like(r_new, expect), atol=1e-12) and expect > r_mid + 0.05
    assert c1.shape == (1, 42, 3) and torch.equal(c1[0, :12], col[0])
    # colours of new vertices are edge averages: each lies between the min and max of the parents
    assert bool((c1[0, 12:] <= col[0].max(0).values + 1e-12).all())
    v2, _, f2 = smooth_subdivide(V[None], F, None, 2)
    assert f2.shape == (320, 3) and float(v2[0].norm(dim=1).min()) > r_mid
    with pytest.raises(ValueError, match="smooth"):
        FaceRenderer(F, 12, smooth=-1)
