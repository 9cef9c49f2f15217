"""``facerig fit``: a batch with a good photo, a faceless image and a corrupt file; single inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facerig.cli import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    import cv2
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(d / "astronaut.png"), data.astronaut()[..., ::-1])
    cv2.imwrite(str(d / "blank.png"), np.full((200, 300, 3), 90, np.uint8))
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 20)
    (d / "notes.txt").write_text("not an image: ignored by the folder scan")
    return d


def test_batch_continues_past_failures(folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["fit", str(folder), "-o", str(out), "--iterations", "3", "--threads", "1"])
    cap = capsys.readouterr()
    assert rc == 1  # some inputs failed, some were fitted
    assert "summary: 1 fitted, 2 failed, 3 inputs" in cap.out
    assert "no face found in" in cap.out and "blank.png" in cap.out
    assert "corrupt.jpg" in cap.out and "cannot decode" in cap.out
    res = out / "astronaut"
    for name in ("mesh.obj", "overlay.png", "landmarks.png", "code.json"):
        assert (res / name).is_file() and (res / name).stat().st_size > 0, name
    assert sorted(p.name for p in out.iterdir()) == ["astronaut"]
    assert not [p for p in res.iterdir() if p.name.endswith(".tmp")]
    code = json.loads((res / "code.json").read_text())
    assert code["model"] == "default" and code["image_size"] == [512, 512]
    assert len(code["landmarks68"]) == 68 and len(code["detected_landmarks"]) == 468
    assert code["landmark_error_px"] < 3.0
    assert set(code["energies"]) >= {"landmarks", "photometric", "total"}
    lm = np.asarray(code["landmarks68"])
    assert 150 < lm[:, 0].mean() < 300 and 50 < lm[:, 1].mean() < 250  # the astronaut's face
    import cv2
    ov = cv2.imread(str(res / "overlay.png"))
    assert ov.shape == (512, 512, 3)
    obj = (res / "mesh.obj").read_text()
    assert obj.count("\nv ") == 1833  # the detail surface; the first 468 are the Face Mesh vertices
    import torch

    from facerig.model import load_model
    verts = np.array([[float(t) for t in line.split()[1:4]] for line in obj.splitlines() if line.startswith("v ")])
    c = code["code"]
    ref = load_model("default").shape(torch.tensor([c["identity"]]), torch.tensor([c["expression"]]))[0].numpy()
    assert np.abs(verts[:468] - ref).max() < 2e-3  # cm; code.json keeps 5 decimals
    assert code["mesh"]["vertices"] == 1833


def test_single_faceless_input_exits_2(folder, tmp_path, capsys):
    rc = main(["fit", str(folder / "blank.png"), "-o", str(tmp_path / "o")])
    cap = capsys.readouterr()
    assert rc == 2
    assert "no face found in" in cap.err and "blank.png" in cap.err
    assert not (tmp_path / "o" / "blank").exists()


def test_single_corrupt_and_missing_inputs_exit_2(folder, tmp_path, capsys):
    assert main(["fit", str(folder / "corrupt.jpg"), "-o", str(tmp_path / "o")]) == 2
    assert "cannot decode" in capsys.readouterr().err
    assert main(["fit", str(folder / "missing.png"), "-o", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_no_input_fits_the_sample(tmp_path, capsys):
    rc = main(["fit", "-o", str(tmp_path), "--iterations", "0", "--format", "glb", "--all-faces"])
    assert rc == 0
    assert "astronaut" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astronaut_face0"]  # one face in the sample
    assert (tmp_path / "astronaut_face0" / "mesh.glb").stat().st_size > 1000
