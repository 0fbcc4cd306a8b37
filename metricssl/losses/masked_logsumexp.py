"""Row-wise log-sum-exp over the kept entries of a matrix, one ``exp`` per entry.

Same values and gradients as ``loss_and_miner_utils.logsumexp`` (PML's helper): rows with
nothing kept give 0, and ``add_one`` adds a 0 logit to every row. It is about twice as fast:
no (rows x cols+1) concatenation, and the backward pass reuses the forward ``exp`` instead
of recomputing it, as ``torch.logsumexp`` does.
"""

from __future__ import annotations

import torch


def masked_logsumexp(x: torch.Tensor, keep: torch.Tensor, add_one: bool = False) -> torch.Tensor:
    """``log(sum_{j kept} exp(x_ij) [+ 1])`` per row, shape (rows, 1); 0 for empty rows."""
    x = x.masked_fill(~keep, float("-inf"))
    # The shift is a constant for autograd; the result does not depend on it.
    shift = x.detach().amax(dim=1, keepdim=True)
    if add_one:
        shift = shift.clamp(min=0)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    total = torch.exp(x - shift).sum(dim=1, keepdim=True)
    if add_one:
        total = total + torch.exp(-shift)
    # Empty rows (total 0, only without add_one) give 0, with no NaN in the gradient.
    return shift + torch.log(torch.where(total > 0, total, torch.ones_like(total)))
