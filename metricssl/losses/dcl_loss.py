"""DCLLoss and DCLWLoss: InfoNCE without the positive in the denominator (decoupled)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import common as c_f
from ..core.distributed import gather_with_grad, rank, world_size
from ..core.validation import check_bool, check_number
from ..reducers import BaseReducer
from .infonce import two_view_info_nce
from .two_view_loss import TwoViewLoss


class DCLLoss(TwoViewLoss):
    """Decoupled contrastive loss on two views (SimCLR's NT-Xent without the positive in the
    denominator).

    Yeh, Hong, Hsu, Liu, Chen and LeCun, "Decoupled Contrastive Learning", ECCV 2022. Row ``i``
    of ``z1`` and of ``z2`` are two views of one input; every one of the 2N rows is an anchor,
    its positive the other view of the same input and its negatives the 2(N - 1) rows of the
    other inputs (both views). On cosine similarities ``s`` at temperature ``T``::

        loss(z1_i) = -w_i s(z1_i, z2_i) / T + log( sum_{k != i} sum_{v=1,2} exp(s(z1_i, zv_k) / T) )

    (and the same with the views swapped), averaged over the 2N anchors, with ``w_i = 1``. The
    NT-Xent denominator also holds ``exp(s_ii / T)``; dropping it removes the
    "negative-positive coupling" that makes NT-Xent need large batches. Computed by
    :func:`~metricssl.losses.infonce.two_view_info_nce` (``decoupled=True``): float32 for
    half-precision inputs and under autocast, the loss back in the input dtype.

    Unlike NT-Xent the value can be negative (the positive is not in the denominator).

    Call it as ``loss(z1, z2)`` or ``loss(z1, ref_emb=z2)``; the batch must hold at least two
    inputs (an input needs negatives). The value is one number: an ``already_reduced`` entry,
    so the reducer does not change it.

    Distributed training: with ``gather_distributed=True`` and an initialised process group,
    the rows of every rank are negatives (gathered with gradient); each rank returns the mean
    over its own anchors, and DDP's averaged gradients equal one process's gradient on the
    global batch. Every rank must hold the same number of rows.

    Args:
        temperature: ``T`` > 0 (0.1 in the paper's reference code).
        gather_distributed: contrast with the rows of every rank (see above).
        reducer, embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses import DCLLoss
        >>> z1, z2 = torch.randn(16, 32), torch.randn(16, 32)
        >>> loss = DCLLoss(temperature=0.1)(z1, z2)
    """

    def __init__(
        self,
        temperature: float = 0.1,
        gather_distributed: bool = False,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("temperature", temperature, low=0, low_inclusive=False)
        check_bool("gather_distributed", gather_distributed)
        super().__init__(
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.temperature = temperature
        self.gather_distributed = gather_distributed
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

    def positive_weight(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor | None:
        """The weight ``w_i`` of each input's positive term (N,); None: 1 (DCL)."""
        return None

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        n = embeddings.shape[0]
        if n < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 inputs per batch (an input's "
                f"negatives are the other inputs), got {n}"
            )
        with torch.autocast(embeddings.device.type, enabled=False):
            acc = c_f.accumulation_dtype(embeddings.dtype)
            z1 = F.normalize(embeddings.to(acc), dim=1)
            z2 = F.normalize(ref_emb.to(acc), dim=1)
            loss = two_view_info_nce(
                z1,
                z2,
                temperature=self.temperature,
                gather=self.gather_distributed,
                normalize=False,
                decoupled=True,
                positive_weight=self.positive_weight(z1, z2),
            )
        return {
            "loss": {
                "losses": loss.to(embeddings.dtype),
                "indices": None,
                "reduction_type": "already_reduced",
            }
        }


class DCLWLoss(DCLLoss):
    """DCL with the positives weighted by a negative von Mises-Fisher weighting (DCLW).

    Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, section 3.2: the positive term of
    input ``i`` is scaled by::

        w_i = 2 - exp(s_i / sigma) / mean_j exp(s_j / sigma) = 2 - N * softmax_j(s_j / sigma)_i

    with ``s_i`` the cosine similarity of its two views over the N inputs of the batch (the
    global batch with ``gather_distributed``): pairs that are already close weigh less, hard
    positives more; the weights average 1. As in the reference code the gradient also flows
    through the weights. Everything else is :class:`DCLLoss`.

    Args:
        sigma: the weighting's concentration ``sigma`` > 0 (0.5 in the paper).
        temperature, gather_distributed, reducer, embedding_regularizer,
        embedding_reg_weight, collect_stats: as in :class:`DCLLoss`.

    Example:
        >>> import torch
        >>> from metricssl.losses import DCLWLoss
        >>> z1, z2 = torch.randn(16, 32), torch.randn(16, 32)
        >>> loss = DCLWLoss(temperature=0.1, sigma=0.5)(z1, z2)
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sigma: float = 0.5,
        gather_distributed: bool = False,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("sigma", sigma, low=0, low_inclusive=False)
        super().__init__(
            temperature=temperature,
            gather_distributed=gather_distributed,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.sigma = sigma
        self.add_to_recordable_attributes(list_of_names=["sigma"], is_stat=False)

    def positive_weight(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        similarity = (z1 * z2).sum(dim=1) / self.sigma
        n = similarity.shape[0]
        if not self.gather_distributed or world_size() == 1:
            return 2 - n * torch.softmax(similarity, dim=0)
        everyone = gather_with_grad(similarity)
        if everyone.shape[0] != world_size() * n:
            raise ValueError(
                f"{type(self).__name__}(gather_distributed=True) needs the same batch size on "
                f"every rank (this rank has {n}, all ranks together {everyone.shape[0]})"
            )
        weights = 2 - everyone.shape[0] * torch.softmax(everyone, dim=0)
        return weights[rank() * n : (rank() + 1) * n]


__all__ = ["DCLLoss", "DCLWLoss"]
