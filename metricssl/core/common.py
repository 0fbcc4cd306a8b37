"""The package-wide state PML users set, and the small tensor helpers every layer calls.

This module is the one owner of PML's mutable globals:

- ``NUMPY_RANDOM``: the numpy generator samplers and random choices draw from (PML's hook
  for seeding them; ``np.random`` by default);
- ``COLLECT_STATS``: when True, modules built afterwards record per-call statistics;
- ``LOGGER`` / ``LOGGER_NAME``: the logger named "PML" (:func:`set_logger_name` replaces it).

PML users set them on ``metricssl.utils.common_functions`` (PML's path); that module forwards
reads and writes of these names here, so every layer sees one value.

Example:
    >>> import numpy as np
    >>> from metricssl.core import common
    >>> common.NUMPY_RANDOM = np.random.RandomState(0)  # seeds every sampler's draws
    >>> common.safe_random_choice([1, 2, 3], 2).tolist()
    [3, 2]
    >>> common.NUMPY_RANDOM = np.random
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

# PML's name: code written for PML configures logging.getLogger("PML") (levels, handlers),
# and with the import changed that must still reach these messages.
LOGGER_NAME = "PML"
LOGGER = logging.getLogger(LOGGER_NAME)
NUMPY_RANDOM = np.random
# PML's global switch: when True, modules created afterwards record statistics.
COLLECT_STATS = False


def set_logger_name(name: str) -> None:
    """Log under ``logging.getLogger(name)`` from now on (PML's function)."""
    global LOGGER_NAME, LOGGER
    LOGGER_NAME = name
    LOGGER = logging.getLogger(name)


def pos_inf(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).max


def neg_inf(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).min


def small_val(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).tiny


def is_list_or_tuple(x) -> bool:
    return isinstance(x, (list, tuple))


def numpy_to_torch(v):
    try:
        return torch.from_numpy(v)
    except TypeError:
        return v


def to_numpy(v):
    try:
        return v.detach().cpu().numpy()
    except AttributeError:
        return v


def to_dtype(x: torch.Tensor, tensor: torch.Tensor | None = None, dtype=None) -> torch.Tensor:
    if not torch.is_autocast_enabled():
        dt = dtype if dtype is not None else tensor.dtype
        if x.dtype != dt:
            x = x.type(dt)
    return x


def to_device(x: torch.Tensor, tensor: torch.Tensor | None = None, device=None, dtype=None):
    dv = device if device is not None else tensor.device
    if x.device != dv:
        x = x.to(dv)
    if dtype is not None:
        x = to_dtype(x, dtype=dtype)
    return x


def torch_arange_from_size(input: torch.Tensor, size_dim: int = 0) -> torch.Tensor:
    return torch.arange(input.size(size_dim), device=input.device)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to accumulate sums and log-sum-exps in: fp32 for half types."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def concatenate_indices_tuples(it1, it2):
    return tuple(torch.cat([x, to_device(y, x)], dim=0) for x, y in zip(it1, it2))


class TorchInitWrapper:
    """Wraps a ``torch.nn.init`` function with fixed keyword arguments."""

    def __init__(self, init_func, **kwargs):
        self.init_func = init_func
        self.kwargs = kwargs

    def __call__(self, tensor):
        self.init_func(tensor, **self.kwargs)


def safe_random_choice(input_data, size: int):
    """``size`` draws from ``input_data``: without replacement when there are enough items,
    with replacement otherwise (from :data:`NUMPY_RANDOM`)."""
    return NUMPY_RANDOM.choice(input_data, size=size, replace=len(input_data) < size)


def torch_standard_scaler(x: torch.Tensor) -> torch.Tensor:
    """Columns standardised to zero mean and unit (unbiased) standard deviation."""
    return (x - torch.mean(x, dim=0)) / torch.std(x, dim=0)


def torch_all_from_dim_to_end(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``all`` over every dimension from ``dim`` on."""
    return torch.all(x.view(*x.shape[:dim], -1), dim=-1)


def adopt_stored_shapes(
    module: torch.nn.Module, state_dict: dict, prefix: str, names: Sequence[str]
) -> None:
    """Give buffers whose shape is set on first use (a queue, centroids, a running
    covariance) the stored shape, so that ``load_state_dict`` into a fresh module works;
    call from ``_load_from_state_dict``."""
    for name in names:
        stored, current = state_dict.get(prefix + name), getattr(module, name)
        if stored is not None and stored.shape != current.shape:
            setattr(module, name, torch.zeros_like(stored, device=current.device))
