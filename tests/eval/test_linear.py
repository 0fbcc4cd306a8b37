"""Offline linear evaluation: separable data, a deterministic recipe whose penalty never looks
at the test set, labels of any values, and errors that name the argument; linear_probe, the
same fit with one penalty."""

import numpy as np
import pytest
import torch

from metricssl.eval.linear import (
    WEIGHT_DECAYS,
    LinearClassifier,
    linear_evaluation,
    linear_probe,
)

# Tiny fits: a second torch thread only adds synchronisation on a shared machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def separable(n, seed, classes=4, d=12):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, classes, generator=g)
    x = torch.randn(n, d, generator=g) * 3 + 50  # offset and scale: standardisation matters
    return x, ((x - 50) @ w).argmax(dim=1)


def noisy(n, seed, classes=5, d=20):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, classes, generator=g)
    return x, (x @ w + 2 * torch.randn(n, classes, generator=g)).argmax(dim=1)


def test_separable_data_scores_about_one():
    x, y = separable(1000, 0)
    result = linear_evaluation(x[:800], y[:800], x[800:], y[800:], max_iter=30)
    assert result.accuracy >= 0.97
    assert set(result.validation_accuracy) == set(WEIGHT_DECAYS)
    assert result.weight_decay in WEIGHT_DECAYS


def test_the_recipe_is_deterministic():
    x, y = noisy(600, 1)
    a = LinearClassifier(max_iter=30).fit(x[:500], y[:500])
    b = LinearClassifier(max_iter=30).fit(x[:500], y[:500])
    assert a.weight_decay_ == b.weight_decay_
    assert a.validation_accuracy_ == b.validation_accuracy_
    assert torch.equal(a.coef_, b.coef_) and torch.equal(a.intercept_, b.intercept_)


def test_the_penalty_is_chosen_without_the_test_labels():
    x, y = noisy(700, 2)
    honest = linear_evaluation(x[:500], y[:500], x[500:], y[500:], max_iter=30)
    scrambled = linear_evaluation(x[:500], y[:500], x[500:], y[500:].flip(0), max_iter=30)
    assert honest.weight_decay == scrambled.weight_decay
    assert honest.validation_accuracy == scrambled.validation_accuracy
    # The chosen penalty is the best held-out one, the larger among equals.
    best = max(honest.validation_accuracy.values())
    assert honest.weight_decay == max(
        wd for wd, acc in honest.validation_accuracy.items() if acc == best
    )


def test_one_penalty_fits_all_the_rows_without_holding_any_out():
    x, y = noisy(400, 3)
    classifier = LinearClassifier(1e-3, max_iter=30).fit(x[:300], y[:300])
    assert classifier.validation_accuracy_ == {} and classifier.weight_decay_ == 1e-3


def test_labels_of_any_values_numpy_input_and_predict():
    x, y = separable(600, 4, classes=2)
    labels = torch.where(y == 0, -5, 100)
    classifier = LinearClassifier(max_iter=30).fit(x[:400].numpy(), labels[:400].numpy())
    assert classifier.classes_.tolist() == [-5, 100]
    predicted = classifier.predict(x[400:])
    assert set(predicted.tolist()) <= {-5, 100}
    correct = int((predicted == labels[400:]).sum())
    assert classifier.score(x[400:], labels[400:]) == correct / 200
    unseen = labels[400:].clone()
    unseen[:20] = 7  # a class never fitted: always an error
    assert classifier.score(x[400:], unseen) <= 0.9 + 1e-9


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"test_x": torch.randn(5, 3)}, ValueError, "dimension"),
        ({"train_y": torch.zeros(3, dtype=torch.long)}, ValueError, "train_y has length 3"),
        ({"test_x": torch.full((5, 4), float("nan"))}, ValueError, "test_x contains NaN"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay"),
        ({"weight_decay": ()}, TypeError, "weight_decay"),
        ({"weight_decay": "1e-4"}, TypeError, "weight_decay"),
        ({"validation_fraction": 1.0}, ValueError, "validation_fraction"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"seed": -1}, ValueError, "seed"),
        ({"progress": "yes"}, TypeError, "progress"),
    ],
)
def test_errors_name_the_argument(kwargs, error, match):
    args = {
        "train_x": torch.randn(10, 4),
        "train_y": torch.arange(10) % 2,
        "test_x": torch.randn(5, 4),
        "test_y": torch.zeros(5, dtype=torch.long),
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        linear_evaluation(
            args.pop("train_x"), args.pop("train_y"), args.pop("test_x"), args.pop("test_y"), **args
        )


def test_classifier_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        LinearClassifier().predict(np.zeros((2, 3), dtype=np.float32))
    classifier = LinearClassifier(1e-4).fit(torch.randn(10, 4), torch.arange(10) % 2)
    with pytest.raises(ValueError, match="x has dimension 3"):
        classifier.score(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="no class has two samples"):
        LinearClassifier().fit(torch.randn(4, 3), torch.arange(4))


# -- linear_probe: one given penalty ----------------------------------------------------------


def test_linear_probe_learns_linearly_separable_data():
    x, y = separable(800, 0)
    assert linear_probe(x[:600], y[:600], x[600:], y[600:], max_iter=30) > 0.9


def test_linear_probe_numpy_input_and_labels_of_any_values():
    x, y = separable(600, 1, classes=2)
    labels = torch.where(y == 0, -5, 100)
    acc = linear_probe(
        x[:400].numpy(), labels[:400].numpy(), x[400:].numpy(), labels[400:], max_iter=30
    )
    assert acc > 0.95


def test_linear_probe_unseen_test_class_is_an_error_and_constant_features_are_fine():
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
def test_linear_probe_errors(kwargs, error, match):
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
