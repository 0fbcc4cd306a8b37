"""The functional ``evaluate``: every metric in one call, same values as the calculator."""

import pytest
import torch

from metricssl.eval.accuracy_calculator import AccuracyCalculator
from metricssl.eval.evaluate import evaluate


def test_evaluate_all_metrics_and_agrees_with_calculator():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (200,), generator=g)
    x = 4 * torch.randn(4, 8, generator=g)[y] + torch.randn(200, 8, generator=g)
    out = evaluate(x, y)
    assert {"precision_at_1", "recall_at_8", "knn_accuracy_weighted", "NMI", "ARI"} <= set(out)
    calc = AccuracyCalculator(include=("precision_at_1", "r_precision"), k="max_bin_count")
    expected = calc.get_accuracy(x[:150], y[:150], x[150:], y[150:])
    assert (
        evaluate(x[:150], y[:150], x[150:], y[150:], metrics=("precision_at_1", "r_precision"))
        == expected
    )


def test_evaluate_errors():
    x, y = torch.randn(10, 3), torch.zeros(10, dtype=torch.long)
    with pytest.raises(TypeError, match="metrics"):
        evaluate(x, y, metrics="precision_at_1")
    with pytest.raises(ValueError, match="bogus"):
        evaluate(x, y, metrics=("bogus",))
