"""Linear probe: separable data is learned, unseen test classes count as errors, bad input."""

import pytest
import torch

from metricssl.eval.linear_probe import linear_probe


def separable(n, seed, classes=4, d=12):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, classes, generator=g)
    x = torch.randn(n, d, generator=g) * 3 + 50  # offset and scale: standardisation matters
    return x, ((x - 50) @ w).argmax(dim=1)


def test_linearly_separable_data_is_learned():
    x, y = separable(800, 0)
    assert linear_probe(x[:600], y[:600], x[600:], y[600:], max_iter=30) > 0.9


def test_numpy_input_and_labels_of_any_values():
    x, y = separable(600, 1, classes=2)
    labels = torch.where(y == 0, -5, 100)
    acc = linear_probe(
        x[:400].numpy(), labels[:400].numpy(), x[400:].numpy(), labels[400:], max_iter=30
    )
    assert acc > 0.95


def test_unseen_test_class_is_an_error_and_constant_features_are_fine():
    x, y = separable(400, 2, classes=2)
    x[:, 0] = 1.0  # zero variance
    y_test = y[300:].clone()
    y_test[:10] = 9  # never seen in training
    acc = linear_probe(x[:300], y[:300], x[300:], y_test, max_iter=30)
    assert acc <= 0.9 + 1e-9


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"test_x": torch.randn(5, 3)}, ValueError, "dimension"),
        ({"train_y": torch.zeros(3, dtype=torch.long)}, ValueError, "train_y has length 3"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay"),
        ({"max_iter": 0}, ValueError, "max_iter"),
    ],
)
def test_errors(kwargs, error, match):
    args = {
        "train_x": torch.randn(10, 4),
        "train_y": torch.zeros(10, dtype=torch.long),
        "test_x": torch.randn(5, 4),
        "test_y": torch.zeros(5, dtype=torch.long),
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        linear_probe(
            args.pop("train_x"), args.pop("train_y"), args.pop("test_x"), args.pop("test_y"), **args
        )
