import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from metricssl.data.array_dataset import ArrayDataset


def test_items_and_batches():
    images = np.arange(5 * 4, dtype=np.uint8).reshape(5, 1, 2, 2)
    labels = np.array([3, 1, 4, 1, 5])
    ds = ArrayDataset(images, labels)
    assert len(ds) == 5
    image, label = ds[2]
    assert image.dtype == torch.uint8 and image.tolist() == images[2].tolist() and label == 4
    images[2, 0, 0, 0] = 99  # numpy input is shared, not copied
    assert ds[2][0][0, 0, 0] == 99
    x, y = next(iter(DataLoader(ds, batch_size=5)))
    assert x.shape == (5, 1, 2, 2) and y.tolist() == labels.tolist()


def test_unlabelled():
    ds = ArrayDataset(torch.zeros(3, 8))
    assert torch.equal(ds[1], torch.zeros(8))
    assert next(iter(DataLoader(ds, batch_size=3))).shape == (3, 8)


def test_errors():
    with pytest.raises(TypeError, match="images"):
        ArrayDataset([[1, 2]])
    with pytest.raises(ValueError, match="non-empty"):
        ArrayDataset(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="has 3 items"):
        ArrayDataset(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="1D"):
        ArrayDataset(torch.zeros(3, 2), torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="integers"):
        ArrayDataset(torch.zeros(3, 2), torch.zeros(3))
