import pytest
import torch

from tests.testers.test_global_embedding_space import _pair, assert_same_accuracies
from tests.trainer_parity import Pairs


@pytest.mark.parametrize("kwargs", [{}, {"normalize_embeddings": False}, {"batch_size": 7}])
def test_accuracies_and_embeddings_match_pml(kwargs):
    ours, theirs = _pair("GlobalTwoStreamEmbeddingSpaceTester", **kwargs)
    trunk = torch.nn.Linear(8, 4)
    datasets = {"train": Pairs(n=30, seed=3)}
    assert_same_accuracies(*(t.test(datasets, 1, trunk) for t in (ours, theirs)))
    a = ours.get_all_embeddings(datasets["train"], trunk, torch.nn.Identity(), None)
    b = theirs.get_all_embeddings(datasets["train"], trunk, torch.nn.Identity(), None)
    for x, y in zip(a, b):
        assert x.shape == y.shape == (60, x.shape[1]) and x.dtype == y.dtype
        torch.testing.assert_close(x, y)


def test_query_and_reference_must_be_the_same_split():
    ours, _ = _pair("GlobalTwoStreamEmbeddingSpaceTester")
    datasets = {"train": Pairs(n=12), "val": Pairs(n=12, seed=1)}
    with pytest.raises(AssertionError, match="does not support different reference"):
        ours.test(datasets, 1, torch.nn.Identity(), splits_to_eval=[("train", ["val"])])
