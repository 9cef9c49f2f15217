"""MoFA losses: minimal at the ground-truth code, per-source masking, missing landmarks."""

import pytest
import torch
from torch.utils.data import default_collate

from facerig.encoder.losses import MoFALoss, code_loss, observation_from_batch
from facerig.encoder.synthetic_data import SyntheticFaceDataset
from facerig.face import FaceDecoder
from facerig.model import GraphicCode

S = 64


@pytest.fixture(scope="module")
def setup():
    dec = FaceDecoder("default")
    ds = SyntheticFaceDataset(4, S, seed=3, noise=(0, 0), color_gain=0.0, decoder=dec)
    batch = default_collate([ds[i] for i in range(2)])
    return dec, batch, MoFALoss(dec)


def _grad(loss, y, batch):
    y = y.clone().requires_grad_(True)
    e = loss.unsupervised(y, batch).sum()
    (g,) = torch.autograd.grad(e, y)
    return float(e.detach()), g


def test_unsupervised_loss_is_minimal_at_the_ground_truth_code(setup):
    dec, batch, loss = setup
    sl = GraphicCode.slices(dec.sizes)
    m = dec.model
    whiten = torch.ones(sum(dec.sizes.values()))
    whiten[sl["identity"]], whiten[sl["expression"]], whiten[sl["albedo"]] = m.identity_std, m.expression_std, m.albedo_std
    yt = batch["code"]
    e0, g0 = _grad(loss, yt, batch)
    # the landmark term is exactly zero at the truth (the landmarks are the code's projections)
    assert loss.breakdown(yt, batch)["landmarks"] < 1e-8
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        yp = yt.clone()
        yp[:, sl["rotation"]] += 0.05 * torch.randn(2, 3, generator=gen)
        yp[:, sl["translation"]] += torch.tensor([0.5, -0.5, 2.0]) * torch.randn(2, 3, generator=gen)
        yp[:, sl["identity"]] += 0.5 * m.identity_std * torch.randn(2, m.n_identity, generator=gen)
        yp[:, sl["sh"]] += 0.1 * torch.randn(2, 27, generator=gen)
        e1, g1 = _grad(loss, yp, batch)
        assert e1 > 3 * e0
        # gradient (in whitened coordinates) near zero at the truth, clearly non-zero off it
        assert float((g0 * whiten).norm()) < 0.2 * float((g1 * whiten).norm())


def test_code_loss_is_zero_at_the_target_and_grows_with_the_error(setup):
    dec, batch, _ = setup
    yt = batch["code"]
    pp = batch["principal_point"]
    assert torch.allclose(code_loss(dec, yt, yt, S, pp), torch.zeros(2), atol=1e-6)
    sl = GraphicCode.slices(dec.sizes)
    prev = torch.zeros(2)
    for eps in (0.01, 0.05, 0.2):
        y = yt.clone()
        y[:, sl["rotation"]] += eps
        cur = code_loss(dec, y, yt, S, pp)
        assert bool((cur > prev).all())
        prev = cur


def test_each_sample_gets_the_losses_of_its_source(setup):
    dec, batch, loss = setup
    y = batch["code"] + 0.01
    b = dict(batch)
    b["source"] = torch.tensor([0, 2])
    b["code"] = batch["code"].clone()
    b["code"][0] = float("nan")  # a real photo has no target
    out = loss(y, b)
    assert float(out["self_supervised"]) == 0.0
    ref = code_loss(dec, y[1:], batch["code"][1:], S, batch["principal_point"][1:]).mean()
    assert torch.allclose(out["supervised"], ref)
    assert torch.allclose(out["unsupervised"], loss.unsupervised(y, b).mean())
    # only the listed modes are computed
    assert set(loss(y, b, modes=("supervised",))) == {"supervised"}


def test_unknown_landmarks_get_zero_weight_and_keep_the_loss_finite(setup):
    dec, batch, loss = setup
    b = dict(batch)
    b["landmarks"] = batch["landmarks"].clone()
    b["landmarks"][0] = float("nan")
    obs = observation_from_batch(dec, b)
    assert float(obs.weights[0].abs().sum()) == 0.0 and float(obs.weights[1].min()) > 0
    y = (batch["code"] + 0.02).requires_grad_(True)
    e = loss.unsupervised(y, b)
    e.sum().backward()
    assert torch.isfinite(e).all() and torch.isfinite(y.grad).all()
    with pytest.raises(ValueError, match="terms"):
        MoFALoss(dec, terms={"nope": 1.0})


def test_render_size_keeps_the_landmark_term_and_approximates_the_photometric_one(setup):
    dec, batch, loss = setup
    half = MoFALoss(dec, render_size=S // 2)
    y = batch["code"].clone()
    y[:, GraphicCode.slices(dec.sizes)["rotation"]] += 0.05
    full, red = loss.breakdown(y, batch), half.breakdown(y, batch)
    assert abs(full["landmarks"] - red["landmarks"]) < 1e-4 * full["landmarks"]
    assert abs(full["photometric"] - red["photometric"]) < 0.25 * full["photometric"]
