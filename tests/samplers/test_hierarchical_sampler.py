"""HierarchicalSampler: PML's batches draw for draw, batch composition, clear errors."""

import itertools

import numpy as np
import pytest
import torch
from pytorch_metric_learning.samplers import HierarchicalSampler as PMLSampler

from metricssl.samplers.hierarchical_sampler import HierarchicalSampler
from metricssl.utils import common_functions as c_f


def two_level_labels(n=600, num_classes=30, num_super=4, seed=0):
    """(class, super-class) rows; classes of uneven sizes, a few smaller than 4."""
    rs = np.random.RandomState(seed)
    classes = rs.randint(0, num_classes, n)
    classes[:3] = num_classes  # one class of 3 items
    return np.stack([classes, classes % num_super], axis=1)


def as_ints(batches):
    return [[int(i) for i in b] for b in batches]


CONFIGS = [
    dict(batch_size=32, samples_per_class=4),
    dict(batch_size=30, samples_per_class=5, super_classes_per_batch=3),
    dict(batch_size=16, samples_per_class="all", batches_per_super_tuple=2),
    dict(batch_size=24, samples_per_class=2, super_classes_per_batch=1),
]


@pytest.mark.parametrize("kwargs", CONFIGS)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_identical_to_pml_with_the_same_seed(kwargs, as_tensor):
    labels = two_level_labels()
    given = torch.from_numpy(labels) if as_tensor else labels
    np.random.seed(7)
    ours = HierarchicalSampler(given, **kwargs)
    np.random.seed(7)
    theirs = PMLSampler(given, **kwargs)
    assert ours.batches == as_ints(theirs.batches)
    assert len(ours) == len(theirs)
    assert [tuple(map(int, p)) for p in theirs.super_pairs] == ours.super_pairs
    for epoch_seed in [1, 2]:
        np.random.seed(epoch_seed)
        a = list(ours)
        np.random.seed(epoch_seed)
        assert a == as_ints(theirs)


def test_swapped_columns_match_pml():
    labels = two_level_labels(seed=1)[:, ::-1].copy()  # (super-class, class)
    kwargs = dict(batch_size=16, samples_per_class=4, inner_label=1, outer_label=0)
    np.random.seed(0)
    ours = list(HierarchicalSampler(labels, **kwargs))
    np.random.seed(0)
    assert ours == as_ints(PMLSampler(labels, **kwargs))


@pytest.mark.parametrize("super_per_batch, spc", [(2, 4), (3, 2), (2, "all")])
def test_batch_composition(super_per_batch, spc):
    labels = two_level_labels(num_classes=40, num_super=5, seed=2)
    batch_size = 12 * super_per_batch
    sampler = HierarchicalSampler(
        labels, batch_size, spc, batches_per_super_tuple=3, super_classes_per_batch=super_per_batch
    )
    batches = list(sampler)
    n_tuples = len(list(itertools.combinations(range(5), super_per_batch)))
    assert len(batches) == len(sampler) == 3 * n_tuples
    seen_tuples = []
    class_sizes = {c: int((labels[:, 0] == c).sum()) for c in np.unique(labels[:, 0])}
    for batch in batches:
        assert len(batch) <= batch_size and all(isinstance(i, int) for i in batch)
        assert min(batch) >= 0 and max(batch) < len(labels)
        rows = labels[batch]
        supers = np.unique(rows[:, 1])
        assert len(supers) <= super_per_batch
        seen_tuples.append(tuple(supers.tolist()))
        for s in supers:  # each super-class fills at most its share
            assert (rows[:, 1] == s).sum() <= 12
        for c, count in zip(*np.unique(rows[:, 0], return_counts=True)):
            assert count == (class_sizes[c] if spc == "all" else spc)
            if spc != "all" and class_sizes[c] >= spc:  # distinct when the class is big enough
                assert len(set(np.array(batch)[rows[:, 0] == c].tolist())) == spc
    if spc != "all":  # every batch is full and every tuple of super-classes gets its batches
        assert all(len(b) == batch_size for b in batches)
        assert sorted(set(seen_tuples)) == sorted(itertools.combinations(range(5), super_per_batch))


def test_dataloader_and_fresh_batches_each_epoch():
    labels = two_level_labels()
    sampler = HierarchicalSampler(labels, 16, 4)
    loader = torch.utils.data.DataLoader(torch.arange(len(labels)), batch_sampler=sampler)
    first = [b.tolist() for b in loader]
    second = [b.tolist() for b in loader]
    assert len(first) == len(second) == len(sampler) and first != second


def test_honours_the_generator_hook():
    labels = two_level_labels()
    old = c_f.NUMPY_RANDOM
    try:
        c_f.NUMPY_RANDOM = np.random.default_rng(5)
        a = list(HierarchicalSampler(labels, 16, 4))
        c_f.NUMPY_RANDOM = np.random.default_rng(5)
        assert a == list(HierarchicalSampler(labels, 16, 4))
    finally:
        c_f.NUMPY_RANDOM = old


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(batch_size=15, samples_per_class=4), ValueError, "super_classes_per_batch"),
        (dict(batch_size=16, samples_per_class=3), ValueError, "samples_per_class"),
        (dict(batch_size=16, samples_per_class=0), ValueError, "samples_per_class"),
        (dict(batch_size=16, samples_per_class="some"), TypeError, "samples_per_class"),
        (dict(batch_size=0, samples_per_class=4), ValueError, "batch_size"),
        (dict(batch_size=16.0, samples_per_class=4), TypeError, "batch_size"),
        (
            dict(batch_size=16, samples_per_class=4, batches_per_super_tuple=0),
            ValueError,
            "batches_per_super_tuple",
        ),
        (
            dict(batch_size=16, samples_per_class=4, super_classes_per_batch=0),
            ValueError,
            "super_classes_per_batch",
        ),
        (
            dict(batch_size=20, samples_per_class=2, super_classes_per_batch=5),
            ValueError,
            "fewer than super_classes_per_batch",
        ),
        (dict(batch_size=16, samples_per_class=4, outer_label=2), ValueError, "outer_label"),
        (dict(batch_size=16, samples_per_class=4, inner_label=-3), ValueError, "inner_label"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        HierarchicalSampler(two_level_labels(), **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(batch_size=15, samples_per_class=4),
        dict(batch_size=16, samples_per_class=3),
        dict(batch_size=16, samples_per_class=0),
    ],
)
def test_what_pml_asserts_is_also_an_assertion_error(kwargs):
    with pytest.raises(AssertionError):
        PMLSampler(two_level_labels(), **kwargs)
    with pytest.raises(AssertionError):
        HierarchicalSampler(two_level_labels(), **kwargs)


def test_bad_labels():
    with pytest.raises(ValueError, match="2D"):
        HierarchicalSampler(np.arange(10), 4, 2)
    with pytest.raises(ValueError, match="2D"):
        HierarchicalSampler(np.zeros((0, 2)), 4, 2)
