"""Positive/negative masks and PML's self-reference rule."""

import pytest
import torch
from pytorch_metric_learning.utils import loss_and_miner_utils as pml_lmu

from metricssl.core.pair_masks import is_self_reference, pos_neg_masks
from tests.parity import random_labels


def test_is_self_reference_is_by_identity():
    labels = torch.tensor([0, 1, 0])
    assert is_self_reference(labels, None)
    assert is_self_reference(labels, labels)
    assert not is_self_reference(labels, labels.clone())


@pytest.mark.parametrize("n, classes", [(1, 1), (6, 1), (6, 6), (11, 3)])
@pytest.mark.parametrize("ref", ["none", "same", "copy", "other"])
def test_masks_match_pml(n, classes, ref):
    labels = random_labels(n, classes, seed=n)
    ref_labels = {
        "none": None,
        "same": labels,
        "copy": labels.clone(),
        "other": random_labels(n + 2, classes, seed=99),
    }[ref]
    pos, neg = pos_neg_masks(labels, ref_labels)
    matches, diffs = pml_lmu.get_matches_and_diffs(labels, ref_labels)
    assert pos.dtype == neg.dtype == torch.bool
    assert torch.equal(pos, matches.bool()) and torch.equal(neg, diffs.bool())


def test_known_masks_and_the_diagonal():
    labels = torch.tensor([0, 0, 1])
    pos, neg = pos_neg_masks(labels)
    assert pos.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    assert neg.tolist() == [[False, False, True], [False, False, True], [True, True, False]]
    # an equal copy is a separate reference: the diagonal is a positive pair (PML's rule)
    pos, _ = pos_neg_masks(labels, labels.clone())
    assert pos.diagonal().all()


@pytest.mark.parametrize("exclude_self", [None, True, False])
def test_row_blocks_equal_slices_of_the_full_masks(exclude_self):
    labels = random_labels(13, 4)
    full_pos, full_neg = pos_neg_masks(labels, exclude_self=exclude_self)
    for rows in [slice(0, 5), slice(5, 6), slice(6, 13)]:
        pos, neg = pos_neg_masks(labels, rows=rows, exclude_self=exclude_self)
        assert torch.equal(pos, full_pos[rows]) and torch.equal(neg, full_neg[rows])
    if exclude_self is False:
        assert full_pos.diagonal().all()
    else:
        assert not full_pos.diagonal().any()


def test_exclude_self_override_with_a_separate_reference():
    labels = torch.tensor([0, 1, 1])
    ref = labels.clone()
    pos, neg = pos_neg_masks(labels, ref, exclude_self=True)
    assert not pos.diagonal().any() and not neg.diagonal().any()
    pos, _ = pos_neg_masks(labels, ref, rows=slice(1, 3), exclude_self=True)
    assert pos.tolist() == [[False, False, True], [False, True, False]]
