"""P2SGradLoss: mean squared error between cosines to unit class weights and one-hot targets."""

from __future__ import annotations

import torch

from ..core.validation import ArgumentError
from ..distances import BaseDistance
from ..reducers import BaseReducer
from .classification_loss import BaseClassificationLoss


class P2SGradLoss(BaseClassificationLoss):
    """P2SGrad loss (PML's ``P2SGradLoss``).

    Zhang, Zhao, Liu, Yan, Qiao, Wang and Li, "P2SGrad: Refined Gradients for Optimizing Deep
    Face Models", CVPR 2019. The paper's gradient (its equation 11) is that of a mean squared
    error between the cosines ``cos(theta_ij)`` of embedding ``i`` to class column ``j`` and
    the one-hot targets::

        loss = mean_{i, j} (cos(theta_ij) - [j == y_i])^2

    over all ``batch x num_classes`` entries; the loss is already reduced (the reducer passes
    it through). Before every call the columns of ``weight`` are projected back to unit
    length in place, as in PML. With many classes (more than 8x the embedding width) it is
    computed as ``(sum cos^2 - 2 sum cos_target + N) / (N num_classes)``, without a one-hot
    matrix.

    Args:
        descriptors_dim: width of the embeddings; ``weight`` is ``(descriptors_dim,
            num_classes)``, drawn uniform in [-1, 1] then normalised per column (PML's
            initialisation, with the same random draws).
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        distance: unused (PML accepts it too); reducer, embedding_regularizer,
            embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.p2s_grad_loss import P2SGradLoss
        >>> loss_fn = P2SGradLoss(descriptors_dim=32, num_classes=10)
        >>> loss_optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.1)
        >>> loss = loss_fn(torch.randn(16, 32), torch.randint(0, 10, (16,)))
        >>> loss.backward(); loss_optimizer.step()
    """

    weight_attribute = "weight"

    def __init__(
        self,
        descriptors_dim: int,
        num_classes: int,
        *,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        super().__init__(
            num_classes=num_classes,
            embedding_size=descriptors_dim,
            embedding_size_name="descriptors_dim",
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.descriptors_dim = self.embedding_size
        self.weight = torch.nn.Parameter(torch.empty(self.descriptors_dim, self.num_classes))
        with torch.no_grad():
            self.weight.uniform_(-1, 1)
            self._project_columns()

    def _project_columns(self) -> None:
        # renorm caps each column's norm at 1e-5; scaling back by 1e5 gives unit columns.
        self.weight.data.renorm_(2, 1, 1e-5).mul_(1e5)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        labels = self.check_classification_inputs(embeddings, labels, ref_emb, ref_labels)
        if indices_tuple is not None:
            raise ArgumentError(f"{type(self).__name__} does not support indices_tuple")
        with torch.no_grad():
            self._project_columns()
        x = embeddings.to(self.compute_dtype(embeddings))
        weights = self.weights_like(x)
        norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        if weights.shape[1] > weights.shape[0]:
            # Normalise whichever of (N, D) and (N, C) is smaller: with many classes, x first.
            cosine = ((x / norms) @ weights).clamp(-1, 1)
        else:
            cosine = ((x @ weights) / norms).clamp(-1, 1)
        if self.targets_from_columns():
            # Many classes: no (N, C) one-hot matrix, and no dense gather backward.
            target = (x * torch.index_select(weights, 1, labels).t()).sum(dim=1)
            target = (target / norms.squeeze(1)).clamp(-1, 1)
            n = cosine.shape[0]
            loss = (cosine.square().sum() - 2 * target.sum() + n) / cosine.numel()
        else:
            # Few classes: the fused mse_loss has the cheapest backward (0.04 ms of 0.4 at N=256).
            with torch.no_grad():
                one_hot = torch.zeros_like(cosine).scatter_(1, labels.unsqueeze(1), 1)
            loss = torch.nn.functional.mse_loss(cosine, one_hot)
        return {
            "loss": {
                "losses": loss.to(embeddings.dtype),
                "indices": None,
                "reduction_type": "already_reduced",
            }
        }
