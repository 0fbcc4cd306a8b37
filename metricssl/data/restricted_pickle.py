"""Unpickling limited to plain containers and numpy arrays, for datasets stored as pickles.

CIFAR-10/100 ship as Python pickles; plain ``pickle.load`` would run whatever a tampered
file asks for. This unpickler resolves exactly three globals, the ones a numpy array's
pickle refers to (``_reconstruct``, ``ndarray``, ``dtype``), each wrapped so that it can only
build a plain, non-object ndarray. Every other global (``os.system``, ``builtins.eval``,
``_codecs.encode``, ...) is refused.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

# numpy's own reconstructor, whatever module it lives in for this numpy version.
_np_reconstruct = np.zeros(1).__reduce__()[0]


def _reconstruct(subtype, shape, typecode):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to build an array of type {subtype!r}")
    return _np_reconstruct(np.ndarray, shape, typecode)


def _dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("refusing an object dtype: it would hold arbitrary objects")
    return dtype


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # pickles from numpy < 2
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # pickles from numpy >= 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that only resolves the numpy array globals listed above."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays and plain "
                f"containers are allowed in this file"
            ) from None


def restricted_loads(data: bytes, encoding: str = "latin1"):
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    ``encoding="latin1"`` reads Python 2 pickles (CIFAR's): their ``str`` objects, including
    an array's raw bytes, come back byte for byte.

    Example:
        >>> import pickle, numpy as np
        >>> from metricssl.data.restricted_pickle import restricted_loads
        >>> restricted_loads(pickle.dumps({"data": np.arange(3, dtype=np.uint8)}))["data"]
        array([0, 1, 2], dtype=uint8)
    """
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
