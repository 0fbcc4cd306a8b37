"""Input conversion and label codes."""

import numpy as np
import pytest
import torch

from metricssl.eval.inputs import as_embeddings, as_labels, check_finite, label_codes

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "q, r",
    [
        (torch.tensor([5, 3, 5, 9]), torch.tensor([9, 9, 1])),  # dense integer path
        (torch.tensor([5, 3, 5, 10**12]), torch.tensor([10**12, 1, 3])),  # sparse ids
        (torch.tensor([0.5, -1.0, 0.5]), torch.tensor([2.0, -1.0])),  # float labels
    ],
)
def test_label_codes_follow_sorted_label_order(q, r):
    qc, rc, n = label_codes(q, r, same=False)
    both = torch.cat([q, r])
    uniq = torch.unique(both)
    assert n == len(uniq)
    assert torch.equal(uniq[qc], q) and torch.equal(uniq[rc], r)


def test_label_codes_multidimensional():
    q = torch.tensor([[1, 2], [0, 5], [1, 2]])
    qc, rc, n = label_codes(q, q, same=True)
    assert n == 2 and qc.tolist() == [1, 0, 1] and rc is qc


def test_embeddings_conversion_and_checks():
    x = as_embeddings(np.arange(6, dtype=np.uint8).reshape(3, 2), "x", CPU)
    assert x.dtype == torch.float32 and x.tolist() == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(TypeError, match="x must be"):
        as_embeddings([[1.0]], "x", CPU)
    with pytest.raises(TypeError, match="real numbers"):
        as_embeddings(torch.ones(2, 2, dtype=torch.bool), "x", CPU)
    big = torch.full((2, 2), 3e38)  # row sums overflow, values are finite: accepted
    check_finite(big, "big")
    with pytest.raises(ValueError, match="labels must have shape"):
        as_labels(torch.zeros(2, 2, 2), 2, "labels", "x", CPU)
    with pytest.raises(ValueError, match="NaN"):
        as_labels(torch.tensor([0.0, float("nan")]), 2, "labels", "x", CPU)
    with pytest.raises(ValueError, match="label dimensions differ"):
        label_codes(torch.zeros(2, 2), torch.zeros(2), same=False)
