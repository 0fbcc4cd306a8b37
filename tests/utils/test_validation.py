"""Argument checks: each error names the argument and says what is wrong."""

import math
import warnings

import pytest
import torch

from metricssl.utils.validation import (
    apply_nonfinite_policy,
    check_choice,
    check_embeddings,
    check_indices_tuple,
    check_labels,
    check_module,
    check_number,
    check_same_device,
    check_same_width,
    nonfinite_flag,
)


def test_check_embeddings():
    check_embeddings(torch.randn(3, 2))
    check_embeddings(torch.randn(0, 2), allow_empty=True)
    with pytest.raises(TypeError, match="emb must be a torch.Tensor"):
        check_embeddings([[1.0]], "emb")
    with pytest.raises(ValueError, match=r"emb must be a 2D.*\(2, 3, 4\)"):
        check_embeddings(torch.randn(2, 3, 4), "emb")
    with pytest.raises(ValueError, match="2D"):
        check_embeddings(torch.randn(5))
    with pytest.raises(TypeError, match="embeddings must be a floating-point.*int64"):
        check_embeddings(torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="embeddings is empty"):
        check_embeddings(torch.randn(0, 4))


def test_check_labels():
    check_labels(None, 3)
    for dtype in [torch.int8, torch.int32, torch.int64, torch.uint8, torch.bool]:
        check_labels(torch.zeros(3, dtype=dtype), 3)
    with pytest.raises(TypeError, match="labels must be a torch.Tensor"):
        check_labels([0, 1, 2], 3)
    with pytest.raises(ValueError, match=r"labels must be a 1D.*\(3, 1\)"):
        check_labels(torch.zeros(3, 1, dtype=torch.long), 3)
    with pytest.raises(TypeError, match="labels must be an integer tensor.*float32"):
        check_labels(torch.zeros(3), 3)
    with pytest.raises(ValueError, match="ref_labels has length 2 but ref_emb has 3 rows"):
        check_labels(torch.zeros(2, dtype=torch.long), 3, "ref_labels", "ref_emb")


def test_same_device_and_width():
    a, b = torch.randn(2, 3), torch.randn(4, 3)
    check_same_device(a, b, "a", "b")
    check_same_width(a, b, "a", "b")
    with pytest.raises(ValueError, match="a has embedding size 3 but b has 5"):
        check_same_width(a, torch.randn(2, 5), "a", "b")
    meta = torch.empty(2, 3, device="meta")
    with pytest.raises(ValueError, match="a is on cpu but b is on meta"):
        check_same_device(a, meta, "a", "b")


def _idx(*values):
    return torch.tensor(values, dtype=torch.long)


def test_check_indices_tuple_accepts_valid_tuples():
    check_indices_tuple(None, 3, 3)
    check_indices_tuple((_idx(0, 1), _idx(1, 2), _idx(2, 0)), 3, 3)
    check_indices_tuple((_idx(0), _idx(4), _idx(1, 0), _idx(3, 4)), 2, 5)
    empty = torch.tensor([], dtype=torch.float32)  # torch.tensor([]) is float: allowed when empty
    check_indices_tuple((empty, empty, empty), 3, 3)
    check_indices_tuple([_idx(0), _idx(1), _idx(2)], 3, 3)


@pytest.mark.parametrize(
    "t, exc, pattern",
    [
        ((_idx(0), _idx(1)), TypeError, "3.*or 4"),
        (_idx(0, 1, 2), TypeError, "tuple"),
        ((_idx(0), _idx(1), [2]), TypeError, r"indices_tuple\[2\] must be a 1D"),
        ((_idx(0), _idx(1), torch.zeros(1, 1, dtype=torch.long)), TypeError, r"\[2\]"),
        ((_idx(0), _idx(1), torch.tensor([2.0])), TypeError, r"\[2\] must hold integer"),
        ((_idx(0), _idx(1), torch.tensor([True])), TypeError, "integer"),
        ((_idx(0, 1), _idx(1), _idx(2)), ValueError, "differ in length"),
        ((_idx(0, 1), _idx(1), _idx(2), _idx(0)), ValueError, "matching lengths"),
        (
            (_idx(0), _idx(1), _idx(5)),
            ValueError,
            r"\[2\] has indices in \[5, 5\], outside \[0, 4\)",
        ),
        ((_idx(3), _idx(1), _idx(2)), ValueError, r"\[0\].*outside \[0, 3\)"),
        ((_idx(-1), _idx(1), _idx(2)), ValueError, r"\[0\] has indices in \[-1"),
        ((_idx(0), _idx(1), _idx(2), _idx(4)), ValueError, r"\[3\].*outside \[0, 4\)"),
    ],
)
def test_check_indices_tuple_errors(t, exc, pattern):
    with pytest.raises(exc, match=pattern):
        check_indices_tuple(t, 3, 4)


def test_check_choice():
    check_choice("kind", "a", ("a", "b"))
    with pytest.raises(ValueError, match=r"kind must be one of \['a', 'b'\], got 'c'"):
        check_choice("kind", "c", ("b", "a"))


def test_check_number():
    check_number("x", 1)
    check_number("x", 0.5, low=0, high=1)
    check_number("x", None, allow_none=True)
    check_number("n", 3, integer=True, low=1)
    with pytest.raises(TypeError, match="x must be a number, got None"):
        check_number("x", None)
    with pytest.raises(TypeError, match="x must be a number"):
        check_number("x", True)  # bools are not numbers here
    with pytest.raises(TypeError, match="n must be an int, got 2.0"):
        check_number("n", 2.0, integer=True)
    with pytest.raises(ValueError, match="x must not be NaN"):
        check_number("x", math.nan)
    with pytest.raises(ValueError, match="x must be >= 0, got -1"):
        check_number("x", -1, low=0)
    with pytest.raises(ValueError, match="x must be > 0, got 0"):
        check_number("x", 0, low=0, low_inclusive=False)
    with pytest.raises(ValueError, match="x must be <= 1, got 2"):
        check_number("x", 2, high=1)
    with pytest.raises(ValueError, match="x must be < 1, got 1"):
        check_number("x", 1, high=1, high_inclusive=False)
    check_number("x", 0, low=0)
    check_number("x", 1, high=1)


def test_nonfinite_flag():
    good, bad = torch.randn(3, 2), torch.randn(3, 2)
    bad[1, 0] = float("inf")
    assert not nonfinite_flag(good)
    assert nonfinite_flag(good, bad)
    assert nonfinite_flag(good, None, torch.tensor([float("nan")]))
    assert nonfinite_flag(good) is False  # a plain bool on CPU: no tensor op to pay for
    # Finite entries whose sum overflows: the exact test decides.
    assert nonfinite_flag(torch.full((4,), 3e38)) is False


def test_apply_nonfinite_policy():
    value = torch.tensor(1.5, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert apply_nonfinite_policy(value, torch.tensor(False), "X").item() == 1.5
    with pytest.warns(RuntimeWarning, match="MyLoss: embeddings contain NaN or Inf"):
        out = apply_nonfinite_policy(value, torch.tensor(True), "MyLoss")
    assert math.isnan(out.item())
    out.backward()  # the NaN result stays in the graph
    assert value.grad.item() == 0
    with pytest.warns(RuntimeWarning):
        assert math.isnan(apply_nonfinite_policy(value, True, "MyLoss").item())


def test_check_module():
    check_module("head", torch.nn.Linear(2, 2))
    check_module("head", None, allow_none=True)
    with pytest.raises(TypeError, match="head must be an nn.Module, got NoneType"):
        check_module("head", None)
    with pytest.raises(TypeError, match="head must be an nn.Module or None, got int"):
        check_module("head", 3, allow_none=True)
