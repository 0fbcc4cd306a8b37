import pickle
import struct

import numpy as np
import pytest

from metricssl.data.restricted_pickle import restricted_loads


def _str(b: bytes) -> bytes:
    """A Python 2 ``str`` (BINSTRING opcode)."""
    return b"T" + struct.pack("<i", len(b)) + b


def _int(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)


def py2_array(array: np.ndarray) -> bytes:
    """The opcodes Python 2's cPickle writes for a numpy array (protocol 2)."""
    kind = array.dtype.str  # e.g. "|u1" or "<i8"
    shape = b"(" + b"".join(_int(d) for d in array.shape) + b"t"
    dtype = (
        b"cnumpy\ndtype\n" + _str(kind[1:].encode()) + _int(0) + _int(1) + b"\x87R"
        b"(" + _int(3) + _str(kind[0].encode()) + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"tb"
    )
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        b"cnumpy\nndarray\n" + _int(0) + b"\x85" + _str(b"b") + b"\x87R"
        b"(" + _int(1) + shape + dtype + b"\x89" + _str(array.tobytes()) + b"tb"
    )


def py2_batch(entries: dict) -> bytes:
    """A Python 2 pickle of a dict with str keys and str / int-list / ndarray values."""
    body = b""
    for key, value in entries.items():
        body += _str(key.encode())
        if isinstance(value, np.ndarray):
            body += py2_array(value)
        elif isinstance(value, list):
            body += b"](" + b"".join(_int(v) for v in value) + b"e"
        else:
            body += _str(value.encode())
    return b"\x80\x02}(" + body + b"u."


def test_python2_pickle_of_arrays_loads():
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    wide = np.array([[1, -2], [3, 4]], dtype="<i8")
    raw = py2_batch(
        {"batch_label": "training batch 1 of 5", "labels": [3, 7], "data": data, "w": wide}
    )
    # the crafted bytes are what plain pickle reads too, so the helper is faithful
    expected = pickle.loads(raw, encoding="latin1")
    out = restricted_loads(raw)
    assert out.keys() == expected.keys()
    np.testing.assert_array_equal(out["data"], data)
    np.testing.assert_array_equal(out["w"], wide)
    assert out["labels"] == [3, 7] and out["batch_label"] == "training batch 1 of 5"


@pytest.mark.parametrize("protocol", [3, 4])
def test_python3_pickles_of_arrays_load(protocol):
    value = {b"data": np.ones((2, 5), np.float32), "names": [b"a.png", "b"], "t": (1, 2.5, None)}
    out = restricted_loads(pickle.dumps(value, protocol=protocol))
    np.testing.assert_array_equal(out[b"data"], value[b"data"])
    assert out["names"] == value["names"] and out["t"] == value["t"]


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


class Sneaky(np.ndarray):
    pass


@pytest.mark.parametrize(
    "payload, match",
    [
        (pickle.dumps({"x": Evil()}), "posix.system|os.system|nt.system"),
        (pickle.dumps(eval), "builtins.eval"),
        (pickle.dumps(np.array([object()], dtype=object)), "object dtype"),
        (pickle.dumps(np.zeros(2).view(Sneaky)), "refusing"),
        (pickle.dumps(b"bytes at protocol 2", protocol=2), "_codecs.encode"),
    ],
)
def test_everything_else_is_refused(payload, match):
    with pytest.raises(pickle.UnpicklingError, match=match):
        restricted_loads(payload)
