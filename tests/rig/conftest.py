"""Fixtures of the rig tests: a tiny synthetic talking-head clip; the glTF validator of tests/model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
from test_model_export import gltf_validator  # noqa: E402,F401  (one validator fixture for both areas)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """(path, ground truth) of a 10-frame 192x192 talking head at 10 fps (mp4v)."""
    from facerig.rig import render_talking_head

    path = tmp_path_factory.mktemp("clip") / "talk.mp4"
    gt = render_talking_head(path, n_frames=10, fps=10.0, size=192, seed=3, distance=60.0)
    return path, gt
