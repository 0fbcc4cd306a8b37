"""Count the ways Python code reads a tensor's value back to the host.

On CUDA each of these waits for the device to finish its queued work (a synchronisation);
on the CPU they are free, so a CPU test counts them instead of timing them.
"""

import collections
import contextlib
import sys

import torch

# Tensor methods that turn a value into a Python object (or a host copy).
HOST_READS = (
    "item",
    "tolist",
    "cpu",
    "numpy",
    "__bool__",
    "__int__",
    "__index__",
    "__float__",
)


@contextlib.contextmanager
def count_host_reads(monkeypatch):
    """Within the block, every call of a :data:`HOST_READS` method is counted (by name) in the
    Counter it yields; the methods still work."""
    counts = collections.Counter()
    with _recorded(monkeypatch, lambda name, caller: counts.update((name,))):
        yield counts


@contextlib.contextmanager
def host_read_sites(monkeypatch):
    """Within the block, every call of a :data:`HOST_READS` method is listed, as
    ``(name, file, line)`` of the code that made it, in the list it yields."""
    sites = []

    def record(name, caller):
        sites.append((name, caller.f_code.co_filename, caller.f_lineno))

    with _recorded(monkeypatch, record):
        yield sites


@contextlib.contextmanager
def _recorded(monkeypatch, record):
    """:data:`HOST_READS` replaced by methods that call ``record(name, caller's frame)``."""
    with monkeypatch.context() as m:
        for name in HOST_READS:
            real = getattr(torch.Tensor, name)

            def recording(self, *args, _real=real, _name=name, **kwargs):
                record(_name, sys._getframe(1))
                return _real(self, *args, **kwargs)

            m.setattr(torch.Tensor, name, recording)
        yield
