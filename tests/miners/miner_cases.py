"""Inputs and comparisons shared by the miner tests."""

from __future__ import annotations

import torch
from pytorch_metric_learning import distances as pml_distances

from metricssl.distances.cosine_similarity import CosineSimilarity
from metricssl.distances.lp_distance import LpDistance
from tests.parity import random_embeddings, random_labels, same_indices

LAYOUTS = ["one_class", "singletons", "few", "many"]
SIZES = [2, 8, 33, 128]


def make_labels(n: int, layout: str, seed: int = 0) -> torch.Tensor:
    if layout == "one_class":
        return torch.zeros(n, dtype=torch.long)
    if layout == "singletons":
        return torch.arange(n)
    if layout == "few":
        return random_labels(n, 3, seed)
    return random_labels(n, max(2, n // 3), seed)


def distance_pair(name: str):
    """(ours, PML's) distance objects."""
    if name == "cosine":
        return CosineSimilarity(), pml_distances.CosineSimilarity()
    return LpDistance(), pml_distances.LpDistance()


def same_tuples(ours, theirs) -> None:
    """Same pairs or triplets as multisets, ours int64 like PML's."""
    assert all(t.dtype == torch.long for t in ours)
    same_indices(ours, theirs)


def embeddings_and_ref(n: int, d: int, dtype, with_ref: bool, layout: str, seed: int = 0):
    x = random_embeddings(n, d, dtype, seed=seed)
    labels = make_labels(n, layout, seed)
    if not with_ref:
        return x, labels, None, None
    m = n + 5
    return x, labels, random_embeddings(m, d, dtype, seed=seed + 100), make_labels(m, layout, 7)


COUNT_NAMES = ("num_triplets", "num_pos_pairs", "num_neg_pairs")


def assert_parity(ours, theirs, x, labels, ref=None, ref_labels=None, seed=None):
    """Run both miners (reseeding torch before each when ``seed`` is given); same tuples and
    the same count attributes. Returns our output."""
    if seed is not None:
        torch.manual_seed(seed)
    mine = ours(x, labels, ref, ref_labels)
    if seed is not None:
        torch.manual_seed(seed)
    expected = theirs(x, labels, ref, ref_labels)
    same_tuples(mine, expected)
    for name in COUNT_NAMES:
        assert getattr(ours, name, None) == getattr(theirs, name, None), name
    assert all(t.device == x.device for t in mine)
    return mine


def assert_valid_triplets(triplets, labels, ref_labels=None) -> None:
    """Anchor and positive share a label, the negative does not, no anchor is its own positive."""
    a, p, n = triplets
    ref_labels = labels if ref_labels is None else ref_labels
    assert torch.equal(labels[a], ref_labels[p])
    assert not (labels[a] == ref_labels[n]).any()
    if ref_labels is labels:
        assert not (a == p).any()
