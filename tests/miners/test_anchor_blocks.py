"""anchor_blocks: padded positive columns for block-wise triplet miners."""

import torch

from metricssl.miners.anchor_blocks import empty_indices, padded_columns


def test_padded_columns_lists_each_rows_true_columns_in_order():
    mask = torch.tensor(
        [[False, True, False, True], [False, False, False, False], [True, True, True, False]]
    )
    cols, valid = padded_columns(mask)
    assert cols.shape == valid.shape == (3, 3) and cols.dtype == torch.long
    assert valid.tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    assert cols[valid].tolist() == [1, 3, 0, 1, 2]
    assert torch.equal(mask.gather(1, cols) & valid, valid)


def test_padded_columns_of_an_empty_mask():
    cols, valid = padded_columns(torch.zeros(2, 5, dtype=torch.bool))
    assert cols.shape == (2, 0) and valid.shape == (2, 0)
    cols, valid = padded_columns(torch.zeros(0, 5, dtype=torch.bool))
    assert cols.shape == (0, 0)


def test_empty_indices():
    out = empty_indices(torch.device("cpu"), 4)
    assert len(out) == 4 and all(t.dtype == torch.long and t.numel() == 0 for t in out)
