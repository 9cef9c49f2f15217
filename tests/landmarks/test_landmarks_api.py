"""Package-level behaviour: lazy imports, missing mediapipe, JSON export."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest


def test_import_is_light():
    code = (
        "import sys, facerig.landmarks; "
        "print(*(m in sys.modules for m in ('mediapipe', 'cv2', 'torch', 'facerig.model')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"] * 4


def test_missing_mediapipe_gives_install_hint(monkeypatch):
    from facerig.landmarks import detect

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` fail
    with pytest.raises(ImportError, match=r"pip install mediapipe==0\.10\.21"):
        detect._mediapipe()


def test_to_dict_is_json_ready(astronaut_face):
    d = astronaut_face.to_dict(decimals=2)
    text = json.dumps(d)
    back = json.loads(text)
    np.testing.assert_allclose(np.array(back["points"]), astronaut_face.points, atol=0.006)
    assert back["image_size"] == [512, 512] and back["score"] == pytest.approx(astronaut_face.score)
    assert set(back["detection"]["keypoints"]) >= {"right_eye", "left_eye", "nose_tip"}
    assert back["track_id"] is None and back["smoothed"] is False


def test_release_models_then_detect_again(astronaut, astronaut_face):
    from facerig.landmarks import detect_landmarks, release_models

    release_models()
    again = detect_landmarks(astronaut)
    np.testing.assert_array_equal(again[0].points, astronaut_face.points)  # deterministic

