"""Argument checks: each error names the argument and says what is wrong."""

import math
import warnings

import pytest
import torch

from metricssl.core.validation import (
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
    check_labels(torch.zeros(3), 3)  # float labels are compared by value, as in PML
    with pytest.raises(TypeError, match="labels must hold integer or real values"):
        check_labels(torch.zeros(3, dtype=torch.complex64), 3)
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


# -- PML asserts: our errors are AssertionErrors too --------------------------------------------


def test_argument_errors_are_assertion_errors():
    from metricssl.core.validation import ArgumentError, ArgumentTypeError

    assert issubclass(ArgumentError, ValueError) and issubclass(ArgumentError, AssertionError)
    assert issubclass(ArgumentTypeError, TypeError)
    assert issubclass(ArgumentTypeError, AssertionError)
    with pytest.raises(AssertionError, match="x must be >= 0"):
        check_number("x", -1, low=0)


def _wrong_distance_cases():
    """(module, class name, constructor arguments) whose distance PML asserts on."""
    cases = [
        ("losses", name, {})
        for name in [
            "SignalToNoiseRatioContrastiveLoss", "AngularLoss", "SmoothAPLoss", "TupletMarginLoss",
            "ThresholdConsistentMarginLoss", "InstanceLoss", "PNPLoss", "CircleLoss", "FastAPLoss",
            "DynamicSoftMarginLoss",
        ]
    ]  # fmt: skip
    cases += [
        ("losses", "LargeMarginSoftmaxLoss", {"num_classes": 3, "embedding_size": 4}),
        ("losses", "SoftTripleLoss", {"num_classes": 3, "embedding_size": 4}),
        ("miners", "AngularMiner", {}),
        ("miners", "DistanceWeightedMiner", {}),
        ("regularizers", "SparseCentersRegularizer", {"num_classes": 3, "centers_per_class": 2}),
        ("regularizers", "CenterInvariantRegularizer", {}),
        ("regularizers", "RegularFaceRegularizer", {}),
    ]
    return cases


# Distances some class refuses, as constructor arguments of LpDistance or CosineSimilarity.
_CANDIDATE_DISTANCES = [
    ("CosineSimilarity", {}),
    ("LpDistance", {"p": 1}),
    ("LpDistance", {"normalize_embeddings": False}),
    ("LpDistance", {"power": 2}),
]


@pytest.mark.parametrize("module, name, kwargs", _wrong_distance_cases())
def test_a_wrong_distance_is_an_assertion_error_as_in_pml(module, name, kwargs):
    """Every distance PML refuses with an assertion, ours refuses with an AssertionError too."""
    import importlib

    from pytorch_metric_learning import distances as pml_distances

    from metricssl import distances

    theirs = getattr(importlib.import_module(f"pytorch_metric_learning.{module}"), name)
    ours = getattr(importlib.import_module(f"metricssl.{module}"), name)
    refused = 0
    for distance_name, distance_kwargs in _CANDIDATE_DISTANCES:
        try:
            theirs(distance=getattr(pml_distances, distance_name)(**distance_kwargs), **kwargs)
        except AssertionError:
            refused += 1
            with pytest.raises(AssertionError):
                ours(distance=getattr(distances, distance_name)(**distance_kwargs), **kwargs)
    assert refused


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.losses.RankedListLoss(margin=0.4, Tn=1.2, imbalance=-1),
        lambda m: m.losses.HistogramLoss(n_bins=1, delta=0.5),
        lambda m: m.regularizers.SparseCentersRegularizer(num_classes=3, centers_per_class=1),
    ],
)
def test_pml_constructor_assertions_are_assertion_errors(make):
    import pytorch_metric_learning.losses
    import pytorch_metric_learning.regularizers

    import metricssl.losses
    import metricssl.regularizers

    with pytest.raises(AssertionError):
        make(pytorch_metric_learning)
    with pytest.raises(AssertionError):
        make(metricssl)
