"""``facerig prepare`` and ``facerig reconstruct``: outputs, summaries and exit statuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facerig.cli import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """astronaut.png, a faceless image, a corrupt file and a 4-frame synthetic face video."""
    import cv2
    from skimage import data

    from facerig.face.synthetic import SyntheticFaces
    from facerig.video import VideoWriter

    d = tmp_path_factory.mktemp("inputs")
    cv2.imwrite(str(d / "astronaut.png"), data.astronaut()[::2, ::2, ::-1])
    cv2.imwrite(str(d / "blank.png"), np.full((200, 300, 3), 90, np.uint8))
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 20)
    gen = SyntheticFaces(size=160, yaw=15, pitch=10, roll=5)
    code, *_ = gen.random_code(np.random.default_rng(5))
    with VideoWriter(d / "clip.mp4", 8, (160, 160)) as w:
        for k in range(4):
            c = code.clone()
            c.rotation = c.rotation + torch.tensor([[0.0, 0.04 * k, 0.0]])
            w.write(gen.render(c, gen.photos[2][:160, :160])[0])
    return d


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    from facerig.encoder.model import FaceEncoder

    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    FaceEncoder("mobile", input_size=64).save(path)  # untrained: the mean face, centred in its crop
    return path


def test_prepare_cli(folder, tmp_path, capsys):
    out = tmp_path / "data"
    rc = main(["prepare", str(folder), "-o", str(out), "--size", "96", "--stride", "2", "--quiet"])
    cap = capsys.readouterr()
    assert rc == 1, cap  # the corrupt file was unreadable
    assert "summary: 3 crops from 3 photos and 2 video frames" in cap.out
    assert "skipped 1 without a face, 1 unreadable, 0 already prepared" in cap.out
    assert "corrupt.jpg" in cap.out and "cannot decode" in cap.out
    from facerig.encoder.data import PreparedFaces
    ds = PreparedFaces(out)
    assert len(ds) == 3 and ds[0]["image"].shape == (96, 96, 3)
    assert [ds.info(i)["frame"] for i in range(3)] == [-1, 0, 2]
    rc = main(["prepare", str(folder), "-o", str(out), "--size", "96", "--stride", "2", "--quiet"])
    cap = capsys.readouterr()
    assert rc == 0 and "0 crops from 0 photos" in cap.out and "4 already prepared" in cap.out
    assert f"{out} holds 3 crops" in cap.out
    rc = main(["prepare", str(folder), "-o", str(out), "--size", "128", "--quiet"])
    assert rc == 2 and "other settings" in capsys.readouterr().err


def test_prepare_cli_bad_inputs(folder, tmp_path, capsys):
    assert main(["prepare", str(folder / "corrupt.jpg"), "-o", str(tmp_path / "d"), "--quiet"]) == 2
    assert main(["prepare", str(tmp_path / "missing"), "-o", str(tmp_path / "d2")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_reconstruct_cli_batch(folder, encoder_file, tmp_path, capsys):
    out = tmp_path / "rec"
    rc = main(["reconstruct", str(folder), "-o", str(out), "--encoder", str(encoder_file), "--refine", "1"])
    cap = capsys.readouterr()
    assert rc == 1, cap.err
    assert "summary: 2 reconstructed, 2 failed, 4 inputs" in cap.out
    assert "no face found in" in cap.out and "blank.png" in cap.out and "cannot decode" in cap.out
    res = out / "astronaut"
    for name in ("mesh.obj", "overlay.png", "landmarks.png", "code.json"):
        assert (res / name).is_file() and (res / name).stat().st_size > 0, name
    code = json.loads((res / "code.json").read_text())
    assert code["image_size"] == [256, 256] and len(code["landmarks68"]) == 68
    lm = np.asarray(code["landmarks68"])
    assert 75 < lm[:, 0].mean() < 150 and 25 < lm[:, 1].mean() < 125  # on the astronaut's face
    assert code["landmark_error_px"] < 8.0
    video = out / "clip"
    lines = [json.loads(s) for s in (video / "codes.jsonl").read_text().splitlines()]
    assert [d["frame"] for d in lines] == [0, 1, 2, 3] and all(d["face"] for d in lines)
    assert len(lines[0]["landmarks68"]) == 68 and "detected_landmarks" not in lines[0]
    assert lines[1]["time_s"] == pytest.approx(1 / 8, abs=1e-3)
    assert (video / "mesh.obj").read_text().count("\nv ") == 1833  # the detail surface
    from facerig.video import VideoReader
    with VideoReader(video / "overlay.mp4") as v:
        assert v.size == (160, 160) and len(list(v)) == 4
    assert sorted(p.name for p in out.iterdir()) == ["astronaut", "clip"]


def test_reconstruct_cli_single_inputs(folder, encoder_file, tmp_path, capsys):
    enc = ["--encoder", str(encoder_file)]
    assert main(["reconstruct", str(folder / "blank.png"), "-o", str(tmp_path / "o"), *enc]) == 2
    assert "no face found in" in capsys.readouterr().err
    assert not (tmp_path / "o" / "blank").exists()
    assert main(["reconstruct", str(folder / "corrupt.jpg"), "-o", str(tmp_path / "o"), *enc]) == 2
    assert "cannot decode" in capsys.readouterr().err
    assert main(["reconstruct", str(folder / "clip.mp4"), "-o", str(tmp_path / "v"), "--frames", "--stride", "3",
                 *enc]) == 0
    assert sorted(p.name for p in (tmp_path / "v" / "clip").iterdir()) == [
        "codes.jsonl", "frame_00000", "frame_00003", "mesh.obj", "overlay.mp4"]
    assert main(["reconstruct", str(folder / "astronaut.png"), "-o", str(tmp_path / "o"), "--encoder",
                 str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "facerig train" in err
    assert main(["reconstruct", str(folder / "astronaut.png"), "-o", str(tmp_path / "o"), "--refine", "-1", *enc]) == 2


def test_reconstruct_cli_corrupt_video(encoder_file, tmp_path, capsys):
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"RIFF junk AVI " * 40)
    assert main(["reconstruct", str(bad), "-o", str(tmp_path / "o"), "--encoder", str(encoder_file)]) == 2
    assert "cannot read video" in capsys.readouterr().err


def test_train_cli_writes_a_loadable_encoder_that_lowers_the_energy(tmp_path, capsys):
    """``facerig train`` on a few synthetic faces: the run folder's encoder loads, its log holds
    finite losses, and after the steps the face energy on the training faces is lower than the
    untrained encoder's (same seed: the starting point)."""
    import csv
    import math

    from facerig.encoder import FaceEncoder, SyntheticFaceDataset, evaluate, load_encoder
    from facerig.encoder.training import BatchStream
    from facerig.face import FaceDecoder

    out = tmp_path / "run"
    args = ["train", "--data", "synthetic", "--synthetic", "8", "--size", "32", "--width", "0.5", "--steps", "6",
            "--batch-size", "4", "--lr", "3e-3", "--val", "0", "--render-size", "16", "--mode", "unsupervised",
            "--threads", "1", "--quiet", "-o", str(out)]
    assert main(args) == 0
    assert "done: 6 steps" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert rows and all(math.isfinite(float(r["total"])) for r in rows)
    trained = load_encoder(out)
    start = FaceEncoder("mobile", 32, backbone={"width": 0.5}, seed=0)
    data = SyntheticFaceDataset(8, 32, seed=0)
    dec = FaceDecoder(trained.model_ref)
    e_trained = evaluate(trained, BatchStream(data, 4), dec)["loss"]
    e_start = evaluate(start, BatchStream(data, 4), dec)["loss"]
    assert e_trained < e_start
    assert main(args) == 2  # the folder holds a run: --resume or another folder
    assert "--resume" in capsys.readouterr().err
