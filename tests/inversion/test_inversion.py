"""facerig.inversion: the optimisation, learned and hybrid solvers on small problems; the encoder inversion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facerig.features import ModuleFeatures, VGG16Features
from facerig.inversion import (LearnedInverse, feature_error, inversion_energy, invert, invert_hybrid,
                               invert_learned, train_learned_inverse)
from facerig.inversion.data import CropSampler


def _random_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())


def _smooth_image(seed=0, size=12):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)


def test_energy_terms_and_values_at_the_target():
    phi = ModuleFeatures(_random_net())
    x0 = _smooth_image()
    target = phi(x0)
    E = inversion_energy(phi, prior="both", lam_alpha=0.5, lam_tv=0.25)
    parts = E.breakdown(target, x0)
    assert set(parts) == {"feature", "alpha", "tv", "total"}
    assert float(parts["feature"].detach()) == pytest.approx(0.0, abs=1e-12)
    y = torch.rand_like(x0)
    with torch.no_grad():
        torch.testing.assert_close(inversion_energy(phi, prior="none")(target, y), feature_error(phi, y, target))
    assert set(inversion_energy(phi, prior="tv").breakdown(target, x0)) == {"feature", "tv", "total"}
    with pytest.raises(ValueError, match="prior"):
        inversion_energy(phi, prior="l2")


def test_optimisation_inverts_a_small_random_conv_net():
    phi = ModuleFeatures(_random_net(1))
    x0 = _smooth_image(1)
    target = {k: v.detach() for k, v in phi(x0).items()}
    start_err = float(feature_error(phi, torch.full_like(x0, 0.5), target))
    res = invert(phi, target, (12, 12), steps=150, lr=0.05, prior="both", lam_alpha=1e-4, lam_tv=1e-4)
    assert res.method == "opt" and res.image.shape == x0.shape
    assert float(res.image.min()) >= 0 and float(res.image.max()) <= 1
    assert res.result.history[-1] < 0.05 * res.result.history[0]
    assert float(res.feature_error) < 0.02 * start_err
    assert float((res.image - x0).abs().mean()) < 0.05  # a 16-channel stride-1 net is nearly injective
    lb = invert(phi, target, (12, 12), steps=20, solver="lbfgs", prior="tv", lam_tv=1e-4)
    assert float(lb.feature_error) < 0.05 * start_err


def test_learned_inverse_shapes_training_step_and_hybrid(tmp_path):
    vgg = VGG16Features(layers=("conv1_2", "conv2_2"), weights="random", seed=0)
    g = torch.Generator().manual_seed(0)
    photos = [torch.rand(40, 50, 3, generator=g), torch.rand(30, 30, 3, generator=g)]
    sampler = CropSampler(photos, size=16)
    assert sampler(3, torch.Generator().manual_seed(1)).shape == (3, 16, 16, 3)
    inverse, result = train_learned_inverse(vgg, sampler, width=8, steps=30, batch_size=4, lr=3e-3, log_every=10,
                                            progress=False)
    loss = result.history["self_supervised"]
    assert result.n_steps == 30 and loss[-1] < loss[0]
    x = sampler(2, torch.Generator().manual_seed(5))
    feats = vgg(x)
    out = inverse(feats)
    assert out["conv1_2"].shape == x.shape and out["conv2_2"].shape == x.shape
    path = tmp_path / "inv.pt"
    inverse.save(path)
    again = LearnedInverse.load(path)
    torch.testing.assert_close(again(feats)["conv2_2"], out["conv2_2"], atol=2e-3, rtol=0)  # float16 storage
    phi = lambda y: {"conv2_2": vgg(y)["conv2_2"]}  # noqa: E731
    learned = invert_learned(again, {"conv2_2": feats["conv2_2"]}, features=phi)
    assert learned.method == "learned" and torch.isfinite(learned.feature_error).all()
    tgt = {"conv2_2": feats["conv2_2"].detach()}
    hyb = invert_hybrid(phi, tgt, again, steps=15, lr=0.02)
    assert hyb.method == "hybrid" and hyb.image.shape == x.shape
    assert bool((hyb.feature_error < float(feature_error(phi, learned.image, tgt).max()) + 1e-6).all())
    with pytest.raises(ValueError, match="no decoder"):
        again({"conv3_3": torch.zeros(1, 2, 2, 256)})


def test_encoder_inversion_round_trip_and_small_problem():
    from facerig.encoder import FaceEncoder
    from facerig.inversion import invert_encoder, raw_from_code

    enc = FaceEncoder(arch="mobile", input_size=32, seed=0, backbone={"width": 0.25, "last": 32}).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        enc.head.weight.normal_(0, 0.05)
    focal = torch.full((2, 1), 80.0)
    pp = torch.tensor([[16.0, 16.0], [15.0, 17.5]])
    raw = torch.randn(2, enc.code_size - 1, dtype=torch.float64) * 0.5
    enc64 = enc.double()
    code = enc64.decode_raw(raw, focal.double(), pp.double())
    torch.testing.assert_close(raw_from_code(enc64, code, pp.double()), raw)
    enc = enc.float()
    x0 = _smooth_image(3, 32)
    with torch.no_grad():
        target = enc(x0, focal[:1], pp[:1])
    res = invert_encoder(enc, target, pp[:1], steps=60, lr=0.05, prior="tv", lam_tv=1e-4)
    assert res.image.shape == (1, 32, 32, 3)
    start = feature_error(lambda y: enc.head(enc.features(y)), torch.full_like(x0, 0.5),
                          raw_from_code(enc, target, pp[:1]))
    assert float(res.feature_error) < 0.1 * float(start)
    assert res.info["code"].shape == target.shape
