"""FaceModel behaviour on the shipped default model and on small synthetic models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerig.model import MEDIAPIPE468_TO_IBUG68, FaceModel, LandmarkMap, load_model
from facerig.model.landmark_maps import IBUG68_JAW_BARYCENTRIC, ibug68_dense

ARKIT_ICT_53 = [
    "browDown_L", "browDown_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R", "cheekPuff_L",
    "cheekPuff_R", "cheekSquint_L", "cheekSquint_R", "eyeBlink_L", "eyeBlink_R", "eyeLookDown_L", "eyeLookDown_R",
    "eyeLookIn_L", "eyeLookIn_R", "eyeLookOut_L", "eyeLookOut_R", "eyeLookUp_L", "eyeLookUp_R", "eyeSquint_L",
    "eyeSquint_R", "eyeWide_L", "eyeWide_R", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimple_L", "mouthDimple_R", "mouthFrown_L", "mouthFrown_R", "mouthFunnel", "mouthLeft", "mouthLowerDown_L",
    "mouthLowerDown_R", "mouthPress_L", "mouthPress_R", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmile_L", "mouthSmile_R", "mouthStretch_L",
    "mouthStretch_R", "mouthUpperUp_L", "mouthUpperUp_R", "noseSneer_L", "noseSneer_R",
]


@pytest.fixture(scope="module")
def model():
    return load_model("default")


def tiny_model(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    mean = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.5]], dtype=dtype)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    return FaceModel(mean=mean, faces=faces, identity_basis=torch.randn(3, 4, 3, generator=g, dtype=dtype),
                     identity_std=torch.tensor([1.0, 0.5, 0.25], dtype=dtype),
                     expression_basis=torch.randn(2, 4, 3, generator=g, dtype=dtype), expression_names=["a", "b"],
                     albedo_basis=torch.randn(2, 4, 3, generator=g, dtype=dtype),
                     albedo_std=torch.tensor([0.1, 0.2], dtype=dtype),
                     uvs=torch.rand(4, 2, generator=g, dtype=dtype),
                     landmark_maps={"ibug68": LandmarkMap.from_barycentric(faces, [1, 0], [[0.2, 0.3, 0.5], [1, 0, 0]])},
                     masks={"skin": torch.tensor([1.0, 1, 0, 1])})


def test_default_asset_counts_and_names(model):
    assert model.n_vertices == 468 and model.n_faces == 898
    assert model.n_identity >= 50
    assert model.expression_names == ARKIT_ICT_53
    assert model.unit == "cm" and "MIT" in model.license and "Apache" in model.license
    assert model.landmarks_ibug68.indices.tolist() == list(MEDIAPIPE468_TO_IBUG68)
    assert len(set(MEDIAPIPE468_TO_IBUG68)) == 68
    assert model.landmarks_mediapipe468.indices.tolist() == list(range(468))
    dense = model.landmark_maps["ibug68_dense"]
    assert dense.vertex_ids[:17].tolist() == [list(r) for r in IBUG68_JAW_BARYCENTRIC[0]]
    assert torch.allclose(dense.weights[:17], torch.tensor(IBUG68_JAW_BARYCENTRIC[1]), atol=1e-6)
    assert torch.equal(dense.vertex_ids[17:, 0], model.landmarks_ibug68.indices[17:])
    # the detector-side helper gives the same points as the model-side map
    v = model.sample(2, torch.Generator().manual_seed(0))["vertices"]
    assert torch.allclose(ibug68_dense(v), model.landmarks(v, "ibug68_dense"), atol=1e-5)
    assert np.allclose(ibug68_dense(v.numpy()), ibug68_dense(v).numpy(), atol=1e-5)
    assert set(model.masks) >= {"skin", "eyes", "lips", "brows"}
    assert torch.equal(model.masks["skin"], 1 - torch.maximum(model.masks["eyes"], model.masks["brows"]))
    assert model.masks["lips"][[0, 13, 14, 17, 61, 291]].eq(1).all() and model.masks["lips"][[4, 152, 10]].eq(0).all()
    # triangles that close the mouth / cover the eyes: all their corners on the inner lip / eye contours
    mouth = model.faces[model.face_groups["mouth_opening"]]
    assert len(mouth) == 18 and {13, 14}.issubset(set(mouth.ravel().tolist()))
    assert model.masks["eyes"][model.faces[model.face_groups["eye_openings"]]].eq(1).all()
    assert model.uvs.shape == (468, 2) and 0 <= float(model.uvs.min()) and float(model.uvs.max()) <= 1
    # the identity basis is orthonormal (SVD), stds decrease
    B = model.identity_basis.reshape(model.n_identity, -1).double()
    assert torch.allclose(B @ B.T, torch.eye(model.n_identity, dtype=torch.float64), atol=1e-4)
    assert (model.identity_std[:-1] >= model.identity_std[1:]).all()


def test_default_frame_and_orientation(model):
    v = model.mean
    # x toward the subject's left: the subject's right eye outer corner (Face Mesh 33) has x < 0
    assert v[33, 0] < -3 and v[263, 0] > 3
    # y up: forehead (10) above chin (152); z toward the viewer: nose tip (4) in front
    assert v[10, 1] > v[152, 1] + 15
    assert v[4, 2] > v[:, 2].mean() + 2.5
    n = model.vertex_normals(v[None])[0]
    assert n[4, 2] > 0.9  # normals point out of the face
    size = v.max(0).values - v.min(0).values  # a real face in cm
    assert 12 < size[0] < 18 and 15 < size[1] < 20


def test_shape_is_linear(model):
    g = torch.Generator().manual_seed(0)
    a1, a2 = torch.randn(2, model.n_identity, generator=g), torch.randn(2, model.n_identity, generator=g)
    w1, w2 = torch.rand(2, model.n_expression, generator=g), torch.rand(2, model.n_expression, generator=g)
    m = model.to(torch.float64)
    a1, a2, w1, w2 = (x.double() for x in (a1, a2, w1, w2))
    base = m.shape(torch.zeros_like(a1), torch.zeros_like(w1))
    lhs = m.shape(2 * a1 - 3 * a2, 0.5 * w1 + w2) - base
    rhs = 2 * (m.shape(a1) - base) - 3 * (m.shape(a2) - base) + 0.5 * (m.shape(None, w1) - base) \
        + (m.shape(None, w2) - base)
    assert torch.allclose(lhs, rhs, atol=1e-9)
    # a single identity mode moves the vertices by exactly its basis vector
    e = torch.zeros(1, m.n_identity, dtype=torch.float64)
    e[0, 3] = 1.7
    assert torch.allclose(m.shape(e)[0] - m.mean, 1.7 * m.identity_basis[3], atol=1e-12)


def test_sample_statistics_match_stds(model):
    g = torch.Generator().manual_seed(3)
    s = model.sample(4000, g)
    std = s["identity"].std(0)
    rel = std / model.identity_std
    assert rel.sub(1).abs().max() < 0.1  # 4000 samples: sampling error of a std ~ 1.1 %, 6 sigma < 7 %
    assert s["albedo"].std(0).div(model.albedo_std).sub(1).abs().max() < 0.1
    assert s["identity"].mean(0).div(model.identity_std).abs().max() < 0.1
    e = s["expression"]
    assert (e >= 0).all() and (e <= 1).all()  # blendshape weights stay in the rig's range
    assert abs(float((e > 0).float().mean()) - 0.1) < 0.01  # ~10 % of the blendshapes active
    assert s["vertices"].shape == (4000, 468, 3) and s["colors"].shape == (4000, 468, 3)
    assert 0 <= float(s["colors"].min()) and float(s["colors"].max()) <= 1
    # vertex spread matches the model's prior: var of vertex coordinates = sum_k std_k^2 basis_k^2
    pred = (model.identity_std[:, None, None] ** 2 * model.identity_basis ** 2).sum(0)
    emp = (s["vertices"] - model.shape(None, s["expression"])).var(0)
    assert torch.allclose(emp.sum(), pred.sum(), rtol=0.08)


def test_sample_reproducible():
    m = tiny_model()
    a = m.sample(5, torch.Generator().manual_seed(7))["vertices"]
    b = m.sample(5, torch.Generator().manual_seed(7))["vertices"]
    assert torch.equal(a, b)


def test_landmarks_index_and_barycentric(model):
    v = model.shape(torch.randn(2, model.n_identity) * model.identity_std)
    lm = model.landmarks(v)
    assert lm.shape == (2, 68, 3)
    assert torch.equal(lm, v[:, list(MEDIAPIPE468_TO_IBUG68)])
    m = tiny_model()
    v = m.shape(torch.randn(3, 3, dtype=torch.float64))
    lm = m.landmarks(v)
    expect = 0.2 * v[:, 1] + 0.3 * v[:, 3] + 0.5 * v[:, 2]
    assert torch.allclose(lm[:, 0], expect) and torch.allclose(lm[:, 1], v[:, 0])
    with pytest.raises(ValueError, match="kind"):
        m.landmarks(v, "nope")


@pytest.mark.parametrize("levels", [1, 2])
def test_subdivision_keeps_bases_and_landmarks(model, levels):
    sub = model.subdivide(levels)
    V = model.n_vertices
    assert sub.n_faces == model.n_faces * 4 ** levels
    # old vertices unchanged, new vertices are the mean of their parents for every basis
    assert torch.equal(sub.identity_basis[:, :V], model.identity_basis)
    assert torch.equal(sub.mean[:V], model.mean)
    # face groups follow their parent triangles
    g = sub.face_groups["mouth_opening"]
    assert int(g.sum()) == 18 * 4 ** levels
    parent_mid = sub.mean[sub.faces[g]].mean(1)
    assert parent_mid[:, 1].sub(model.mean[13, 1]).abs().max() < 1.0
    if levels == 1:
        f = model.faces
        edges = torch.unique(torch.sort(torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1).values, dim=0)
        assert sub.n_vertices == V + len(edges)
        for name in ("identity_basis", "expression_basis", "albedo_basis"):
            b, bs = getattr(model, name), getattr(sub, name)
            assert torch.allclose(bs[:, V:], 0.5 * (b[:, edges[:, 0]] + b[:, edges[:, 1]]), atol=1e-7)
        assert torch.allclose(sub.uvs[V:], 0.5 * (model.uvs[edges[:, 0]] + model.uvs[edges[:, 1]]))
        assert torch.allclose(sub.masks["lips"][V:], 0.5 * (model.masks["lips"][edges[:, 0]] + model.masks["lips"][edges[:, 1]]))
    a = torch.randn(2, model.n_identity) * model.identity_std
    w = torch.rand(2, model.n_expression)
    assert torch.allclose(sub.landmarks(sub.shape(a, w)), model.landmarks(model.shape(a, w)), atol=1e-4)
    # every new vertex lies on the coarse surface: the subdivided mesh has the same area
    def area(m, v):
        t = v[:, m.faces]
        return torch.linalg.cross(t[:, :, 1] - t[:, :, 0], t[:, :, 2] - t[:, :, 0], dim=-1).norm(dim=-1).sum() / 2
    assert torch.allclose(area(sub, sub.shape(a, w)), area(model, model.shape(a, w)), rtol=1e-5)


def test_subdivide_separate_uv_topology():
    m = tiny_model()
    m2 = FaceModel(mean=m.mean, faces=m.faces, uvs=torch.rand(6, 2, dtype=torch.float64),
                   uv_faces=torch.tensor([[0, 1, 2], [3, 4, 5]]), landmark_maps=m.landmark_maps)
    s = m2.subdivide(1)
    assert s.uv_faces.shape == (8, 3) and s.uvs.shape == (6 + 6, 2)  # 3 new edges per disconnected uv triangle
    # each uv corner of a child triangle is a corner or the midpoint of the parent's uv triangle
    assert torch.allclose(s.uvs[s.uv_faces[0, 1]], 0.5 * (m2.uvs[0] + m2.uvs[1]))


def test_to_dtype_and_errors():
    m = tiny_model()
    m32 = m.to(torch.float32)
    assert m32.mean.dtype == torch.float32 and m32.faces.dtype == torch.int64
    assert m32.landmark_maps["ibug68"].weights.dtype == torch.float32
    with pytest.raises(ValueError, match="identity"):
        m.shape(torch.zeros(1, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="pose"):
        m.shape(None, None, torch.zeros(1, 15))
    with pytest.raises(ValueError, match="faces"):
        FaceModel(mean=torch.zeros(3, 3), faces=torch.tensor([[0, 1, 3]]))
    with pytest.raises(ValueError, match="expression_names"):
        FaceModel(mean=torch.zeros(3, 3), faces=torch.tensor([[0, 1, 2]]), expression_basis=torch.zeros(2, 3, 3),
                  expression_names=["x"])


def test_float64_gradients(model):
    m = model.to(torch.float64)
    a = (torch.randn(1, 5, dtype=torch.float64) * 0.1).requires_grad_()

    def f(a):
        full = torch.cat([a, torch.zeros(1, m.n_identity - 5, dtype=torch.float64)], 1)
        return m.landmarks(m.shape(full)).pow(2).sum()

    assert torch.autograd.gradcheck(f, (a,))


def test_default_model_detail_level(tmp_path):
    """The detail level: the original vertices and landmark maps unchanged, the same code drives
    both levels (linear), the new vertices stay near their edge midpoints, save/load keeps it."""
    from facerig.model import load_model
    from facerig.model.loaders import load_npz, save_npz

    m = load_model("default")
    assert m.has_detail
    d = m.detailed()
    sub = m.subdivide(1)
    V = m.n_vertices
    assert d.n_vertices == sub.n_vertices == V + m.detail["mean"].shape[0]
    assert torch.equal(d.faces, sub.faces)
    g = torch.Generator().manual_seed(0)
    s = m.sample(2, g, expression_scale=0.5)
    coarse = m.shape(s["identity"], s["expression"])
    fine = d.shape(s["identity"], s["expression"])
    assert torch.allclose(fine[:, :V], coarse, atol=1e-5)
    # a new vertex = its edge midpoint + mean offset + the coefficients' offsets (linear in the code)
    mid = sub.shape(s["identity"], s["expression"])[:, V:]
    off = (m.detail["mean"] + torch.einsum("bk,kev->bev", s["identity"], m.detail["identity"])
           + torch.einsum("bk,kev->bev", s["expression"], m.detail["expression"]))
    assert torch.allclose(fine[:, V:], mid + off, atol=1e-4)
    # the ICT surface lies within a few mm of the coarse facets (mean offset well under 1 mm)
    assert float(m.detail["mean"].norm(dim=-1).mean()) < 0.1  # cm
    assert float(m.detail["mean"].norm(dim=-1).max()) < 0.6
    with pytest.raises(ValueError, match="no detail level"):
        sub.detailed()
    p = save_npz(m, tmp_path / "m.npz")
    m2 = load_npz(p)
    assert m2.has_detail and all(torch.equal(m2.detail[k], m.detail[k]) for k in m.detail)
    with pytest.raises(ValueError, match="detail"):
        type(m)(mean=m.mean, faces=m.faces, identity_basis=m.identity_basis, identity_std=m.identity_std,
                expression_basis=m.expression_basis, expression_std=m.expression_std,
                detail={k: v[..., :-1, :] for k, v in m.detail.items()})
