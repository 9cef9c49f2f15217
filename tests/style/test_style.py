"""facerig.style: the energy (analytic values, finite differences), the three solvers on small
problems (a tiny random feature network), post-processing, video, the rig texture path and the CLI."""

import numpy as np
import pytest
import torch
from torch import nn

from facerig.features import HED_INSTALL, ModuleFeatures
from facerig.style import (FlexibleSolver, StyleEnergy, TransformNet, gatys, load_fast, load_flexible,
                           preserve_color, save_fast, save_flexible, stylize, train_fast, train_flexible)
from facerig.style.post import guided_filter, rgb_to_yiq
from facerig.style.training import StyleBatches

try:
    from facerig.features import hed_weights_path

    hed_weights_path()
    HAVE_HED = True
except FileNotFoundError:
    HAVE_HED = False


def tiny_features(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential()
    net.add_module("c1", nn.Conv2d(3, 6, 3, padding=1))
    net.add_module("r1", nn.ReLU())
    net.add_module("p", nn.AvgPool2d(2))
    net.add_module("c2", nn.Conv2d(6, 8, 3, padding=1))
    net.add_module("r2", nn.ReLU())
    net = net.to(dtype).requires_grad_(False)
    return ModuleFeatures(net, layers=("r1", "r2"))


def tiny_energy(dtype=torch.float32):
    return StyleEnergy(features=tiny_features(dtype), style_layers=("r1", "r2"), content_layers=("r2",))


def images(n=1, size=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, size, size, 3, generator=g).to(dtype)


def test_energy_terms_against_hand_computed_values():
    """content = ||phi(y) - phi(c)||^2 / ||phi(c)||^2, style = sum_l ||G_l - T_l||^2 / ||T_l||^2,
    tv = mean squared forward difference (summed over channels); weights multiply them."""
    E = StyleEnergy(features=tiny_features(), style_layers=("r1", "r2"), content_layers=("r2",),
                    content_weight=2.0, style_weight=3.0, tv_weight=0.5)
    c, s, y = images(1, 8, 0), images(1, 8, 1), images(1, 8, 2)
    tg = E.targets(c, s[0])
    fy, fc, fs = E.features(y), E.features(c), E.features(s)

    def gram(f):
        f = f.reshape(-1, f.shape[-1])
        return f.T @ f / f.shape[0]

    content = ((fy["r2"] - fc["r2"]) ** 2).sum() / (fc["r2"] ** 2).sum()
    style = sum(((gram(fy[n]) - gram(fs[n])) ** 2).sum() / (gram(fs[n]) ** 2).sum() for n in ("r1", "r2"))
    dy = torch.zeros_like(y)
    dx = torch.zeros_like(y)
    dy[:, :-1] = y[:, 1:] - y[:, :-1]
    dx[:, :, :-1] = y[:, :, 1:] - y[:, :, :-1]
    tv = (dy ** 2 + dx ** 2).sum() / 64
    parts = E.breakdown(y, tg)
    assert float(parts["content"]) == pytest.approx(2 * float(content), rel=1e-5)
    assert float(parts["style"]) == pytest.approx(3 * float(style), rel=1e-5)
    assert float(parts["tv"]) == pytest.approx(0.5 * float(tv), rel=1e-5)
    assert float(parts["total"]) == pytest.approx(float(parts["content"] + parts["style"] + parts["tv"]), rel=1e-6)
    # intensity scales the style term only; the content image has zero content loss
    p2 = E.breakdown(y, tg, intensity=2.0)
    assert float(p2["style"]) == pytest.approx(2 * float(parts["style"]), rel=1e-6)
    assert float(E.breakdown(c, tg)["content"]) == pytest.approx(0.0, abs=1e-10)
    # per-layer weights: a dict (missing layers 0) equals the (B, L) tensor form
    a = E.breakdown(y, tg, layer_weights={"r1": 0.5})["style"]
    b = E.breakdown(y, tg, layer_weights=torch.tensor([[0.5, 0.0]]))["style"]
    assert torch.allclose(a, b)
    with pytest.raises(ValueError, match="layer_weights"):
        E.breakdown(y, tg, layer_weights={"nope": 1.0})


def test_style_mixing_is_the_weighted_mean_of_grams():
    E = tiny_energy()
    s1, s2 = images(1, 8, 3)[0], images(1, 8, 4)[0]
    g1, g2 = E.grams(s1), E.grams(s2)
    m = E.mix([s1, s2], [3.0, 1.0])
    for n in E.style_layers:
        assert torch.allclose(m[n], 0.75 * g1[n] + 0.25 * g2[n], atol=1e-6)
    with pytest.raises(ValueError, match="mix"):
        E.mix([s1, s2], [1.0])


def test_energy_gradient_matches_finite_differences():
    E = tiny_energy(torch.float64)
    c, s = images(1, 6, 0, torch.float64), images(1, 6, 1, torch.float64)
    tg = E.targets(c, s[0])
    y = images(1, 6, 2, torch.float64).requires_grad_(True)
    m = torch.rand(1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    assert torch.autograd.gradcheck(lambda x: E(x, tg, 1.5, {"r1": 1.0, "r2": 0.3}, m), (y,))


def test_gatys_lowers_the_energy_on_a_small_problem():
    E = tiny_energy()
    c, s = images(1, 16, 0), images(1, 16, 1)
    tg = E.targets(c, s[0])
    e0 = float(E(c, tg))
    res = gatys(E, tg, iterations=15)
    assert res.history[-1] < 0.5 * e0
    assert res.x.shape == c.shape and float(res.x.min()) >= 0 and float(res.x.max()) <= 1
    # with a mask, the content is kept exactly where the mask is 0
    mask = torch.zeros(1, 16, 16)
    mask[:, :, 8:] = 1
    r2 = gatys(E, tg, iterations=5, mask=mask)
    assert torch.equal(r2.x[:, :, :8], c[:, :, :8])
    assert not torch.allclose(r2.x[:, :, 8:], c[:, :, 8:])


def test_fast_network_one_training_step_decreases_the_loss():
    E = tiny_energy()
    grams = E.grams(images(1, 16, 1)[0])
    data = images(1, 16, 0)
    torch.manual_seed(0)
    net = TransformNet(width=4, n_res=1)

    def loss():
        with torch.no_grad():
            return float(E(net(data), E.targets(data, grams=grams)))

    before = loss()
    train_fast(net, E, grams, data, steps=1, batch_size=1, lr=1e-3, log_every=1)
    assert loss() < before
    assert net(images(2, 20, 3)).shape == (2, 20, 20, 3)  # any size (multiples of 4 or not)


def test_flexible_solver_shapes_conditioning_determinism(tmp_path):
    E = tiny_energy()
    c, s = images(2, 16, 0), images(1, 16, 1)
    tg = E.targets(c, s[0])
    torch.manual_seed(0)
    fs = FlexibleSolver(n_steps=3, width=4, depth=1, n_layers=2)
    with torch.no_grad():  # make the learned corrections non-zero so the conditioning acts
        for p in fs.parameters():
            p.add_(0.1 * torch.randn_like(p))
    y = fs.solve(E, tg)
    assert y.shape == c.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.equal(y, fs.solve(E, tg))  # deterministic
    assert not torch.allclose(y, fs.solve(E, tg, intensity=3.0))
    assert not torch.allclose(y, fs.solve(E, tg, layer_weights={"r1": 1.0}))
    assert not torch.allclose(y, fs.solve(E, tg, steps=1))
    assert fs.solve(E, tg, grad_size=8).shape == c.shape
    with pytest.raises(ValueError, match="steps"):
        fs.solve(E, tg, steps=4)
    # save / load round trip (half-precision weights)
    save_flexible(tmp_path / "f.pt", fs)
    fs2 = load_flexible(tmp_path / "f.pt")
    assert torch.allclose(fs2.solve(E, tg), y, atol=2e-2)


def test_untrained_flexible_step_is_a_normalised_gradient_step():
    E = tiny_energy()
    c, s = images(1, 12, 0), images(1, 12, 1)
    tg = E.targets(c, s[0])
    fs = FlexibleSolver(n_steps=1, width=4, depth=1, n_layers=2, step=0.05)
    y0 = c.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(E(y0, tg).sum(), y0)
    want = (c - 0.05 * g / g.square().mean().sqrt()).clamp(0, 1)
    assert torch.allclose(fs.solve(E, tg), want, atol=1e-5)


def test_flexible_training_step_lowers_the_energy():
    E = tiny_energy()
    crops = images(4, 16, 0)
    sb = StyleBatches(E, crops, [images(1, 16, 1)[0]], n_procedural=2, batch_size=2, style_size=16)
    fs = FlexibleSolver(n_steps=2, width=4, depth=1, n_layers=2)
    batch = next(StyleBatches(E, crops, [images(1, 16, 1)[0]], n_procedural=2, batch_size=2, style_size=16, seed=0))

    def loss():
        tg = E.targets(batch["content"], grams=batch["grams"])
        with torch.no_grad():
            return float(E(fs.solve(E, tg, intensity=batch["intensity"], layer_weights=batch["layer_weights"]), tg,
                           batch["intensity"], batch["layer_weights"]).mean())

    before = loss()
    res = train_flexible(fs, E, sb, steps=1, lr=1e-2, log_every=1)
    assert res.n_steps == 1 and loss() < before


def test_post_processing():
    c, s = images(1, 16, 0), images(1, 16, 1)
    out = preserve_color(s, c, match_luminance=False)
    # the result's chrominance is the content's (where no clamping happened), its luminance the stylised one's
    yo, yc, ys = rgb_to_yiq(out), rgb_to_yiq(c), rgb_to_yiq(s)
    ok = ((yiq := torch.cat([ys[..., :1], yc[..., 1:]], -1)) @ torch.linalg.inv(
        torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])).T)
    inside = ((ok >= 0) & (ok <= 1)).all(-1)
    assert torch.allclose(yo[inside], yiq[inside], atol=1e-5)
    # the guided filter keeps a constant and (small eps, guide = source) the guide itself
    const = torch.full((1, 16, 16, 3), 0.3)
    assert torch.allclose(guided_filter(c, const, 2, 1e-3), const, atol=1e-6)
    gray = c.mean(-1, keepdim=True)
    assert torch.allclose(guided_filter(gray, gray, 2, 1e-8), gray, atol=1e-3)


def test_stylize_api_and_errors(tmp_path):
    E = tiny_energy()
    c, s = images(1, 16, 0)[0], images(1, 16, 1)[0]
    r = stylize(c, s, "gatys", iterations=3, energy=E, preserve_colors=True, photorealism=True)
    assert r.image.shape == c.shape and set(r.energy) == {"content", "style", "tv", "total"}
    net = TransformNet(width=4, n_res=1)
    save_fast(tmp_path / "n.pt", net)
    r = stylize(c, None, "fast", model=tmp_path / "n.pt", energy=E, intensity=0.5)
    with torch.no_grad():
        full = load_fast(tmp_path / "n.pt")(c[None])[0]
    assert torch.allclose(r.image, (c + 0.5 * (full - c)).clamp(0, 1), atol=1e-5)
    with pytest.raises(ValueError, match="method"):
        stylize(c, s, "magic", energy=E)
    with pytest.raises(ValueError, match="style"):
        stylize(c, None, "gatys", energy=E)
    with pytest.raises(ValueError, match="model"):
        stylize(c, s, "fast", energy=E)
    with pytest.raises(ValueError, match="mask"):
        stylize(c, s, "gatys", energy=E, mask=torch.ones(3, 3))


def test_video_flow_and_stylize_video(tmp_path):
    from facerig.style.video import optical_flow, stylize_video, warp
    from facerig.video import VideoReader, VideoWriter

    g = np.random.default_rng(0)
    base = (np.kron(g.random((12, 12, 3)), np.ones((4, 4, 1))) * 255).astype(np.uint8)  # 48x48 blocks
    import cv2

    base = cv2.GaussianBlur(base, (5, 5), 1.5)
    frames = [np.roll(base, k, axis=1) for k in range(3)]  # moves 1 px right per frame
    flow = optical_flow(frames[1], frames[0])  # current -> previous: about -1 px in x
    assert abs(float(np.median(flow[8:-8, 8:-8, 0])) + 1.0) < 0.2
    w = warp(frames[0].astype(np.float32), flow)
    assert np.abs(w[8:-8, 8:-8] - frames[1][8:-8, 8:-8]).mean() < 6
    path = tmp_path / "clip.avi"
    with VideoWriter(path, 10, (48, 48)) as vw:
        for f in frames:
            vw.write(f)
    net = TransformNet(width=4, n_res=1)
    r = stylize_video(path, None, tmp_path / "out.avi", method="fast", model=net, size=32, temporal=1.0)
    assert r["frames"] == 3
    with VideoReader(tmp_path / "out.avi") as v:
        assert v.size == (32, 32) and sum(1 for _ in v) == 3


def test_rig_texture_path(tmp_path):
    from facerig.io import write_image
    from facerig.model import export_rig_glb
    from facerig.model.glb import glb_mesh
    from facerig.style.face import stylize_rig, uv_mask

    # a square of two triangles whose UVs cover the left half of the texture
    verts = np.array([[-5, -5, 0], [5, -5, 0], [5, 5, 0], [-5, 5, 0]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uvs = np.array([[0, 1], [0.5, 1], [0.5, 0], [0, 0]], float)
    tex = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    m = uv_mask(uvs, faces, (32, 32))
    assert float(m[:, :15].min()) == 1.0 and float(m[:, 17:].max()) == 0.0
    rig = tmp_path / "rig"
    rig.mkdir()
    D = np.zeros((1, 4, 3))
    D[0, :, 2] = 1.0
    export_rig_glb(rig / "rig.glb", verts, faces, D, ["jawOpen"], uvs=uvs, texture=tex)
    write_image(rig / "texture.png", tex)
    (rig / "tracking.csv").write_text("frame,jawOpen\n0,0.0\n1,1.0\n")
    net = TransformNet(width=4, n_res=1)
    with torch.no_grad():
        net.out.bias.fill_(0.5)  # a visible change
    r = stylize_rig(rig, None, tmp_path / "out", method="fast", model=net)
    styled = glb_mesh(r["rig"])
    orig = glb_mesh(rig / "rig.glb")
    assert np.allclose(styled["positions"], orig["positions"]) and np.allclose(styled["targets"], orig["targets"])
    assert styled["texture"] == r["texture"].read_bytes() != orig["texture"]
    from facerig.style import load_image

    new = load_image(r["texture"])
    old = torch.from_numpy(tex).float() / 255
    assert torch.allclose(new[:, 20:], old[:, 20:], atol=1 / 255 + 1e-6)  # outside the UV region: kept
    assert not torch.allclose(new[:, :12], old[:, :12], atol=0.05)
    assert r["preview"].is_file()


def test_cli_bad_inputs_exit_2(tmp_path, capsys):
    from types import SimpleNamespace

    from facerig.cli import main

    def run_cli(*args):
        code = main(["style", *args])
        return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)

    r = run_cli("skimage:astronaut", "-o", str(tmp_path / "x.png"), "--method", "fast")
    assert r.returncode == 2 and "--model" in r.stderr
    r = run_cli(str(tmp_path / "missing.png"), "skimage:gravel", "-o", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run_cli("skimage:astronaut", "skimage:gravel", "skimage:brick", "-o", str(tmp_path / "x.png"), "--mix", "1")
    assert r.returncode == 2 and "--mix" in r.stderr
    r = run_cli("skimage:astronaut", "-o", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "STYLE" in r.stderr
    r = run_cli("--rig", str(tmp_path / "nope"), "skimage:gravel")
    assert r.returncode == 2 and "--rig" in r.stderr
    r = run_cli("skimage:astronaut", "skimage:gravel", "-o", str(tmp_path / "x.png"), "--method", "magic")
    assert r.returncode == 2 and "--method" in r.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.skipif(not HAVE_HED, reason=f"trained VGG16 weights absent: {HED_INSTALL}")
def test_gatys_with_trained_vgg_lowers_the_energy():
    from facerig.style import get_energy, load_image, resize_image

    E = get_energy()
    c = resize_image(load_image("skimage:astronaut"), 32)
    s = load_image("skimage:gravel", 32)
    r = stylize(c, s, "gatys", iterations=5, energy=E)
    tg = E.targets(c[None], s)
    assert float(r.energy["total"][0]) < 0.5 * float(E(c[None], tg)[0])


def test_flexible_surrogate_has_the_energy_value_and_gradient():
    E = tiny_energy(torch.float64)
    c, s = images(1, 8, 0, torch.float64), images(1, 8, 1, torch.float64)
    tg = E.targets(c, s[0])
    fs = FlexibleSolver(n_steps=1, width=4, depth=1, n_layers=2)
    ctx = fs.context(E, tg, intensity=2.0)
    ctx.surrogate = []
    d = (0.1 * images(1, 8, 2, torch.float64)).requires_grad_(True)
    ctx.gradient(c + d)
    (gs,) = torch.autograd.grad(ctx.surrogate[0], d)
    y = (c + d).detach().requires_grad_(True)
    e = E(y, tg, 2.0).sum()
    (ge,) = torch.autograd.grad(e, y)
    assert float(ctx.surrogate[0].detach()) == pytest.approx(float(e.detach()), rel=1e-10)
    assert torch.allclose(gs, ge)
