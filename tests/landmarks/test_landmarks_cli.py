"""``facerig landmarks`` on a folder: a good photo, a faceless one and a corrupt file."""

import json

import cv2
import numpy as np
from skimage import data

from facerig.cli import main


def test_cli_folder_batch_continues_and_single_faceless_exits_2(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "astronaut.png"), data.astronaut()[:, :, ::-1])
    cv2.imwrite(str(src / "brick.png"), data.brick())
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    assert main(["landmarks", str(src), "-o", str(out)]) == 0
    text = capsys.readouterr()
    assert "1 of 3 images done, 2 skipped" in text.out
    assert "corrupt.jpg" in text.err and "brick.png" in text.err
    doc = json.loads((out / "astronaut" / "landmarks.json").read_text())
    face = doc["faces"][0]
    assert len(face["points"]) == 478 and len(face["ibug68"]) == 68
    # iBUG 36 (subject's right eye, outer corner) lies left of iBUG 45 in the image
    assert face["ibug68"][36][0] < face["ibug68"][45][0]
    png = cv2.imread(str(out / "astronaut" / "landmarks.png"))
    assert png.shape == (512, 512, 3) and np.any(png != data.astronaut()[:, :, ::-1])
    assert not (out / "brick").exists()
    assert main(["landmarks", str(src / "brick.png"), "-o", str(out)]) == 2
    assert "no face found" in capsys.readouterr().err
