"""MultipleLosses: a weighted sum of several losses, each with its own optional miner."""

from __future__ import annotations

import numbers

import torch

from ..core.validation import ArgumentError


def _check_weight(key, weight) -> None:
    ok = isinstance(weight, numbers.Real) and not isinstance(weight, bool)
    ok = ok or (torch.is_tensor(weight) and weight.numel() == 1)
    if not ok:
        raise TypeError(f"weights[{key!r}] must be a number, got {weight!r}")


class MultipleLosses(torch.nn.Module):
    """``sum_i weights[i] * losses[i](embeddings, labels, indices_tuple_i)`` (PML's class).

    ``losses`` is a list or a dict of losses. ``miners``, when given, has the same form: in
    list form one entry per loss (``None`` where a loss takes no miner), in dict form a
    subset of the loss keys. A loss with a miner gets that miner's tuple; the others get the
    ``indices_tuple`` passed to :meth:`forward` (which must then be None if any miner is
    set). ``weights`` has the same form with an entry for every loss (all 1 by default).

    Combining losses this way is common practice in metric learning, e.g. Musgrave, Belongie
    and Lim, "A Metric Learning Reality Check", ECCV 2020, which introduced PML's interface.

    Args:
        losses: a non-empty list or dict of loss modules.
        miners: an optional list or dict of miners, as described above.
        weights: an optional list or dict of numbers, as described above.

    Example:
        >>> import torch
        >>> from metricssl.losses.multiple_losses import MultipleLosses
        >>> from metricssl.losses.ntxent_loss import NTXentLoss
        >>> from metricssl.losses.supcon_loss import SupConLoss
        >>> loss_fn = MultipleLosses({"nt": NTXentLoss(), "sc": SupConLoss()}, weights={"nt": 1, "sc": 0.5})
        >>> loss = loss_fn(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    """

    def __init__(self, losses, miners=None, weights=None):
        super().__init__()
        if not isinstance(losses, (dict, list, tuple)):
            raise TypeError(
                f"losses must be a list or a dict of losses, got {type(losses).__name__}"
            )
        if len(losses) == 0:
            raise ArgumentError("losses must not be empty")
        self.is_dict = isinstance(losses, dict)
        values = losses.values() if self.is_dict else losses
        for loss in values:
            if not isinstance(loss, torch.nn.Module):
                raise TypeError(f"every loss must be a torch.nn.Module, got {type(loss).__name__}")
        self.losses = torch.nn.ModuleDict(losses) if self.is_dict else torch.nn.ModuleList(losses)

        if miners is not None:
            self._check_same_form("miners", miners, all_keys=False)
            entries = miners.values() if self.is_dict else miners
            for miner in entries:
                if miner is not None and not isinstance(miner, torch.nn.Module):
                    raise TypeError(
                        f"every miner must be a torch.nn.Module or None, got {type(miner).__name__}"
                    )
            self.miners = (
                torch.nn.ModuleDict(miners) if self.is_dict else torch.nn.ModuleList(miners)
            )
        else:
            self.miners = None

        if weights is not None:
            self._check_same_form("weights", weights, all_keys=True)
            items = weights.items() if self.is_dict else enumerate(weights)
            for key, weight in items:
                _check_weight(key, weight)
            self.weights = dict(weights) if self.is_dict else list(weights)
        else:
            self.weights = {k: 1 for k in self.losses.keys()} if self.is_dict else [1] * len(losses)

    def _check_same_form(self, name, x, all_keys: bool) -> None:
        if self.is_dict:
            if not isinstance(x, dict):
                raise TypeError(f"{name} must be a dict, like losses")
            keys, loss_keys = set(x), set(self.losses.keys())
            if all_keys and keys != loss_keys:
                raise ArgumentError(
                    f"{name} must have exactly the keys of losses {sorted(loss_keys)}"
                )
            if not keys <= loss_keys:
                raise ArgumentError(
                    f"{name} has keys {sorted(keys - loss_keys)} that are not in losses"
                )
        else:
            if not isinstance(x, (list, tuple)):
                raise TypeError(f"{name} must be a list, like losses")
            if len(x) != len(self.losses):
                raise ArgumentError(
                    f"{name} has {len(x)} entries but there are {len(self.losses)} losses"
                )

    def forward(self, embeddings, labels, indices_tuple=None):
        if self.miners and indices_tuple is not None:
            raise ArgumentError("indices_tuple cannot be given when MultipleLosses has miners")
        total_loss = 0
        items = self.losses.items() if self.is_dict else enumerate(self.losses)
        for key, loss_func in items:
            curr_indices_tuple = self.get_indices_tuple(key, embeddings, labels, indices_tuple)
            total_loss = (
                total_loss + loss_func(embeddings, labels, curr_indices_tuple) * self.weights[key]
            )
        return total_loss

    def get_indices_tuple(self, key, embeddings, labels, indices_tuple):
        """The miner's tuple for loss ``key`` if it has a miner, else ``indices_tuple``."""
        if self.miners:
            if self.is_dict:
                if key in self.miners:
                    return self.miners[key](embeddings, labels)
            elif self.miners[key] is not None:
                return self.miners[key](embeddings, labels)
        return indices_tuple
