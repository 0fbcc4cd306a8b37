"""Shared fixtures for the index tests."""

import faiss
import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_faiss_thread():
    # The test machine's cores are shared; OpenMP threads that spin while waiting for each
    # other make FAISS training many times slower there. One thread is fast and deterministic.
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)
