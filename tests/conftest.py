"""Shared test fixtures.

``shared_data`` is the folder of research data that sits beside the repository
(``../shared/data``, or ``$FACERIG_SHARED_DATA``); tests that need it skip cleanly when it is
absent. Nothing from it is ever copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("FACERIG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent")
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The whole suite runs with one torch thread: its tensors are small, and on a busy 2-core
    machine (CI) thread oversubscription made some areas ~8x slower. Tests that measure threading
    set their own count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
