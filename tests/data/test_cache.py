from pathlib import Path

import pytest

from metricssl.data.cache import CACHE_ENV_VAR, cache_root, dataset_cache_dir


def test_default_env_and_explicit(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV_VAR, raising=False)
    assert cache_root() == Path.home() / ".cache" / "metricssl"
    assert dataset_cache_dir("mnist") == Path.home() / ".cache" / "metricssl" / "mnist"
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "c"))
    assert dataset_cache_dir("mnist") == tmp_path / "c" / "mnist"
    # an explicit cache_dir is the dataset's own folder
    assert dataset_cache_dir("mnist", tmp_path / "mine") == tmp_path / "mine"
    with pytest.raises(TypeError, match="cache_dir"):
        dataset_cache_dir("mnist", 3)
