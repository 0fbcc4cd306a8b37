"""k-nearest-neighbour classification of queries from labelled references, one chunk at a time.

- **Weighted vote** (the self-supervised learning protocol of Wu, Xiong, Yu and Lin,
  "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018, used
  by DINO and others): features are L2-normalised, the k most cosine-similar references vote
  for their class with weight ``exp(similarity / temperature)``; the class with the largest
  total wins.
- **Majority vote**: each of the k neighbours counts once.

Ties between classes go to the smallest class (as ``sklearn``'s ``KNeighborsClassifier``).
Votes are tallied by sorting each query's k neighbour classes, so the cost is O(k log k) per
query whatever the number of classes.
"""

from __future__ import annotations

import torch


def knn_vote(
    neighbor_codes: torch.Tensor, similarities: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """The winning class code of each row.

    Args:
        neighbor_codes: (rows, k) int64 class codes of the neighbours.
        similarities: (rows, k) cosine similarities for the weighted vote, or None for a
            majority vote.
        temperature: the weighted vote's temperature.

    Returns:
        (rows,) int64 predicted class codes.
    """
    if similarities is None:
        weights = torch.ones(
            neighbor_codes.shape, dtype=torch.float64, device=neighbor_codes.device
        )
    else:
        # Subtracting each row's maximum leaves the winner unchanged and avoids overflow.
        s = similarities.to(torch.float64)
        weights = torch.exp((s - s.max(dim=1, keepdim=True).values) / temperature)
    codes, order = torch.sort(neighbor_codes, dim=1)
    totals = weights.gather(1, order).cumsum(dim=1)
    # A run of equal codes ends where the next code differs (or at the last column); its vote
    # is the cumulative total at its end minus the total at the previous run's end.
    is_end = torch.ones_like(codes, dtype=torch.bool)
    is_end[:, :-1] = codes[:, 1:] != codes[:, :-1]
    end_totals = torch.where(is_end, totals, 0.0)
    previous = torch.zeros_like(totals)
    previous[:, 1:] = end_totals[:, :-1].cummax(dim=1).values
    votes = torch.where(is_end, totals - previous, float("-inf"))
    # Among equal votes argmax picks the first run, i.e. the smallest class code.
    winner = votes.argmax(dim=1, keepdim=True)
    return codes.gather(1, winner).squeeze(1)
