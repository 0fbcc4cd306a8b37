import numpy as np
import pytest
import torch

from metricssl.index.vectors import (
    all_finite,
    as_id_array,
    check_vectors,
    l2_normalize,
    to_numpy_float32,
)


def test_float32_cpu_inputs_are_not_copied():
    x = torch.randn(10, 4)
    assert np.shares_memory(to_numpy_float32(x), x.numpy())
    assert np.shares_memory(to_numpy_float32(x[2:5]), x.numpy())
    a = np.random.rand(10, 4).astype(np.float32)
    assert to_numpy_float32(a) is a


def test_other_inputs_are_converted():
    x = torch.randn(4, 10)
    for chunk in (x.double(), x.half(), x.T, x.requires_grad_()):
        out = to_numpy_float32(chunk)
        assert out.dtype == np.float32 and out.flags.c_contiguous
        np.testing.assert_allclose(out, chunk.detach().float().numpy(), rtol=1e-3)


def test_check_vectors():
    check_vectors(np.zeros((0, 3), np.float16), 3, "x")
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        check_vectors([[1.0, 2.0]], 2, "x")
    with pytest.raises(ValueError, match=r"x\[None\]"):
        check_vectors(torch.zeros(3), 3, "x")
    with pytest.raises(ValueError, match="dimension 2 but the index has dim=3"):
        check_vectors(torch.zeros(1, 2), 3, "x")


def test_all_finite():
    assert all_finite(np.ones((2, 2)))
    assert not all_finite(np.array([[np.nan]], np.float32))
    assert not all_finite(np.array([[1e39]]))  # overflows float32
    assert not all_finite(torch.tensor([[1e39]], dtype=torch.float64))
    assert not all_finite(torch.tensor([[float("-inf")]], dtype=torch.bfloat16))


def test_as_id_array():
    assert as_id_array([3, 1]).dtype == np.int64
    assert as_id_array(np.array([2], np.uint8)).tolist() == [2]
    assert as_id_array(torch.tensor([5, 6], dtype=torch.int32)).tolist() == [5, 6]
    assert as_id_array([]).shape == (0,)
    with pytest.raises(ValueError, match="int64"):
        as_id_array(np.array([2**63], np.uint64))
    with pytest.raises(TypeError, match="integers"):
        as_id_array([1.5])


def test_l2_normalize_keeps_zero_rows():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], np.float32))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
