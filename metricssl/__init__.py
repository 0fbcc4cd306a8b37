"""metricssl: metric learning and self-supervised learning on PyTorch.

Drop-in for pytorch-metric-learning: ``from metricssl import distances, losses, miners,
reducers`` gives the same classes, arguments and values, faster and with bounded memory.
"""

__version__ = "0.1.0"

from . import distances, losses, miners, reducers, regularizers, utils  # noqa: E402

__all__ = ["distances", "losses", "miners", "reducers", "regularizers", "utils", "__version__"]
