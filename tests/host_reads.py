"""Count the ways Python code reads a tensor's value back to the host.

On CUDA each of these waits for the device to finish its queued work (a synchronisation);
on the CPU they are free, so a CPU test counts them instead of timing them.
"""

import collections
import contextlib

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
    with monkeypatch.context() as m:
        for name in HOST_READS:
            real = getattr(torch.Tensor, name)

            def counting(self, *args, _real=real, _name=name, **kwargs):
                counts[_name] += 1
                return _real(self, *args, **kwargs)

            m.setattr(torch.Tensor, name, counting)
        yield counts
