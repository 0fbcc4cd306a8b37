"""Unpickling limited to plain values and byte-checked numpy arrays, for pickled datasets.

CIFAR-10/100 ship as Python pickles; plain ``pickle.load`` would run whatever a tampered
file asks for, and even numpy's own array reconstructor lets a few bytes declare a huge
shape (gigabytes allocated), an object array, or an array with no data (uninitialised
memory). So the pickle never builds an array here:

1. the opcodes are scanned first (:mod:`pickletools`, which reads nothing it is not given):
   a declared length beyond the end of the data is refused before anything is allocated;
2. the only globals resolved are numpy's array and dtype reconstructors, each replaced by a
   placeholder that records what the pickle declares (shape, dtype, raw bytes);
3. after loading, each placeholder becomes an array built by this module from its bytes,
   only for a plain numeric dtype and only when the bytes are exactly ``prod(shape) *
   itemsize`` long.

Everything else in the file must be plain values: dicts, lists, tuples, sets, str, bytes,
ints, floats, bools, None. Every other global (``os.system``, ``builtins.eval``,
``_codecs.encode``, ...) is refused.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools

import numpy as np

# The dtypes a dataset array can have: booleans, integers, floats, complex numbers.
_PLAIN_KINDS = frozenset("biufc")
_BYTE_ORDERS = frozenset("<>|=")


class _NdarrayType:
    """Stands for ``numpy.ndarray`` in a pickle: the only subtype an array may have."""


class _DtypeSpec:
    """A dtype declared by a pickle: ``numpy.dtype(typestr, align, copy)`` then its state."""

    def __init__(self, typestr, align=False, copy=True):
        if not isinstance(typestr, str):
            raise pickle.UnpicklingError(
                f"refusing dtype {typestr!r}: only plain numeric dtypes are allowed"
            )
        self.dtype = _plain_dtype(typestr)

    def __setstate__(self, state):
        # (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) < 5:
            raise pickle.UnpicklingError(f"refusing dtype state {state!r}")
        order, subarray, names, fields = state[1:5]
        if (subarray, names, fields) != (None, None, None) or order not in _BYTE_ORDERS:
            raise pickle.UnpicklingError(
                "refusing a structured or sub-array dtype: only plain numeric dtypes are allowed"
            )
        if order in "<>":
            self.dtype = self.dtype.newbyteorder(order)


class _ArraySpec:
    """An array declared by a pickle; :func:`_build_array` makes it from its state."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        # (version, shape, dtype, is_fortran, raw data); numpy < 1.? pickles omit the version
        if isinstance(state, tuple) and len(state) == 4:
            state = (1, *state)
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("refusing an array whose state is not numpy's")
        _, shape, dtype, fortran, raw = state
        self.array = _build_array(raw, dtype, shape, "F" if fortran else "C")


def _plain_dtype(typestr: str) -> np.dtype:
    try:
        dtype = np.dtype(typestr)
    except TypeError as err:
        raise pickle.UnpicklingError(f"refusing dtype {typestr!r}: {err}") from None
    if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        what = "an object dtype" if dtype.hasobject else f"dtype {dtype}"
        raise pickle.UnpicklingError(
            f"refusing {what}: only plain numeric arrays (bool, int, uint, float, complex) "
            "are allowed in this file"
        )
    return dtype


def _build_array(raw, dtype, shape, order) -> np.ndarray:
    """An array of ``shape`` and ``dtype`` from exactly the bytes ``raw``, checked first."""
    if not isinstance(dtype, _DtypeSpec):
        raise pickle.UnpicklingError("refusing an array whose dtype is not a plain numpy dtype")
    if not isinstance(shape, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise pickle.UnpicklingError(f"refusing array shape {shape!r}")
    if isinstance(raw, str):
        # Python 2 pickles read with encoding="latin1" give the raw bytes as a str.
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)):
        raise pickle.UnpicklingError(
            f"refusing an array whose data is a {type(raw).__name__}, not raw bytes"
        )
    expected = math.prod(shape) * dtype.dtype.itemsize  # Python ints: no overflow
    if len(raw) != expected:
        raise pickle.UnpicklingError(
            f"refusing an array of shape {shape} and dtype {dtype.dtype}: it needs "
            f"{expected} bytes but the file holds {len(raw)}"
        )
    flat = np.frombuffer(raw, dtype=dtype.dtype)
    return flat.reshape(shape, order=order).copy(order="K")


def _reconstruct(subtype, shape, typecode):
    if subtype is not _NdarrayType:
        raise pickle.UnpicklingError(f"refusing to build an array of type {subtype!r}")
    return _ArraySpec()


def _frombuffer(buffer, dtype, shape, order):
    # Protocol 5's array pickle: the bytes, dtype, shape and order in one call.
    spec = _ArraySpec()
    spec.array = _build_array(buffer, dtype, shape, "F" if order == "F" else "C")
    return spec


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # pickles from numpy < 2
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # pickles from numpy >= 2
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _NdarrayType,
    ("numpy", "dtype"): _DtypeSpec,
}


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only numpy's array and dtype reconstructors, as
    placeholders. Use :func:`restricted_loads`, which scans the opcodes first and turns the
    placeholders into checked arrays."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays and plain "
                f"containers are allowed in this file"
            ) from None


def _check_opcodes(data: bytes) -> None:
    """Walk the opcodes without building anything: a length field that points past the end
    of ``data`` (which ``pickle`` would allocate before reading) is refused here."""
    try:
        for _ in pickletools.genops(data):
            pass
    except (ValueError, EOFError) as err:
        raise pickle.UnpicklingError(f"not a valid pickle: {err}") from None


def _materialise(value, seen: dict):
    """``value`` with every placeholder replaced by its array (containers rebuilt)."""
    key = id(value)
    if key in seen:
        return seen[key]
    if isinstance(value, _ArraySpec):
        if value.array is None:
            raise pickle.UnpicklingError("refusing an array declared without its data")
        out = value.array
    elif isinstance(value, _DtypeSpec):
        out = value.dtype
    elif isinstance(value, list):
        out = seen[key] = value
        value[:] = [_materialise(v, seen) for v in value]
    elif isinstance(value, dict):
        out = seen[key] = value
        for k in list(value):
            if isinstance(k, (_ArraySpec, _DtypeSpec)):
                raise pickle.UnpicklingError("refusing an array or dtype as a dict key")
            value[k] = _materialise(value[k], seen)
    elif isinstance(value, tuple):
        out = tuple(_materialise(v, seen) for v in value)
    elif isinstance(value, (set, frozenset)):
        if any(isinstance(v, (_ArraySpec, _DtypeSpec)) for v in value):
            raise pickle.UnpicklingError("refusing an array or dtype in a set")
        out = value
    else:
        out = value
    seen[key] = out
    return out


def restricted_loads(data: bytes, encoding: str = "latin1"):
    """Unpickle ``data`` holding only plain values and plain numeric numpy arrays.

    ``encoding="latin1"`` reads Python 2 pickles (CIFAR's): their ``str`` objects, including
    an array's raw bytes, come back byte for byte.

    Raises:
        pickle.UnpicklingError: any global other than numpy's array reconstructors, an
            object/structured dtype, an array whose bytes do not match its declared shape
            (checked before the array is allocated), a truncated or malformed pickle.

    Example:
        >>> import pickle, numpy as np
        >>> from metricssl.data.restricted_pickle import restricted_loads
        >>> restricted_loads(pickle.dumps({"data": np.arange(3, dtype=np.uint8)}))["data"]
        array([0, 1, 2], dtype=uint8)
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    _check_opcodes(data)
    loaded = RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    try:
        return _materialise(loaded, {})
    except RecursionError:
        raise pickle.UnpicklingError("refusing a pickle nested too deeply") from None
