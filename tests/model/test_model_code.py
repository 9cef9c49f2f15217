"""The graphic code: layout, frontal zero pose, priors."""

from __future__ import annotations

import math

import pytest
import torch

from facerig.model import MODEL_TO_OPENCV, SH_UNIT_AMBIENT, GraphicCode, load_model


@pytest.fixture(scope="module")
def model():
    return load_model("default")


def random_code(model, batch=3):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return GraphicCode(identity=r(batch, model.n_identity), expression=r(batch, model.n_expression),
                       albedo=r(batch, model.n_albedo), rotation=r(batch, 3), translation=r(batch, 3),
                       focal=r(batch, 1), sh=r(batch, 9, 3))


def test_vector_round_trip_and_layout(model):
    c = random_code(model)
    v = c.to_vector()
    D = model.n_identity + model.n_expression + model.n_albedo + 3 + 3 + 1 + 27
    assert v.shape == (3, D)
    back = GraphicCode.from_vector(v, model)
    for p in ("identity", "expression", "albedo", "rotation", "translation", "focal", "sh"):
        assert torch.equal(getattr(back, p), getattr(c, p))
    sl = GraphicCode.slices(c.sizes)
    assert torch.equal(v[:, sl["rotation"]], c.rotation)
    assert torch.equal(v[:, -27:].reshape(3, 9, 3), c.sh)
    assert sl["identity"].start == 0 and sl["sh"].stop == D
    with pytest.raises(ValueError, match="vec"):
        GraphicCode.from_vector(v[:, :-1], model)


def test_zeros_is_frontal_upright_on_axis(model):
    c = GraphicCode.zeros(2, model, image_size=256)
    assert torch.equal(c.rotation, torch.zeros(2, 3))
    v = c.transform(model.shape(c.identity, c.expression))
    centroid = v.mean(1)
    assert torch.allclose(centroid[:, :2], torch.zeros(2, 2), atol=1e-4)
    assert torch.allclose(centroid[:, 2], torch.full((2,), 50.0))
    v = v[0]
    assert v[4, 2] < v[:, 2].mean() - 2.5  # the nose points at the camera (smaller depth)
    assert v[10, 1] < v[152, 1]  # forehead above chin in the image (y down)
    assert v[33, 0] < 0 < v[263, 0]  # subject's right eye on the image's left
    assert c.focal[0, 0] == pytest.approx(2.5 * 256)
    assert torch.equal(c.sh[:, 0], torch.full((2, 3), SH_UNIT_AMBIENT))
    assert SH_UNIT_AMBIENT * math.pi * 0.5 * math.sqrt(1 / math.pi) == pytest.approx(1.0)
    # projected face height fills a sensible part of the image
    proj = v[:, 1] / v[:, 2] * c.focal[0, 0] + 128
    assert 0.6 * 256 < float(proj.max() - proj.min()) < 256


def test_model_to_opencv_is_rotation():
    M = MODEL_TO_OPENCV
    assert torch.allclose(M @ M.T, torch.eye(3)) and torch.det(M) == pytest.approx(1.0)


def test_rotation_semantics(model):
    c = GraphicCode.zeros(1, model)
    c.rotation[0, 1] = 0.4  # about camera +y (down): the face turns toward image left
    R = c.rotation_matrix()[0]
    normal = R @ torch.tensor([0.0, 0.0, 1.0])
    assert normal[0] < -0.3 and normal[2] < 0
    c.rotation.zero_()
    c.rotation[0, 0] = 0.4  # about camera +x: the face looks down (toward +y)
    normal = c.rotation_matrix()[0] @ torch.tensor([0.0, 0.0, 1.0])
    assert normal[1] > 0.3


def test_prior_scales(model):
    s = GraphicCode.prior_scales(model)
    c = GraphicCode.zeros(1, model)
    D = c.to_vector().shape[1]
    assert s.shape == (D,) and (s > 0).all()
    sl = GraphicCode.slices(c.sizes)
    assert torch.equal(s[sl["identity"]], model.identity_std)
    assert torch.equal(s[sl["expression"]], model.expression_std)
    m = GraphicCode.prior_means(model)
    assert GraphicCode.prior_energy(c.to_vector(), s, m).item() == pytest.approx(0.0)
    # one identity mode at one std costs exactly 1
    v = c.to_vector().clone()
    v[0, 5] += model.identity_std[5]
    assert GraphicCode.prior_energy(v, s, m).item() == pytest.approx(1.0, rel=1e-5)


def test_bad_shapes_and_dtype_moves(model):
    c = random_code(model, 2)
    with pytest.raises(ValueError, match="sh"):
        GraphicCode(**{**c.__dict__, "sh": torch.zeros(2, 27)})
    with pytest.raises(ValueError, match="focal"):
        GraphicCode(**{**c.__dict__, "focal": torch.zeros(3, 1)})
    d = c.to(torch.float64)
    assert d.identity.dtype == torch.float64 and c[1].batch_size == 1


def test_sh_unit_ambient_matches_renderer():
    shading = pytest.importorskip("facerig.render.shading")
    n = torch.nn.functional.normalize(torch.randn(1, 50, 3), dim=-1)
    sh = torch.zeros(1, 9, 3)
    sh[:, 0] = SH_UNIT_AMBIENT
    assert torch.allclose(shading.sh_irradiance(n, sh), torch.ones(1, 50, 3), atol=1e-6)
