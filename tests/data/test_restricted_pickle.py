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


def _reconstruct_call(shape: tuple) -> bytes:
    """``_reconstruct(ndarray, shape, b"b")``: numpy allocates ``shape`` right here."""
    dims = b"(" + b"".join(_int(d) for d in shape) + b"t"
    return b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + dims + _str(b"b") + b"\x87R"


def _dtype_call(kind: str) -> bytes:
    return (
        b"cnumpy\ndtype\n" + _str(kind[1:].encode()) + _int(0) + _int(1) + b"\x87R"
        b"(" + _int(3) + _str(kind[0].encode()) + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"tb"
    )


def _array_with_state(shape: tuple, kind: str, raw: bytes) -> bytes:
    dims = b"(" + b"".join(_int(d) for d in shape) + b"t"
    return (
        b"\x80\x02"
        + _reconstruct_call((0,))
        + b"("
        + _int(1)
        + dims
        + _dtype_call(kind)
        + b"\x89"
        + _str(raw)
        + b"tb."
    )


def _peak_bytes(fn) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except pickle.UnpicklingError:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_huge_shape_in_reconstruct_is_not_allocated():
    # 40-odd bytes that ask numpy for a 614 MB array and give no data for it.
    payload = b"\x80\x02" + _reconstruct_call((614_400_000,)) + b"."
    assert len(payload) < 80
    with pytest.raises(pickle.UnpicklingError, match="without its data"):
        restricted_loads(payload)
    assert _peak_bytes(lambda: restricted_loads(payload)) < 1_000_000


def test_huge_shape_in_state_is_refused_before_allocation():
    payload = _array_with_state((200_000, 3072), "|u1", b"\x00" * 16)
    with pytest.raises(pickle.UnpicklingError, match="needs 614400000 bytes but the file holds 16"):
        restricted_loads(payload)
    assert _peak_bytes(lambda: restricted_loads(payload)) < 1_000_000


def test_forged_length_field_is_refused_before_allocation():
    # BINBYTES8 claiming 600 MB in a 20-byte file: plain pickle allocates the 600 MB first.
    payload = b"\x80\x04\x8e" + (600_000_000).to_bytes(8, "little") + b"abc."
    with pytest.raises(pickle.UnpicklingError, match="not a valid pickle"):
        restricted_loads(payload)
    assert _peak_bytes(lambda: restricted_loads(payload)) < 1_000_000


def test_array_without_data_is_refused():
    # Uninitialised memory: the array is reconstructed but its state never set.
    payload = b"\x80\x02}(" + _str(b"data") + _reconstruct_call((4,)) + b"u."
    with pytest.raises(pickle.UnpicklingError, match="without its data"):
        restricted_loads(payload)


@pytest.mark.parametrize("kind", ["|O8", "|V8", "|S4", "<U2", "<M8"])
def test_non_numeric_dtypes_are_refused(kind):
    payload = _array_with_state((1,), kind, b"\x00" * 8)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        restricted_loads(payload)


def test_object_array_with_list_state_is_refused():
    # An object array's state carries a list of objects instead of raw bytes.
    payload = (
        b"\x80\x02" + _reconstruct_call((0,)) + b"(" + _int(1) + b"(" + _int(1) + b"t"
        + _dtype_call("<i8") + b"\x89](" + _int(5) + b"etb."
    )  # fmt: skip
    with pytest.raises(pickle.UnpicklingError, match="data is a list"):
        restricted_loads(payload)


def test_short_data_is_refused():
    payload = _array_with_state((2, 3), "<i4", b"\x00" * 20)
    with pytest.raises(pickle.UnpicklingError, match="needs 24 bytes but the file holds 20"):
        restricted_loads(payload)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("protocol", [4, 5])
def test_layouts_and_byte_orders_round_trip(order, protocol):
    values = [
        np.asarray(np.arange(12, dtype=">i4").reshape(3, 4), order=order),
        np.asarray(np.linspace(0, 1, 6, dtype="<f8").reshape(2, 3), order=order),
        np.array([True, False]),
        np.zeros((0, 3), np.uint8),
    ]
    out = restricted_loads(pickle.dumps({"v": values, "same": (values[0], values[0])}, protocol))
    for got, want in zip(out["v"], values):
        assert got.dtype == want.dtype and got.flags.writeable
        np.testing.assert_array_equal(got, want)
    assert out["same"][0] is out["same"][1]  # one array referenced twice stays one array
