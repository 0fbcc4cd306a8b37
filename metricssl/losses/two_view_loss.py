"""TwoViewLoss: the base of losses defined on two views of one batch instead of on labels."""

from __future__ import annotations

import torch

from ..core.validation import ArgumentError, check_embeddings
from .base_metric_loss_function import BaseMetricLossFunction


class TwoViewLoss(BaseMetricLossFunction):
    """A loss on two aligned views ``(embeddings, ref_emb)``: row ``i`` of each is one input.

    The call is PML's: ``loss(embeddings, ref_emb=ref_emb)``. As a convenience the second view
    may also be passed positionally, ``loss(z1, z2)``: a 2D tensor in the ``labels`` slot is
    taken as ``ref_emb`` (labels are always 1D, so this is never ambiguous). Labels,
    ``ref_labels`` and an ``indices_tuple`` are rejected with a ``ValueError``, as PML does
    for VICRegLoss.

    Subclasses set ``ref_emb_required``: when False, a missing ``ref_emb`` means
    ``ref_emb = embeddings`` (PML's rule for every loss).
    """

    ref_emb_required = True

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        name = type(self).__name__
        if torch.is_tensor(labels) and labels.ndim == 2:
            if ref_emb is not None:
                raise ArgumentError(
                    f"{name}: the second view was given twice (positionally and as ref_emb)"
                )
            labels, ref_emb = None, labels
        if labels is not None or ref_labels is not None:
            raise ArgumentError(f"{name} takes two views (embeddings, ref_emb), not labels")
        if indices_tuple is not None:
            raise ArgumentError(f"{name} does not support an indices_tuple")
        if ref_emb is None:
            if self.ref_emb_required:
                raise ArgumentError(
                    f"{name} needs the second view: call loss(embeddings, ref_emb) where row i "
                    f"of both is a view of the same input"
                )
        else:
            check_embeddings(embeddings)
            check_embeddings(ref_emb, "ref_emb")
            if embeddings.shape != ref_emb.shape:
                raise ArgumentError(
                    f"{name}: embeddings and ref_emb must be two views of the same batch, with "
                    f"the same shape; got {tuple(embeddings.shape)} and {tuple(ref_emb.shape)}"
                )
            if embeddings.dtype != ref_emb.dtype:
                raise TypeError(
                    f"{name}: embeddings is {embeddings.dtype} but ref_emb is {ref_emb.dtype}"
                )
        return super().forward(embeddings, None, None, ref_emb, None)


def check_batch_statistics_size(n_rows: int, what: str) -> None:
    """Batch statistics (mean, variance) need at least two rows."""
    if n_rows < 2:
        raise ArgumentError(
            f"{what} computes statistics over the batch and needs at least 2 rows, got {n_rows}"
        )
