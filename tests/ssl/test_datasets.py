"""Training data: names, folders, pairs, Datasets; batches in a given order."""

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from metricssl.ssl.datasets import DATASETS, load_dataset, resolve_data


def test_named_dataset_and_errors(tmp_path):
    images, labels = load_dataset("digits", "test")
    assert images.dtype == torch.uint8 and images.shape[1:] == (1, 8, 8)
    assert "fashion-mnist" in DATASETS and "cifar10" in DATASETS
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "val")
    with pytest.raises(ValueError, match="unknown dataset"):
        resolve_data(str(tmp_path / "nowhere"))
    with pytest.raises(TypeError, match="dataset must be"):
        resolve_data(42)
    with pytest.raises(FileNotFoundError):
        resolve_data("mnist", data_dir=tmp_path)  # no IDX files there


def test_pairs_arrays_and_batches():
    images = np.arange(5 * 4, dtype=np.uint8).reshape(5, 1, 2, 2)
    data = resolve_data((images, np.array([0, 1, 0, 1, 1])))
    assert data.input_shape == (1, 2, 2) and data.labels.dtype == torch.int64
    got = list(data.batches(torch.tensor([4, 0, 2]), 2))
    assert [b.shape[0] for b, _ in got] == [2, 1]
    assert torch.equal(got[0][0][0], torch.from_numpy(images[4])) and got[0][1].tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        resolve_data((torch.zeros(3, 4, 4, dtype=torch.uint8), None))
    with pytest.raises(TypeError, match="uint8"):
        resolve_data((torch.zeros(3, 1, 4, 4, dtype=torch.int32), None))


class Pairs(Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        return torch.full((1, 3, 3), i, dtype=torch.uint8), i % 2


def test_torch_dataset_goes_through_a_dataloader():
    data = resolve_data(Pairs())
    assert data.labels.tolist() == [0, 1, 0, 1, 0, 1]
    ((images, labels),) = list(data.batches(torch.tensor([5, 1, 2]), 3))
    assert images[:, 0, 0, 0].tolist() == [5, 1, 2] and labels.tolist() == [1, 1, 0]
    sub = data.subset(torch.tensor([3, 4]))
    assert len(sub) == 2 and sub.labels.tolist() == [1, 0]


def test_image_folder(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            pil.fromarray(np.full((5, 5, 3), 40 * i, dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png"
            )
    data = resolve_data(str(tmp_path))
    assert len(data) == 6 and data.input_shape == (3, 5, 5)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
