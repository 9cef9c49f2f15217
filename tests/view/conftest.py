"""Fixtures of the viewer tests: a small textured rig folder built here (no out/ needed), the
viewer server on it, and one headless Chromium (skipped with the reason when there is none, but
required when CI=true: .ci/run installs Debian's chromium)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

FPS = 10.0
FRAMES = 6
JAW_FRAME = 3  # the recorded animation opens the jaw fully at this frame (0 elsewhere but its neighbours)
# the texture: a lighter skin tone left of the UV midline (u < 0.5), a darker one right of it
SKIN_LEFT = (225, 172, 140)
SKIN_RIGHT = (150, 98, 72)
PREVIEW_H = 48


def preview_level(k: int) -> int:
    """Grey level of preview.mp4's source panel in frame k (so a test knows which frame it sees)."""
    return 20 + 40 * k


@pytest.fixture(scope="session")
def rig_folder(tmp_path_factory):
    """A `facerig rig`-like folder: rig.glb (the default model, 53 shapes, texture, a 6-frame
    animation at 10 fps whose jawOpen is 1 at frame 3), rig.json and preview.mp4 (three panels;
    the source panel of frame k is grey level preview_level(k))."""
    from facerig.model import export_model_rig, load_model
    from facerig.video import VideoWriter

    folder = tmp_path_factory.mktemp("viewrig") / "talk"
    folder.mkdir()
    model = load_model()
    names = model.expression_names
    w = np.zeros((FRAMES, len(names)))
    jaw = names.index("jawOpen")
    w[JAW_FRAME - 1, jaw], w[JAW_FRAME, jaw], w[JAW_FRAME + 1, jaw] = 0.5, 1.0, 0.5
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[:, :32] = SKIN_LEFT
    tex[:, 32:] = SKIN_RIGHT
    export_model_rig(model, folder / "rig.glb", weights=w, fps=FPS, texture=tex)
    (folder / "rig.json").write_text(json.dumps({"frames": FRAMES, "fps": FPS, "blendshapes": names,
                                                 "metrics": {"landmark_error_px": 1.5}}))
    pw = 64  # panel widths: source pw, fit pw, rig PREVIEW_H (as facerig.rig writes them)
    with VideoWriter(folder / "preview.mp4", FPS, (2 * pw + PREVIEW_H, PREVIEW_H)) as vw:
        for k in range(FRAMES):
            frame = np.full((PREVIEW_H, 2 * pw + PREVIEW_H, 3), 255, np.uint8)
            frame[:, :pw] = preview_level(k)
            frame[:, pw:2 * pw] = (0, 200, 0)
            vw.write(frame)
    return folder


@pytest.fixture(scope="session")
def chromium():
    from facerig.view import find_chromium

    path = find_chromium()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no Chromium found: .ci/run installs Debian's chromium package")
        pytest.skip("no Chromium found (Debian: apt-get install -y chromium; .ci/run installs it)")
    return path


@pytest.fixture(scope="module")
def browser(chromium):
    from facerig.view import Browser

    with Browser(size=(900, 600), executable=chromium) as b:
        yield b


@pytest.fixture(scope="module")
def server(rig_folder):
    from facerig.view import serve

    with serve(rig_folder) as s:
        yield s
