"""NormalizedSoftmaxLoss: softmax over similarities to normalised class weights / temperature."""

from __future__ import annotations

from ..distances import BaseDistance, CosineSimilarity, DotProductSimilarity
from ..reducers import BaseReducer
from .classification_loss import SoftmaxClassificationLoss, check_finite_number


class NormalizedSoftmaxLoss(SoftmaxClassificationLoss):
    """Normalized softmax loss (PML's ``NormalizedSoftmaxLoss``).

    Wang, Xiang, Cheng and Yuille, "NormFace: L2 Hypersphere Embedding for Face
    Verification", ACM Multimedia 2017; used for retrieval by Zhai and Wu, "Classification is
    a Strong Baseline for Deep Metric Learning", BMVC 2019. The class columns of ``W`` are
    normalised; the logits are ``s(x, W_j) / temperature`` for the distance's similarity
    ``s`` (cosine by default: DotProductSimilarity normalises the embeddings too), or
    ``-d(x, W_j) / temperature`` for a distance; the loss is the cross-entropy.

    Args:
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        embedding_size: width of the embeddings; ``W`` is ``(embedding_size, num_classes)``.
        temperature: divides the logits (> 0).
        weight_init_func: initialises ``W`` in place (``torch.nn.init.normal_`` by default).
        weight_regularizer: an optional regularizer applied to ``W.t()``.
        weight_reg_weight: its weight.
        distance: DotProductSimilarity by default; any distance works.
        reducer: MeanReducer by default (over samples).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.normalized_softmax_loss import NormalizedSoftmaxLoss
        >>> loss_fn = NormalizedSoftmaxLoss(num_classes=10, embedding_size=32, temperature=0.05)
        >>> loss_optimizer = torch.optim.Adam(loss_fn.parameters(), lr=1e-3)
        >>> loss = loss_fn(torch.randn(16, 32), torch.randint(0, 10, (16,)))
        >>> loss.backward(); loss_optimizer.step()
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        temperature: float = 0.05,
        *,
        weight_init_func=None,
        weight_regularizer=None,
        weight_reg_weight: float = 1,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_finite_number("temperature", temperature, low=0, low_inclusive=False)
        super().__init__(
            num_classes=num_classes,
            embedding_size=embedding_size,
            weight_init_func=weight_init_func,
            weight_regularizer=weight_regularizer,
            weight_reg_weight=weight_reg_weight,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.temperature = temperature
        self.add_to_recordable_attributes(
            list_of_names=["embedding_size", "num_classes", "temperature"], is_stat=False
        )

    def compute_logits(self, x):
        weights = self.distance.normalize(self.weights_like(x), dim=0)
        if type(self.distance) in (DotProductSimilarity, CosineSimilarity) and (
            self.distance.power == 1
        ):
            # An inner product: 1 / temperature goes into the (C, D) operand, not over (N, C).
            return self.distance.maybe_normalize(x) @ (weights / self.temperature)
        logits = self.distance(x, weights.t()) / self.temperature
        return logits if self.distance.is_inverted else -logits

    def get_default_distance(self) -> BaseDistance:
        return DotProductSimilarity()
