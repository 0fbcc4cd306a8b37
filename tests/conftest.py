"""Shared pytest configuration.

- Tests marked ``gpu`` are skipped where CUDA is unavailable.
- Under pytest-xdist each worker gets one torch thread: the workers already use the cores,
  and two threads per worker on a 2-core machine make every small op stall.
"""

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def one_thread():
    """One torch thread for the test: on tiny tensors a second thread only adds
    synchronisation (and the machine is shared). Restores the previous count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
