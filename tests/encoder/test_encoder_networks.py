"""FaceEncoder: output layout, focal pass-through, untrained = mean frontal face, save/load."""

import pytest
import torch

from facerig.encoder import FaceEncoder, load_encoder
from facerig.encoder.networks import MobileBackbone, ResNetBackbone
from facerig.face import FaceDecoder
from facerig.model import GraphicCode

S = 64


def _inputs(B=3):
    g = torch.Generator().manual_seed(1)
    img = torch.rand(B, S, S, 3, generator=g)
    focal = torch.tensor([[150.0], [210.0], [400.0]])[:B]
    pp = torch.tensor([[32.0, 32.0], [80.0, -10.0], [10.0, 50.0]])[:B]
    return img, focal, pp


@pytest.mark.parametrize("arch", ["mobile", "resnet"])
def test_output_matches_graphic_code_layout_and_focal_passes_through(arch):
    enc = FaceEncoder(arch, S)
    torch.nn.init.normal_(enc.head.weight, std=0.05)  # a "trained" head
    img, focal, pp = _inputs()
    y = enc(img, focal, pp)
    dec = FaceDecoder("default")
    assert y.shape == (3, sum(dec.sizes.values())) == (3, enc.code_size)
    code = GraphicCode.from_vector(y, dec.sizes)
    assert torch.equal(code.to_vector(), y)
    assert torch.equal(code.focal, focal)
    assert code.sh.shape == (3, 9, 3) and torch.isfinite(y).all()
    # the backbone's feature sizes
    assert enc.backbone.out_features == (MobileBackbone().out_features if arch == "mobile" else ResNetBackbone().out_features)


def test_untrained_encoder_renders_the_mean_frontal_face_centred_in_the_crop():
    enc = FaceEncoder("mobile", S).eval()
    img, focal, pp = _inputs()
    dec = FaceDecoder("default")
    with torch.no_grad():
        y = enc(img, focal, pp)
        ref = dec.zero_code(3, image_size=S)
        code = dec.as_code(y)
        for part in ("identity", "expression", "albedo", "rotation", "sh"):
            assert torch.allclose(getattr(code, part), getattr(ref, part), atol=1e-6), part
        lm = dec.landmarks2d(y, (S, S), pp, kind="mediapipe468")
        out = dec(y, (S, S), pp)
    # every crop camera: the landmark box is centred and fills 1 / (1 + 2 margin) of the crop
    # (exactly for a centred principal point; off-axis crops see the face obliquely)
    lo, hi = lm.min(1).values, lm.max(1).values
    assert torch.allclose((lo + hi)[0] / 2, torch.full((2,), S / 2.0), atol=0.5)
    assert torch.allclose((lo + hi) / 2, torch.full((3, 2), S / 2.0), atol=0.06 * S)
    side = (hi - lo).max(1).values
    assert torch.allclose(side, torch.full((3,), S / (1 + 2 * enc.margin)), rtol=0.06)
    assert bool((out.alpha[:, S // 2, S // 2] == 1).all())
    # frontal: the face's left/right landmarks are mirror images about the box centre
    assert abs(float(lm[0, :, 0].mean()) - S / 2) < 0.5


def test_save_load_round_trip(tmp_path):
    enc = FaceEncoder("resnet", S, backbone={"widths": (8, 16, 16, 32)})
    torch.nn.init.normal_(enc.head.weight, std=0.05)
    enc.eval()
    img, focal, pp = _inputs()
    y = enc(img, focal, pp)
    enc.save(tmp_path / "e.pt")
    back = load_encoder(tmp_path / "e.pt")
    assert back.config == enc.config and back.input_size == S
    assert torch.equal(back(img, focal, pp), y)
    enc.save(tmp_path / "h.pt", half=True)
    assert (tmp_path / "h.pt").stat().st_size < 0.7 * (tmp_path / "e.pt").stat().st_size
    assert torch.allclose(load_encoder(tmp_path / "h.pt")(img, focal, pp), y, atol=0.05)
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "missing.pt")


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="input_size"):
        FaceEncoder("mobile", 100)
    with pytest.raises(ValueError, match="arch"):
        FaceEncoder("vgg", S)
    enc = FaceEncoder("mobile", S)
    with pytest.raises(ValueError, match="images"):
        enc(torch.rand(1, 32, 32, 3), torch.ones(1, 1), torch.zeros(1, 2))


@pytest.mark.parametrize("arch", ["mobile", "resnet"])
def test_folded_inference_path_matches_the_module_and_follows_weight_changes(arch):
    torch.manual_seed(0)
    enc = FaceEncoder(arch, S, backbone={"width": 0.5} if arch == "mobile" else {"widths": (8, 16, 16, 32)})
    with torch.no_grad():  # non-trivial BatchNorm statistics and a non-zero head
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        enc.head.weight.normal_(0, 0.05)
    enc.eval()
    img, focal, pp = _inputs()
    plain = enc(img, focal, pp)  # autograd on: the module itself
    with torch.inference_mode():
        folded = enc(img, focal, pp)
    assert enc._fused is not None  # the folded copy was used
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in enc._fused[2].modules())
    assert "_fused" not in "".join(enc.state_dict())
    torch.testing.assert_close(folded, plain.detach(), rtol=1e-4, atol=1e-4)
    # an in-place weight change (as an optimiser step or load_state_dict makes) rebuilds the copy
    with torch.no_grad():
        first = next(m for m in enc.backbone.modules() if isinstance(m, torch.nn.Conv2d))
        first.weight.mul_(1.7)
        changed = enc(img, focal, pp)
    with torch.enable_grad():
        expected = enc(img, focal, pp).detach()
    torch.testing.assert_close(changed, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(changed, folded)


def test_seeded_encoders_start_from_the_same_weights():
    """FaceEncoder(seed=s): the same random initial weights for the same seed (a `facerig train`
    run is reproducible), different ones for another seed, and the global random state untouched."""
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = FaceEncoder("mobile", 64, backbone={"width": 0.25}, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    b = FaceEncoder("mobile", 64, backbone={"width": 0.25}, seed=3)
    c = FaceEncoder("mobile", 64, backbone={"width": 0.25}, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point() and sa[k].numel() > 1)
