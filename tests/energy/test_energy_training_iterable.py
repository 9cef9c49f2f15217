"""The core's train() on an iterable of dict batches: per-sample mixed modes, schedules, exact resume."""

import pytest
import torch
from torch import nn

from facerig.energy import Problem, lr_factor, train

A = torch.tensor([[2.0, -1.0], [0.5, 1.5]])


class Batches:
    """A fixed list of dict batches: x = A y; half the samples carry their code (self-supervised)."""

    def __init__(self, n_batches=8, batch=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n_batches):
            y = torch.randn(batch, 2, generator=g)
            known = torch.arange(batch) % 2 == 0
            self.items.append({"x": y @ A.T, "code": torch.where(known[:, None], y, torch.nan), "known": known})

    def __iter__(self):
        return iter(self.items)


def batch_loss(net, batch, modes):
    y = net(batch["x"])
    out = {}
    if "unsupervised" in modes:  # the energy: data misfit of the re-synthesised observation
        out["unsupervised"] = ((y @ A.T - batch["x"]) ** 2).sum(1).mean()
    if "self_supervised" in modes:
        k = batch["known"]
        out["self_supervised"] = ((y[k] - batch["code"][k]) ** 2).sum(1).mean()
    return out


def problem():
    return Problem(energy=lambda x, y: ((y @ A.T - x) ** 2).sum(1), batch_loss=batch_loss)


def test_mixed_iterable_training_learns_the_inverse():
    torch.manual_seed(0)
    net = nn.Linear(2, 2, bias=False)
    res = train(net, problem(), Batches(), mode={"unsupervised": 1.0, "self_supervised": 0.5}, steps=400, lr=0.05,
                log_every=100, progress=False, lr_schedule="cosine", warmup=10)
    assert res.history["total"][-1] < 1e-3 * res.history["total"][0]
    assert torch.allclose(net.weight.detach(), torch.linalg.inv(A), atol=1e-2)  # the exact inverse map


def test_iterable_training_resumes_exactly(tmp_path):
    def run(steps, resume, path):
        torch.manual_seed(1)
        net = nn.Linear(2, 2, bias=False)
        train(net, problem(), Batches(), mode="unsupervised", steps=steps, lr=0.02, log_every=10, progress=False,
              checkpoint=path, resume=resume)
        return net.weight.detach().clone()

    full = run(40, False, tmp_path / "a.pt")
    run(20, False, tmp_path / "b.pt")
    resumed = run(40, True, tmp_path / "b.pt")
    assert torch.equal(full, resumed)


def test_lr_factor_schedules():
    assert lr_factor("constant", 5, 100, warmup=10) == pytest.approx(0.5)
    assert lr_factor("cosine", 55, 100, warmup=10) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor("step", 80, 100) == pytest.approx(0.1)
    assert lr_factor(lambda s, n: s / n, 3, 4) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor("linear", 1, 10)
