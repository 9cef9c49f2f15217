"""Sparse-coding tests run single-threaded: their small matrix products gain nothing from more
threads, and on a busy 2-core machine thread oversubscription made them ~8x slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
