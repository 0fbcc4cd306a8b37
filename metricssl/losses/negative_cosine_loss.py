"""NegativeCosineSimilarityLoss: -cos(prediction, stop-gradient(target)), for BYOL and SimSiam."""

from __future__ import annotations

import torch.nn.functional as F

from ..core import common as c_f
from ..core.validation import check_bool, check_number
from ..reducers import BaseReducer
from .two_view_loss import TwoViewLoss


class NegativeCosineSimilarityLoss(TwoViewLoss):
    """Negative cosine similarity between predictions and (stop-gradient) targets.

    SimSiam: Chen and He, "Exploring Simple Siamese Representation Learning", CVPR 2021,
    ``D(p, z) = -cos(p, stopgrad(z))``. BYOL: Grill et al., "Bootstrap Your Own Latent: A New
    Approach to Self-Supervised Learning", NeurIPS 2020, minimises
    ``||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)``, i.e. ``2 + 2 * this loss``: same gradients up
    to a factor 2.

    ``loss(p, z)``: row ``i`` of ``p`` (predictor output of one view) is compared with row
    ``i`` of ``z`` (projection, or momentum-encoder projection, of the other view). Each row
    gives one element ``-cos(p_i, z_i)``; the reducer (MeanReducer by default) averages them,
    so the value lies in [-1, 1]. With ``stop_gradient=True`` (the default) no gradient flows
    into ``z``. Both methods use it symmetrically, one call per direction::

        loss = 0.5 * (loss_fn(p1, z2) + loss_fn(p2, z1))

    Cosines are computed in float32 for half-precision inputs; ``eps`` bounds the norms from
    below, so a zero vector gives a cosine of 0 rather than NaN.

    Args:
        stop_gradient: detach the targets ``z`` (SimSiam's stop-gradient; harmless for BYOL,
            whose targets come from the momentum encoder).
        eps: lower bound on the norms in the cosine.
        reducer, embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.negative_cosine_loss import NegativeCosineSimilarityLoss
        >>> loss_fn = NegativeCosineSimilarityLoss()
        >>> p1, p2, z1, z2 = (torch.randn(8, 32) for _ in range(4))
        >>> loss = 0.5 * (loss_fn(p1, z2) + loss_fn(p2, z1))
    """

    def __init__(
        self,
        stop_gradient: bool = True,
        eps: float = 1e-8,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_bool("stop_gradient", stop_gradient)
        check_number("eps", eps, low=0, low_inclusive=False)
        super().__init__(
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.stop_gradient = stop_gradient
        self.eps = eps

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        acc = c_f.accumulation_dtype(embeddings.dtype)
        target = ref_emb.detach() if self.stop_gradient else ref_emb
        cos = F.cosine_similarity(embeddings.to(acc), target.to(acc), dim=1, eps=self.eps)
        return {
            "loss": {
                "losses": (-cos).to(embeddings.dtype),
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }
