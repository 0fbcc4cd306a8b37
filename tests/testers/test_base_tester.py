import inspect

import pytest
import torch
from pytorch_metric_learning import testers as pml_testers

import metricssl.testers as testers
from metricssl.eval import AccuracyCalculator
from tests.trainer_parity import labelled_data


def test_constructor_arguments_and_defaults_are_pml():
    for name in testers.__all__:
        ours = inspect.signature(getattr(testers, name).__init__).parameters
        theirs = inspect.signature(getattr(pml_testers, name).__init__).parameters
        assert list(ours) == list(theirs), name
        for p in ours.values():
            assert p.default == theirs[p.name].default, (name, p.name)


def test_default_calculator_is_metricssls():
    tester = testers.BaseTester()
    assert isinstance(tester.accuracy_calculator, AccuracyCalculator)
    with pytest.raises(NotImplementedError):
        tester.dataloader_num_workers = 0
        tester.test({"a": labelled_data()}, 0, torch.nn.Identity())


def test_set_min_label_to_zero_maps_labels():
    data = torch.utils.data.TensorDataset(torch.randn(6, 3), torch.tensor([5, 5, 7, 7, 9, 9]))
    tester = testers.GlobalEmbeddingSpaceTester(
        dataloader_num_workers=0,
        data_device="cpu",
        set_min_label_to_zero=True,
        dataset_labels=[5, 7, 9],
    )
    _, labels = tester.get_all_embeddings(data, torch.nn.Identity())
    assert labels[:, 0].tolist() == [0, 0, 1, 1, 2, 2]


def test_an_empty_split_is_refused():
    tester = testers.GlobalEmbeddingSpaceTester(dataloader_num_workers=0, data_device="cpu")
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 3), torch.zeros(0))
    with pytest.raises(ValueError, match="dataset is empty"):
        tester.test({"val": empty}, 0, torch.nn.Identity())
    two_stream = testers.GlobalTwoStreamEmbeddingSpaceTester(dataloader_num_workers=0)
    with pytest.raises(ValueError, match="dataset is empty"):
        two_stream.get_all_embeddings(empty, torch.nn.Identity(), torch.nn.Identity(), None)
