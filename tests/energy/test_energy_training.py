"""Training modes, determinism, checkpoints and unrolled networks."""

import torch

from facerig.energy import (
    DirectCNN,
    Problem,
    ProxGradLayer,
    Unrolled,
    load_checkpoint,
    prox_l1,
    prox_tv,
    save_checkpoint,
    total_variation,
    train,
    tv_unrolled,
)

A = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, -0.5], [0.3, 0.0, 1.0], [1.0, 1.0, 1.0]])


def toy_problem():
    """x = A y + noise, E(x, y) = ||A y - x||^2 + 0.1 ||y||^2; the ridge solution is the solver."""

    def energy(x, y):
        return (y @ A.T - x).square().sum(-1) + 0.1 * y.square().sum(-1)

    ridge = torch.linalg.solve(A.T @ A + 0.1 * torch.eye(3), A.T)
    return Problem(
        energy=energy,
        solve=lambda x: x @ ridge.T,
        sample_prior=lambda n, g: torch.randn(n, 3, generator=g),
        synthesize=lambda y: y @ A.T + 0.05 * torch.randn(y.shape[0], 4),
    )


def toy_data(n=64):
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 3, generator=g) @ A.T


def test_each_mode_and_a_mix_lower_their_loss():
    problem, data = toy_problem(), toy_data()
    for mode in ("unsupervised", "supervised", "self_supervised", {"unsupervised": 1.0, "self_supervised": 0.5}):
        net = torch.nn.Linear(4, 3)
        res = train(net, problem, data, mode=mode, steps=150, batch_size=16, lr=0.05, log_every=25, progress=False)
        keys = [mode] if isinstance(mode, str) else list(mode)
        for k in [*keys, "total"]:
            assert res.history[k][-1] < 0.5 * res.history[k][0], (mode, k, res.history[k])
    # the unsupervised optimum of this quadratic energy is the ridge solution
    net = torch.nn.Linear(4, 3, bias=False)
    train(net, problem, data, mode="unsupervised", steps=600, batch_size=32, lr=0.05, progress=False)
    assert torch.allclose(net(data), problem.solve(data), atol=2e-2)


def test_training_is_deterministic_and_resumes_exactly(tmp_path):
    problem, data = toy_problem(), toy_data()
    mix = {"supervised": 1.0, "self_supervised": 1.0}

    def run(steps, **kw):
        net = torch.nn.Linear(4, 3)
        torch.manual_seed(123)  # the caller's RNG must not matter
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(0.1)
        res = train(net, problem, data, mode=mix, steps=steps, batch_size=8, lr=0.01, log_every=20,
                    seed=7, progress=False, **kw)
        return net, res

    a, ra = run(100)
    b, _ = run(100)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    ckpt = tmp_path / "run" / "ckpt.pt"
    run(60, checkpoint=ckpt)
    assert ckpt.is_file() and not list(ckpt.parent.glob("*.tmp"))
    c, rc = run(100, checkpoint=ckpt, resume=True)
    assert all(torch.allclose(p, q, atol=1e-7) for p, q in zip(a.parameters(), c.parameters()))
    assert rc.n_steps == 100 and rc.steps == ra.steps
    # checkpoint round trip
    net = torch.nn.Linear(4, 3)
    info = load_checkpoint(ckpt, net)
    assert info["step"] == 100 and torch.equal(net.weight, c.weight)
    save_checkpoint(tmp_path / "x.pt", net, step=3, extra={"note": "hi"})
    other = torch.nn.Linear(4, 3)
    assert load_checkpoint(tmp_path / "x.pt", other)["extra"] == {"note": "hi"}
    assert torch.equal(other.bias, net.bias)


def test_trained_unrolled_tv_beats_plain_iterations():
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.avg_pool2d(torch.rand(96, 1, 24, 24, generator=g), 5, 1, 2).permute(0, 2, 3, 1)
    noisy = base + 0.1 * torch.randn(base.shape, generator=g)
    train_x, test_x = noisy[:64], noisy[64:]
    w = 0.1

    def energy(x, y):
        return (0.5 * (y - x).square().sum(dim=(1, 2, 3)) + w * total_variation(y)) / (24 * 24)

    K = 4
    plain = tv_unrolled(K, w)
    net = tv_unrolled(K, w)
    with torch.no_grad():
        e_plain = energy(test_x, plain(test_x)).mean()
    res = train(net, Problem(energy=energy), train_x, mode="unsupervised", steps=80, batch_size=16, lr=0.03,
                log_every=20, progress=False)
    assert res.history["unsupervised"][-1] < res.history["unsupervised"][0]
    with torch.no_grad():
        e_net = energy(test_x, net(test_x)).mean()
        e_fgp = energy(test_x, prox_tv(test_x, w, max_iter=K, tol=0)).mean()
        e_opt = energy(test_x, prox_tv(test_x, w, max_iter=2000, tol=1e-7)).mean()
    # closes most of the gap to the optimum that K plain iterations leave
    assert e_net < e_plain and e_net < e_fgp
    assert (e_net - e_opt) < 0.5 * (e_plain - e_opt)


def test_unrolled_building_blocks():
    # untrained TV layers are the primal-dual algorithm: many layers reach the ROF solution
    x = torch.rand(1, 12, 10, 2, dtype=torch.float64)
    deep = tv_unrolled(400, 0.1).double()
    with torch.no_grad():
        assert torch.allclose(deep(x), prox_tv(x, 0.1, max_iter=3000, tol=1e-10), atol=1e-4)
    # inference fast path == autograd path, with and without a mask
    net = tv_unrolled(3, 0.1).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        fast, fast_m = net(x), net(x, torch.rand(1, 12, 10) > 0.5)
    torch.manual_seed(0)
    slow, slow_m = net(x), net(x, torch.rand(1, 12, 10) > 0.5)
    assert torch.allclose(fast, slow) and fast_m.shape == x.shape
    # LISTA-style learned ISTA step: at init, one layer == one ISTA step
    D = torch.randn(6, 4)
    b = torch.randn(3, 6)
    layer = ProxGradLayer(lambda bb, z: (z @ D.T - bb) @ D, lambda v, t: prox_l1(v, t, 0.1), step=0.05)
    lista = Unrolled([layer], init=lambda bb: torch.zeros(bb.shape[0], 4))
    z1 = prox_l1(0.05 * (b @ D), 0.05, 0.1)
    assert torch.allclose(lista(b), z1, atol=1e-6)
    cnn = DirectCNN(width=4, depth=3, masked=True)
    assert cnn(torch.rand(2, 9, 7, 3), torch.ones(2, 9, 7, dtype=torch.bool)).shape == (2, 9, 7, 3)
