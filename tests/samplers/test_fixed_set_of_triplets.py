"""FixedSetOfTriplets: PML's triplets draw for draw, valid triplets, fixed set, clear errors."""

import numpy as np
import pytest
import torch
from pytorch_metric_learning.samplers import FixedSetOfTriplets as PMLSampler

from metricssl.miners.embeddings_already_packaged_as_triplets import (
    EmbeddingsAlreadyPackagedAsTriplets,
)
from metricssl.samplers.fixed_set_of_triplets import FixedSetOfTriplets
from metricssl.utils import common_functions as c_f


def shuffled_labels(seed=0):
    # Uneven classes, one singleton, labels not in sorted order of first appearance.
    labels = np.concatenate([np.full(s, c) for c, s in zip([7, 3, 11, 0, 5], [1, 4, 9, 2, 20])])
    return np.random.RandomState(seed).permutation(labels)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_identical_to_pml_with_the_same_seed(as_tensor):
    labels = shuffled_labels()
    given = torch.from_numpy(labels) if as_tensor else labels
    np.random.seed(4)
    ours = FixedSetOfTriplets(given, 300)
    np.random.seed(4)
    theirs = PMLSampler(given, 300)
    assert np.array_equal(ours.fixed_set_of_triplets, theirs.fixed_set_of_triplets)
    assert list(ours.labels_to_indices) == [int(k) for k in theirs.labels_to_indices]
    for key, idx in theirs.labels_to_indices.items():
        assert np.array_equal(ours.labels_to_indices[int(key)], idx)
    for _ in range(2):  # every epoch reshuffles the same way
        np.random.seed(9)
        a = list(ours)
        np.random.seed(9)
        assert a == list(theirs)
    assert len(ours) == len(theirs) == 900


def test_triplets_are_valid_and_the_set_is_fixed():
    labels = shuffled_labels(1)
    sampler = FixedSetOfTriplets(labels, 500)
    t = sampler.fixed_set_of_triplets
    assert t.shape == (500, 3) and t.min() >= 0 and t.max() < len(labels)
    assert (labels[t[:, 0]] == labels[t[:, 1]]).all()
    assert (labels[t[:, 0]] != labels[t[:, 2]]).all()
    # The anchor equals the positive only when its class has a single member.
    singles = {k for k, v in sampler.labels_to_indices.items() if len(v) == 1}
    same = t[:, 0] == t[:, 1]
    assert set(labels[t[same, 0]].tolist()) <= singles
    assert not (~same & np.isin(labels[t[:, 0]], list(singles))).any()
    rows = {tuple(r) for r in t.tolist()}
    for _ in range(2):
        epoch = np.array(list(sampler)).reshape(-1, 3)
        assert sorted(map(tuple, epoch.tolist())) == sorted(map(tuple, t.tolist()))
        assert {tuple(r) for r in epoch.tolist()} == rows


def test_reproducible_and_honours_the_generator_hook():
    labels = shuffled_labels()
    np.random.seed(1)
    a = FixedSetOfTriplets(labels, 50).fixed_set_of_triplets
    np.random.seed(1)
    assert np.array_equal(a, FixedSetOfTriplets(labels, 50).fixed_set_of_triplets)
    old = c_f.NUMPY_RANDOM
    try:
        c_f.NUMPY_RANDOM = np.random.default_rng(3)
        b = FixedSetOfTriplets(labels, 50)
        c_f.NUMPY_RANDOM = np.random.default_rng(3)
        assert np.array_equal(
            b.fixed_set_of_triplets, FixedSetOfTriplets(labels, 50).fixed_set_of_triplets
        )
        assert len(list(b)) == 150
    finally:
        c_f.NUMPY_RANDOM = old


def test_batches_feed_the_packaged_triplets_miner():
    labels = shuffled_labels()
    sampler = FixedSetOfTriplets(labels, 20)
    loader = torch.utils.data.DataLoader(torch.from_numpy(labels), batch_size=12, sampler=sampler)
    miner = EmbeddingsAlreadyPackagedAsTriplets()
    for batch_labels in loader:
        a, p, n = miner(torch.randn(len(batch_labels), 4), batch_labels)
        assert (batch_labels[a] == batch_labels[p]).all() and (
            batch_labels[a] != batch_labels[n]
        ).all()


@pytest.mark.parametrize(
    "labels, num_triplets, exc, match",
    [
        (np.zeros(5), 3, ValueError, "at least 2 classes"),
        (np.arange(5), 0, ValueError, "num_triplets"),
        (np.arange(5), 2.5, TypeError, "num_triplets"),
        (np.arange(5), "3", TypeError, "num_triplets"),
        (np.zeros((3, 2)), 3, ValueError, "one-dimensional"),
        ([], 3, ValueError, "empty"),
    ],
)
def test_bad_arguments(labels, num_triplets, exc, match):
    with pytest.raises(exc, match=match):
        FixedSetOfTriplets(labels, num_triplets)


def test_what_pml_asserts_is_also_an_assertion_error():
    with pytest.raises(AssertionError):
        PMLSampler(np.arange(5), 0)
    with pytest.raises(AssertionError, match="num_triplets"):
        FixedSetOfTriplets(np.arange(5), 0)


def test_integral_float_count_as_pml():
    assert len(FixedSetOfTriplets(np.arange(4) % 2, 1e2)) == 300
