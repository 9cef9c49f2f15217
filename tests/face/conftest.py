"""Fixtures of the face fitting tests: one decoder (default model) per session, one thread.

On a 2-core machine shared with other jobs, torch's multi-threaded kernels spin on busy cores
and run 10-20x slower than with one thread, so these tests run single-threaded.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def decoder():
    from facerig.face import FaceDecoder

    return FaceDecoder("default")


@pytest.fixture(scope="session")
def decoder64():
    from facerig.face import FaceDecoder

    return FaceDecoder("default", dtype=torch.float64)
