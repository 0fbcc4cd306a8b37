"""MPerClassSampler: PML's length, batch composition, errors and, for the same seed, PML's
index sequence."""

import numpy as np
import pytest
import torch
from pytorch_metric_learning.samplers import MPerClassSampler as PMLSampler
from pytorch_metric_learning.utils import common_functions as pml_c_f

from metricssl.samplers.m_per_class_sampler import MPerClassSampler
from metricssl.utils import common_functions as c_f


def uneven_labels():
    # Class sizes 1, 3, 5, 12, 30: two classes smaller than m = 4.
    sizes = [1, 3, 5, 12, 30]
    labels = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)])
    return np.random.RandomState(0).permutation(labels)


CONFIGS = [
    (4, None, 100000),
    (4, None, 7),  # shorter than one pass
    (4, 8, 1000),
    (2, 10, 999),
    (1, 5, 50),
    (4, 20, 20),
]


@pytest.mark.parametrize("m, batch_size, length", CONFIGS)
def test_length_matches_pml(m, batch_size, length):
    labels = uneven_labels()
    ours = MPerClassSampler(labels, m, batch_size, length)
    theirs = PMLSampler(labels, m, batch_size, length)
    assert len(ours) == len(theirs)
    assert ours.calculate_num_iters() == theirs.calculate_num_iters()
    assert len(list(ours)) == len(ours)
    assert ours.length_of_single_pass == theirs.length_of_single_pass
    assert sorted(ours.labels) == sorted(int(x) for x in theirs.labels)
    for label, idx in theirs.labels_to_indices.items():
        assert np.array_equal(ours.labels_to_indices[label], idx)


@pytest.mark.parametrize("m, batch_size", [(4, 8), (2, 10), (4, 20), (1, 3)])
def test_batch_composition(m, batch_size):
    labels = uneven_labels()
    sizes = np.bincount(labels)
    sampler = MPerClassSampler(labels, m, batch_size, length_before_new_iter=400)
    idx = np.array(list(sampler))
    assert len(idx) % batch_size == 0
    for batch in idx.reshape(-1, batch_size):
        runs = batch.reshape(-1, m)
        run_labels = labels[runs]
        assert (run_labels == run_labels[:, :1]).all()  # each run is one class
        assert len(set(run_labels[:, 0].tolist())) == len(runs)  # distinct classes
        for run, lab in zip(runs, run_labels[:, 0]):
            if sizes[lab] >= m:
                assert len(set(run.tolist())) == m  # no repeats when the class is big enough


def test_without_batch_size_each_pass_covers_every_class_m_times():
    labels = uneven_labels()
    sampler = MPerClassSampler(labels, 3, None, length_before_new_iter=200)
    idx = np.array(list(sampler))
    assert len(idx) == 195  # 200 rounded down to a multiple of 3 * 5
    for one_pass in idx.reshape(-1, 15):
        assert np.array_equal(np.bincount(labels[one_pass], minlength=5), np.full(5, 3))


def test_dataloader_batches():
    labels = torch.arange(60) % 6
    sampler = MPerClassSampler(labels, m=5, batch_size=10, length_before_new_iter=100)
    loader = torch.utils.data.DataLoader(labels, batch_size=10, sampler=sampler, drop_last=True)
    batches = list(loader)
    assert len(batches) == 10
    for b in batches:
        assert sorted(torch.bincount(b, minlength=6).tolist()) == [0, 0, 0, 0, 5, 5]


def test_label_types():
    text = ["cat", "dog", "cat", "emu", "dog", "emu"]
    sampler = MPerClassSampler(text, m=2, batch_size=4, length_before_new_iter=8)
    idx = list(sampler)
    assert len(idx) == 8 and all(isinstance(i, int) for i in idx)
    assert sorted(sampler.labels) == ["cat", "dog", "emu"]
    as_tensor = MPerClassSampler(
        torch.tensor([3, 3, -1, -1]), m=2, batch_size=2, length_before_new_iter=4
    )
    assert sorted(as_tensor.labels_to_indices[-1].tolist()) == [2, 3]


def test_reproducible_with_numpy_seed_and_fresh_each_epoch():
    labels = uneven_labels()
    np.random.seed(123)
    sampler = MPerClassSampler(labels, 4, 8, 200)
    first, second = list(sampler), list(sampler)
    assert first != second
    # As in PML, the class list stays shuffled between epochs: the same seed gives the same
    # epochs from a new sampler (or one whose epochs start from the same class order).
    np.random.seed(123)
    assert list(MPerClassSampler(labels, 4, 8, 200)) == first


LAYOUTS = {
    "uneven_shuffled": uneven_labels,
    "contiguous": lambda: np.repeat(np.arange(7), 5),
    "interleaved_tensor": lambda: torch.arange(60) % 9,
    "random_13": lambda: np.random.RandomState(4).randint(0, 13, 400),
    "strings": lambda: ["cat", "dog", "cat", "emu", "dog", "emu", "yak", "cat", "yak", "dog"],
    "floats": lambda: np.random.RandomState(5).randint(0, 6, 50).astype(np.float32) / 2,
}


def _both(layout, m, batch_size, length):
    labels = LAYOUTS[layout]()
    return MPerClassSampler(labels, m, batch_size, length), PMLSampler(
        labels, m, batch_size, length
    )


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize(
    "m, batch_size, length",
    [(2, 4, 100), (3, 6, 999), (1, 3, 30), (4, None, 500), (2, None, 7), (5, 10, 10)],
)
def test_same_index_sequence_as_pml_for_the_same_seed(layout, m, batch_size, length):
    ours, theirs = _both(layout, m, batch_size, length)
    assert [str(x) for x in ours.labels] == [str(x) for x in theirs.labels]  # first appearance
    np.random.seed(11)
    pml_epochs = [[int(i) for i in theirs] for _ in range(3)]
    np.random.seed(11)
    our_epochs = [list(ours) for _ in range(3)]
    if len(pml_epochs[0]) > len(ours):  # PML yields a whole pass beyond its own len
        pml_epochs = [e[: len(ours)] for e in pml_epochs]
    assert our_epochs == pml_epochs


def test_same_sequence_from_a_user_generator_through_numpy_random():
    ours, theirs = _both("random_13", 4, 16, 800)
    old_ours, old_pml = c_f.NUMPY_RANDOM, pml_c_f.NUMPY_RANDOM
    try:
        c_f.NUMPY_RANDOM, pml_c_f.NUMPY_RANDOM = (np.random.RandomState(3) for _ in range(2))
        assert list(ours) == [int(i) for i in theirs]
        c_f.NUMPY_RANDOM, pml_c_f.NUMPY_RANDOM = (np.random.default_rng(3) for _ in range(2))
        assert list(ours) == [int(i) for i in theirs]
    finally:
        c_f.NUMPY_RANDOM, pml_c_f.NUMPY_RANDOM = old_ours, old_pml


def test_many_classes_per_batch():
    labels = np.arange(400) % 40
    sampler = MPerClassSampler(labels, 2, 64, 640)  # 32 of 40 classes per batch
    idx = np.array(list(sampler)).reshape(-1, 64)
    for batch in idx:
        assert len(set(labels[batch].tolist())) == 32


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        # PML asserts these: the error is also an AssertionError.
        (dict(m=3, batch_size=8), (ValueError, AssertionError), "multiple of m"),
        (dict(m=2, batch_size=12), (ValueError, AssertionError), "not enough classes"),
        (dict(m=2, batch_size=8, length_before_new_iter=4), AssertionError, ">= batch_size"),
        (dict(m=0), ValueError, "m"),
        (dict(m=2.5), TypeError, "m"),
        (dict(m="2"), TypeError, "m"),
        (dict(m=2, batch_size=0), ValueError, "batch_size"),
        (dict(m=2, length_before_new_iter=0), ValueError, "length_before_new_iter"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    labels = uneven_labels()  # 5 classes
    with pytest.raises(exc, match=match) as info:
        MPerClassSampler(labels, **kwargs)
    for kind in exc if isinstance(exc, tuple) else (exc,):
        assert isinstance(info.value, kind)


def test_bad_labels():
    with pytest.raises(ValueError, match="one-dimensional"):
        MPerClassSampler(np.zeros((3, 2)), m=1)
    with pytest.raises(ValueError, match="empty"):
        MPerClassSampler([], m=1)


def test_integral_floats_and_numpy_ints_are_accepted():
    s = MPerClassSampler(uneven_labels(), m=np.int64(2), batch_size=4.0, length_before_new_iter=10)
    assert (s.m_per_class, s.batch_size, len(s)) == (2, 4, 8)


# -- cover_all: every sample at least once per epoch ------------------------------------------


def _check_runs(idx, labels, m, batch_size):
    """Batches of distinct classes in runs of m; distinct items when the class has >= m."""
    sizes = np.bincount(labels)
    for batch in idx.reshape(-1, batch_size):
        runs = batch.reshape(-1, m)
        run_labels = labels[runs]
        assert (run_labels == run_labels[:, :1]).all()
        assert len(set(run_labels[:, 0].tolist())) == len(runs)
        for run, lab in zip(runs, run_labels[:, 0]):
            if sizes[lab] >= m:
                assert len(set(run.tolist())) == m
            else:  # a small class cycles through all of its items
                counts = np.bincount(run, minlength=len(labels))[labels == lab]
                assert counts.min() >= m // sizes[lab] and counts.max() <= -(-m // sizes[lab])


@pytest.mark.parametrize(
    "m, batch_size, length",
    [(4, 8, 16), (4, 8, 1000), (2, 10, 30), (1, 5, 5), (4, 20, 20), (3, 6, 600), (5, 5, 50)],
)
def test_cover_all_visits_every_item_each_epoch(m, batch_size, length):
    labels = uneven_labels()
    default = MPerClassSampler(labels, m, batch_size, length)
    sampler = MPerClassSampler(labels, m, batch_size, length, cover_all=True)
    need = -(-np.bincount(labels) // m)  # runs a class needs to show every item once
    iters = max(-(-need.sum() // (batch_size // m)), need.max())
    assert len(sampler) == max(len(default), iters * batch_size)
    assert sampler.calculate_num_iters() == len(sampler) // batch_size
    for _ in range(3):
        idx = np.array(list(sampler))
        assert len(idx) == len(sampler)
        assert (np.bincount(idx, minlength=len(labels)) >= 1).all()
        _check_runs(idx, labels, m, batch_size)


def test_cover_all_spreads_extra_runs_evenly():
    labels = uneven_labels()  # sizes 1, 3, 5, 12, 30; m = 4 needs 1, 1, 2, 3, 8 runs
    sampler = MPerClassSampler(labels, 4, 8, 4000, cover_all=True)
    runs = np.bincount(labels[np.array(list(sampler))[::4]], minlength=5)
    assert runs.sum() == 1000 and runs.max() <= 500  # a class at most once per batch
    assert runs.max() - runs.min() <= 1  # far above every minimum: as equal as possible


def test_cover_all_items_of_a_class_are_visited_evenly():
    # One class of 10 items, m = 4: a permutation every 3 runs (12 slots), 2 slots wrap.
    labels = np.repeat(np.arange(3), [10, 4, 4])
    sampler = MPerClassSampler(labels, 4, 8, 8 * 30, cover_all=True)
    idx = np.array(list(sampler))
    counts = np.bincount(idx, minlength=len(labels))[:10]
    # Every full permutation shows each item once; the wrap-around shows 2 of them again.
    runs = (labels[idx[::4]] == 0).sum()
    full_cycles = runs // 3
    assert counts.min() >= full_cycles and counts.max() <= 2 * (full_cycles + 1)
    assert counts.sum() == runs * 4


def test_cover_all_dominant_class_lengthens_the_epoch():
    labels = np.repeat(np.arange(4), [100, 2, 2, 2])  # class 0 needs 25 runs of 4
    sampler = MPerClassSampler(labels, 4, 8, 16, cover_all=True)
    assert len(sampler) == 25 * 8
    idx = np.array(list(sampler))
    assert (np.bincount(idx, minlength=len(labels)) >= 1).all()
    _check_runs(idx, labels, 4, 8)
    assert (labels[idx.reshape(-1, 8)] == 0).sum(axis=1).tolist() == [4] * 25


def test_cover_all_without_batch_size():
    labels = uneven_labels()
    sampler = MPerClassSampler(labels, 4, None, 10, cover_all=True)
    assert len(sampler) == 8 * 20  # class of 30 needs 8 passes over all 5 classes
    idx = np.array(list(sampler))
    assert (np.bincount(idx, minlength=len(labels)) >= 1).all()
    for one_pass in idx.reshape(-1, 20):
        assert np.array_equal(np.bincount(labels[one_pass], minlength=5), np.full(5, 4))


def test_cover_all_reproducible_and_dataloader():
    labels = uneven_labels()
    sampler = MPerClassSampler(labels, 4, 8, 100, cover_all=True)
    np.random.seed(5)
    first = list(sampler)
    np.random.seed(5)
    assert list(sampler) == first and list(sampler) != first
    old = c_f.NUMPY_RANDOM
    try:
        c_f.NUMPY_RANDOM = np.random.default_rng(1)
        assert len(list(sampler)) == len(sampler)
    finally:
        c_f.NUMPY_RANDOM = old
    loader = torch.utils.data.DataLoader(labels, batch_size=8, sampler=sampler)
    assert sum(len(b) for b in loader) == len(sampler)


def test_cover_all_is_validated_and_off_by_default():
    assert MPerClassSampler(uneven_labels(), 2).cover_all is False
    with pytest.raises(TypeError, match="cover_all"):
        MPerClassSampler(uneven_labels(), 2, cover_all=1)
