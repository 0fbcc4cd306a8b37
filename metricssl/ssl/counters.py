"""Integer buffers (queue positions, fill levels, step counts) read on the host without a
device synchronisation."""

from __future__ import annotations

import torch
from torch import nn


class HostCounters(nn.Module):
    """A mixin for modules whose int64 scalar buffers steer Python control flow.

    A queue's write position and fill level decide which rows a step slices; reading them
    from a CUDA buffer every step (``int(buffer)``) waits for the device to finish all queued
    work, once per read. Here each counter is a registered buffer, so ``state_dict()`` and
    checkpoints carry it as before, with a host copy that the module keeps in step: counters
    are changed only through :meth:`set_counter`, which writes both (``fill_`` with a Python
    number needs no synchronisation). Loading a state dict drops the host copies; the next
    :meth:`counter` reads the loaded buffers once.

    Example:
        >>> import torch
        >>> from metricssl.ssl.counters import HostCounters
        >>> class Ring(HostCounters):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.register_counter("ptr")
        >>> ring = Ring()
        >>> ring.set_counter("ptr", 3)
        >>> ring.counter("ptr"), ring.ptr
        (3, tensor(3))
    """

    def register_counter(self, name: str, value: int = 0) -> None:
        """An int64 scalar buffer ``name`` holding ``value``, with its host copy."""
        self.register_buffer(name, torch.tensor(value, dtype=torch.int64))
        self.__dict__.setdefault("_host_counter_names", []).append(name)
        self._host_values()[name] = value

    def counter(self, name: str) -> int:
        """The counter's value, from the host copy."""
        return self._host_values()[name]

    def set_counter(self, name: str, value: int) -> None:
        """Set the counter (buffer and host copy) to the Python int ``value``."""
        self._host_values()[name] = value
        getattr(self, name).fill_(value)

    def _host_values(self) -> dict[str, int]:
        values = self.__dict__.get("_host_counter_values")
        if values is None:
            # After load_state_dict: one read of each loaded buffer (a synchronisation on
            # CUDA), then none until the next load.
            values = {name: int(getattr(self, name)) for name in self._counter_names()}
            self.__dict__["_host_counter_values"] = values
        return values

    def _counter_names(self) -> list[str]:
        return self.__dict__.get("_host_counter_names", [])

    def _load_from_state_dict(self, *args, **kwargs):
        # The buffers are about to change under the host copies.
        self.__dict__.pop("_host_counter_values", None)
        super()._load_from_state_dict(*args, **kwargs)
