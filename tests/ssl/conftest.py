"""Every SSL test trains tiny models: one torch thread each (see tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _ssl_tests_use_one_thread(one_thread):
    # pytestmark does not reach other modules from a conftest; an autouse fixture does.
    yield
