"""Where downloaded datasets live: ``~/.cache/metricssl/<name>`` unless told otherwise."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV_VAR = "METRICSSL_CACHE"


def cache_root() -> Path:
    """The folder holding every dataset's cache: ``$METRICSSL_CACHE`` or ~/.cache/metricssl."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "metricssl"


def dataset_cache_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder for dataset ``name``: ``cache_dir`` itself when given, else under cache_root()."""
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(
                f"cache_dir must be a str or os.PathLike, got {type(cache_dir).__name__}"
            )
        return Path(cache_dir).expanduser()
    return cache_root() / name
