"""ProxyAnchorLoss: each class proxy is an anchor pulling its samples in, pushing others out."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.validation import check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer, DivisorReducer
from .base_metric_loss_function import BaseMetricLossFunction
from .mixins import WeightRegularizerMixin
from .proxy_utils import (
    check_proxy_inputs,
    check_weight_arguments,
    weights_for,
)


class ProxyAnchorLoss(WeightRegularizerMixin, BaseMetricLossFunction):
    """Proxy-Anchor loss (PML's ``ProxyAnchorLoss``).

    Kim, Kim, Cho and Kwak, "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020. With
    ``s(x, p)`` the similarity of an embedding to a proxy (cosine by default), ``P+`` the
    proxies of classes present in the batch, ``X+_p`` the samples of proxy ``p``'s class and
    ``X-_p`` the others::

        pos_loss = 1/|P+| * sum_{p in P+} log(1 + sum_{x in X+_p} exp(-alpha (s(x, p) - margin)))
        neg_loss = 1/C    * sum_p         log(1 + sum_{x in X-_p} exp( alpha (s(x, p) + margin)))

    and the loss is their sum. A miner's ``indices_tuple`` adds ``w_x - 1`` to each
    exponent, ``w_x`` being how often the tuple lists ``x`` over the largest count (as PML).
    For a distance (not inverted) the signs flip via ``distance.margin``, as in PML.

    Same arguments, defaults, parameter name (``proxies``, initialised with
    ``kaiming_normal_(mode="fan_out")``), values and gradients as PML. Half-precision inputs
    are compared with the proxies in float32 (alpha = 32 would magnify bf16 rounding of the
    similarities) and the loss comes back in the input dtype. Deviation: the proxies keep
    their dtype (PML casts them in place to the embeddings' dtype, so one bf16 batch rounds
    them for good); as in PML they follow the embeddings' device.

    Args:
        num_classes: number of classes (labels must lie in ``[0, num_classes)``).
        embedding_size: width of the embeddings.
        margin: the margin ``delta`` of the paper.
        alpha: the scale ``alpha`` of the paper.
        weight_init_func: initialiser of ``proxies``.
        weight_regularizer: optional regularizer on ``proxies``; weight_reg_weight its weight.
        distance: CosineSimilarity by default.
        reducer: DivisorReducer by default (the divisors above).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.proxy_anchor_loss import ProxyAnchorLoss
        >>> loss_fn = ProxyAnchorLoss(num_classes=4, embedding_size=16, margin=0.1, alpha=32)
        >>> loss_optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.01)
        >>> loss = loss_fn(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        >>> loss.backward()
        >>> loss_optimizer.step()
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.1,
        alpha: float = 32,
        weight_init_func=None,
        weight_regularizer=None,
        weight_reg_weight: float = 1,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("num_classes", num_classes, low=1, integer=True)
        check_number("embedding_size", embedding_size, low=1, integer=True)
        check_number("margin", margin)
        check_number("alpha", alpha)
        check_weight_arguments(weight_init_func, weight_regularizer, weight_reg_weight)
        super().__init__(
            weight_init_func=weight_init_func,
            weight_regularizer=weight_regularizer,
            weight_reg_weight=weight_reg_weight,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.proxies = torch.nn.Parameter(torch.empty(num_classes, embedding_size))
        self.weight_init_func(self.proxies)
        self.num_classes = num_classes
        self.embedding_size = embedding_size
        self.margin = margin
        self.alpha = alpha
        self.add_to_recordable_attributes(
            list_of_names=["num_classes", "embedding_size", "alpha", "margin"], is_stat=False
        )

    def cast_types(self, dtype, device):
        """Move and cast ``proxies`` in place (PML's method; forward only moves the device)."""
        self.proxies.data = c_f.to_device(self.proxies.data, device=device, dtype=dtype)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        labels = check_proxy_inputs(self, self.proxies, embeddings, labels, ref_emb, ref_labels)
        acc = c_f.accumulation_dtype(embeddings.dtype)
        miner_weights = lmu.convert_to_weights(indices_tuple, labels, dtype=acc).unsqueeze(1) - 1

        sim = self._similarities(embeddings, acc)
        pos_mask = labels.unsqueeze(1) == torch.arange(self.num_classes, device=labels.device)
        pos_exp = self.distance.margin(sim, self.margin)
        neg_exp = self.distance.margin(-self.margin, sim)
        # Column-wise (over the batch, one value per proxy), with a 0 joining each column.
        pos_term = lmu.logsumexp(self.alpha * pos_exp + miner_weights, pos_mask, True, dim=0)
        neg_term = lmu.logsumexp(self.alpha * neg_exp + miner_weights, ~pos_mask, True, dim=0)

        num_pos_proxies = int(torch.bincount(labels, minlength=self.num_classes).count_nonzero())
        indices = torch.arange(self.num_classes, device=embeddings.device)
        loss_dict = {
            "pos_loss": {
                "losses": pos_term.squeeze(0).to(embeddings.dtype),
                "indices": indices,
                "reduction_type": "element",
                "divisor": num_pos_proxies,
            },
            "neg_loss": {
                "losses": neg_term.squeeze(0).to(embeddings.dtype),
                "indices": indices,
                "reduction_type": "element",
                "divisor": self.num_classes,
            },
        }
        self.add_weight_regularization_to_loss_dict(loss_dict, self.proxies)
        return loss_dict

    def get_default_reducer(self) -> BaseReducer:
        return DivisorReducer()

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def get_default_weight_init_func(self):
        return c_f.TorchInitWrapper(torch.nn.init.kaiming_normal_, mode="fan_out")

    def _sub_loss_names(self):
        return ["pos_loss", "neg_loss"]

    def _similarities(self, embeddings, dtype):
        proxies = weights_for(self.proxies, embeddings, dtype)
        return self.distance(embeddings.to(dtype), proxies)

    def get_logits(self, embeddings):
        """The embeddings-by-proxies similarity matrix, in the embeddings' dtype."""
        acc = c_f.accumulation_dtype(embeddings.dtype)
        return self._similarities(embeddings, acc).to(embeddings.dtype)
