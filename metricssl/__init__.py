"""metricssl: metric learning and self-supervised learning on PyTorch.

Drop-in for pytorch-metric-learning: ``from metricssl import distances, losses, miners,
reducers`` gives the same classes, arguments and values, faster and with bounded memory.
The other subpackages (index, eval, viz, data, augment, models, samplers, ssl, utils) are
imported on first use, so ``import metricssl`` stays light.
"""

import importlib

__version__ = "0.1.0"

from . import distances, losses, miners, reducers, regularizers  # noqa: E402

# utils (PML's import path) is loaded on first use too: no module of the package imports it.
_LAZY = {"augment", "data", "eval", "index", "models", "samplers", "ssl", "utils", "viz"}


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name == "load_encoder":  # an exported encoder back as a module (metricssl.export)
        return importlib.import_module(".export", __name__).load_encoder
    if name == "embed_shards":  # sharded embedding under torchrun (metricssl.ssl.embed)
        return importlib.import_module(".ssl.embed", __name__).embed_shards
    raise AttributeError(f"module 'metricssl' has no attribute {name!r}")


__all__ = [
    "augment",
    "data",
    "distances",
    "embed_shards",
    "eval",
    "index",
    "load_encoder",
    "losses",
    "miners",
    "models",
    "reducers",
    "regularizers",
    "samplers",
    "ssl",
    "utils",
    "viz",
    "__version__",
]
