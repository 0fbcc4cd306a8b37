import numpy as np
import pytest
import torch

from metricssl.index.vectors import (
    all_finite,
    as_id_array,
    check_k,
    check_vectors,
    l2_normalize,
    norms_overflow,
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


def test_l2_normalize_in_float64_for_any_finite_scale():
    rows = np.array([[3e30, 4e30], [3e-30, 4e-30]], np.float32)  # squares over/underflow
    np.testing.assert_allclose(l2_normalize(rows), [[0.6, 0.8], [0.6, 0.8]], rtol=1e-6)
    out = l2_normalize(torch.from_numpy(rows))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8], [0.6, 0.8]]))


def test_norms_overflow_at_half_the_float32_range():
    limit = np.sqrt(np.finfo(np.float32).max / 2)
    assert not norms_overflow(np.array([[limit * 0.999, 0.0]], np.float32))
    assert norms_overflow(np.array([[limit * 1.001, 0.0]], np.float32))
    assert norms_overflow(torch.tensor([[1e20, 0.0]]))
    assert norms_overflow(torch.tensor([[1e20, 0.0]], dtype=torch.float16).float())
    assert not norms_overflow(np.zeros((0, 3), np.float32))


@pytest.mark.parametrize("k", [0, -3, True, 1.0, "2", None])
def test_check_k_refuses_with_a_value_error(k):
    with pytest.raises(ValueError, match="k must be"):
        check_k(k)


def test_check_k_accepts_numpy_ints():
    assert check_k(np.int64(7)) == 7 and type(check_k(np.uint8(3))) is int
