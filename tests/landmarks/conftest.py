"""Fixtures shared by the landmark tests (real photos from scikit-image, detected once).

mediapipe is a hard dependency of facerig (pyproject), so its absence fails these tests.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def astronaut_faces(astronaut):
    from facerig.landmarks import detect_landmarks

    return detect_landmarks(astronaut, max_faces=4, refine=True)


@pytest.fixture(scope="session")
def astronaut_face(astronaut_faces):
    assert len(astronaut_faces) == 1
    return astronaut_faces[0]
