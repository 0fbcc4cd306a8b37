import numpy as np
import pytest
import sklearn.datasets
import torch

from metricssl.data.digits import load_digits


def test_all_digits_scaled_to_uint8():
    images, labels = load_digits()
    ref = sklearn.datasets.load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.tolist() == ref.target.tolist()
    np.testing.assert_array_equal(images[:, 0].numpy(), np.rint(ref.images * 255 / 16))
    assert images.min() == 0 and images.max() == 255


def test_fixed_stratified_split():
    images, labels = load_digits()
    train_x, train_y = load_digits("train")
    test_x, test_y = load_digits("test")
    assert len(train_y) + len(test_y) == 1797 and len(test_y) == 359
    # same split every call, and the parts are disjoint and cover everything
    assert torch.equal(load_digits("test")[0], test_x)
    rows = {bytes(x.numpy().tobytes()) + bytes([y]) for x, y in zip(images, labels)}
    parts = [bytes(x.numpy().tobytes()) + bytes([y]) for x, y in zip(train_x, train_y)]
    parts += [bytes(x.numpy().tobytes()) + bytes([y]) for x, y in zip(test_x, test_y)]
    assert set(parts) == rows
    # each class keeps ~20% in test
    share = test_y.bincount(minlength=10).float() / labels.bincount(minlength=10).float()
    assert torch.all((share - 0.2).abs() < 0.01)


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")
