"""Small helpers shared across the package, with PML's names where PML users import them."""

from __future__ import annotations

import logging

import numpy as np
import torch

LOGGER_NAME = "metricssl"
LOGGER = logging.getLogger(LOGGER_NAME)
NUMPY_RANDOM = np.random
# PML's global switch: when True, modules created afterwards record statistics.
COLLECT_STATS = False


def set_logger_name(name: str) -> None:
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


def shift_indices_tuple(indices_tuple, batch_size: int):
    """Shift the positive/negative indices of a tuple by ``batch_size`` (PML semantics)."""
    if len(indices_tuple) == 3:
        return (indices_tuple[0],) + tuple(
            x + batch_size if len(x) > 0 else x for x in indices_tuple[1:]
        )
    if len(indices_tuple) == 4:
        a1, p, a2, n = indices_tuple
        return (
            a1,
            p + batch_size if len(p) > 0 else p,
            a2,
            n + batch_size if len(n) > 0 else n,
        )
    return indices_tuple


def concatenate_indices_tuples(it1, it2):
    return tuple(torch.cat([x, to_device(y, x)], dim=0) for x, y in zip(it1, it2))


class TorchInitWrapper:
    """Wraps a ``torch.nn.init`` function with fixed keyword arguments."""

    def __init__(self, init_func, **kwargs):
        self.init_func = init_func
        self.kwargs = kwargs

    def __call__(self, tensor):
        self.init_func(tensor, **self.kwargs)
