import numpy as np
import pytest
import torch

from metricssl.data.splits import stratified_split


def test_partition_stratified_and_deterministic():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, test = stratified_split(labels, test_fraction=0.2, seed=1)
    assert train.dtype == torch.int64 and test.dtype == torch.int64
    assert torch.equal(torch.sort(torch.cat([train, test])).values, torch.arange(100))
    assert labels[test].bincount().tolist() == [10, 6, 4]
    assert torch.all(train[1:] > train[:-1]) and torch.all(test[1:] > test[:-1])
    again = stratified_split(labels.numpy(), test_fraction=0.2, seed=1)
    assert torch.equal(again[1], test)
    assert not torch.equal(stratified_split(labels, 0.2, seed=2)[1], test)


def test_small_classes():
    labels = np.array([0, 1, 1, 2, 2, 2])
    train, test = stratified_split(labels, test_fraction=0.9)
    # a singleton stays in train; every class keeps at least one training example
    assert 0 in train.tolist()
    assert set(labels[train.numpy()]) == {0, 1, 2}
    assert set(labels[test.numpy()]) == {1, 2}
    assert stratified_split(np.zeros(0, dtype=np.int64))[1].numel() == 0


def test_errors():
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split([0, 1], test_fraction=1.0)
    with pytest.raises(ValueError, match="1D"):
        stratified_split(np.zeros((2, 2), dtype=int))
    with pytest.raises(TypeError, match="integers"):
        stratified_split(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="seed"):
        stratified_split([0, 1], seed=-1)
