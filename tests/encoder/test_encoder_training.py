"""Encoder training: a step lowers the loss in each mode, deterministic resume, run-folder outputs."""

import csv

import pytest
import torch
from torch.utils.data import default_collate

from facerig.encoder import FaceEncoder, load_encoder
from facerig.encoder.losses import MoFALoss
from facerig.encoder.synthetic_data import SyntheticFaceDataset
from facerig.encoder.training import BatchStream, TrainOptions, make_problem, train_encoder
from facerig.energy import train
from facerig.face import FaceDecoder

S = 64


class Items(torch.utils.data.Dataset):
    """Precomputed items (rendering them once keeps the tests fast)."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def data():
    dec = FaceDecoder("default")
    gen = SyntheticFaceDataset(10, S, seed=5, decoder=dec)
    ds = Items([gen[i] for i in range(len(gen))])
    return dec, ds, default_collate([ds[i] for i in range(6)])


def _small_encoder():
    torch.manual_seed(0)
    return FaceEncoder("resnet", S, backbone={"widths": (8, 16, 16, 32)})


@pytest.mark.parametrize("mode,source", [("unsupervised", 0), ("self_supervised", 1), ("supervised", 2)])
def test_one_training_step_lowers_the_loss_in_each_mode(data, mode, source):
    dec, _, batch = data
    b = dict(batch)
    b["source"] = torch.full((6,), source)
    if source == 0:
        b["code"] = torch.full_like(batch["code"], float("nan"))
    enc = _small_encoder()
    problem = make_problem(MoFALoss(dec))

    def loss_now():
        with torch.no_grad():
            return float(problem.batch_loss(enc, b, (mode,))[mode])

    enc.train()
    before = loss_now()
    train(enc, problem, [b], mode=mode, steps=1, lr=3e-3, optimizer="adamw", progress=False, log_every=1)
    enc.train()
    after = loss_now()
    assert after < before, (mode, before, after)


def test_batch_stream_is_seeded_and_resumable(data):
    ds = Items([{"code": torch.full((3,), float(i))} for i in range(12)])
    s = BatchStream(ds, 4, seed=1)
    full = [b["code"] for _ in range(2) for b in s]  # two epochs of 3 batches
    assert len(full) == 6
    assert sorted(torch.cat(full[:3])[:, 0].tolist()) == list(range(12))  # an epoch visits every item once
    assert not torch.equal(full[0], full[3]) or not torch.equal(full[1], full[4])  # new order per epoch
    s2 = BatchStream(ds, 4, seed=1)
    s2.start_at(4)
    rest = [b["code"] for b in s2]
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(rest, full[4:]))


def test_train_encoder_writes_a_run_folder_and_resumes_exactly(data, tmp_path):
    dec, ds, _ = data
    val = Items([ds[8], ds[9]])
    cfg = TrainOptions(mode="mixed", steps=4, batch_size=4, log_every=2, warmup=0, val_every=4, lr_schedule="constant")
    enc = _small_encoder()
    train_encoder(enc, ds, tmp_path / "a", options=cfg, val_dataset=val, progress=False, decoder=dec, log=lambda s: None)
    a = tmp_path / "a"
    for name in ("config.json", "checkpoint.pt", "log.csv", "validation.csv", "encoder.pt", "images/step_000004.png"):
        assert (a / name).is_file(), name
    rows = list(csv.DictReader(open(a / "validation.csv")))
    assert [r["step"] for r in rows] == ["0", "4"]
    assert float(rows[-1]["geometry_mm"]) > 0 and float(rows[-1]["landmarks_px"]) > 0
    # 2 steps, then resume to 4 == 4 steps straight
    enc2 = _small_encoder()
    train_encoder(enc2, ds, tmp_path / "b", options=TrainOptions(**{**cfg.__dict__, "steps": 2}), progress=False, decoder=dec)
    enc3 = _small_encoder()
    with pytest.warns(DeprecationWarning, match="options="):  # the former keyword still works
        train_encoder(enc3, ds, tmp_path / "b", config=cfg, resume=True, progress=False, decoder=dec)
    for p, q in zip(enc.state_dict().values(), enc3.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), atol=1e-6)
    # the run folder loads as an encoder
    back = load_encoder(a)
    x = next(iter(BatchStream(val, 2)))
    with torch.no_grad():
        enc.eval()
        assert torch.allclose(back(x["image"], x["focal"], x["principal_point"]),
                              enc(x["image"], x["focal"], x["principal_point"]), atol=1e-5)


def test_core_train_schedule_and_iterable_checks():
    from facerig.energy import Problem
    from facerig.energy.training import lr_factor

    assert lr_factor("cosine", 1, 100, warmup=10) == pytest.approx(0.1)
    assert lr_factor("cosine", 10, 100, warmup=10) == pytest.approx(1.0)
    assert lr_factor("cosine", 100, 100, warmup=10) == pytest.approx(0.01)
    assert lr_factor("step", 95, 100) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor("linear", 1, 10)
    net = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="batch_loss"):
        train(net, Problem(energy=lambda x, y: y.sum(1)), [torch.zeros(4, 2)], steps=1, progress=False)


def test_train_options_check_the_mode():
    from facerig.encoder import TrainConfig

    assert TrainConfig is TrainOptions  # the former name
    assert TrainOptions(mode={"unsupervised": 1.0}).mode == {"unsupervised": 1.0}
    with pytest.raises(ValueError, match="mode"):
        TrainOptions(mode="bogus")
