"""ProxyNCALoss: NCA against one learnable proxy per class instead of the other samples."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.validation import check_number
from ..distances import BaseDistance
from ..reducers import BaseReducer
from .mixins import WeightRegularizerMixin
from .nca_loss import NCALoss
from .proxy_utils import (
    check_proxy_inputs,
    check_weight_arguments,
    weights_for,
)


class ProxyNCALoss(WeightRegularizerMixin, NCALoss):
    """Proxy-NCA loss (PML's ``ProxyNCALoss``).

    Movshovitz-Attias, Toshev, Leung, Ioffe and Singh, "No Fuss Distance Metric Learning
    using Proxies", ICCV 2017. The NCA loss of :class:`~metricssl.losses.nca_loss.NCALoss`
    with the learnable ``proxies`` (``num_classes x embedding_size``, one per class) as the
    reference set: each embedding should pick its own class's proxy in a softmax over all
    proxies. Train the proxies with the model's optimizer or a separate one, as in PML::

        loss_optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.01)

    Same arguments, defaults, parameter name (``proxies``), values and gradients as PML.
    Since each embedding's only same-class reference is its class's proxy, the NCA term is
    computed as a cross-entropy over the scaled similarities (one fused log-softmax, exact
    even where PML's probability underflows and PML drops the embedding). Half-precision
    inputs are compared with the proxies in float32; the loss comes back in the input dtype.
    Deviation: PML casts ``proxies`` in place to the embeddings' dtype on
    every call (so one bf16 batch rounds them to bf16 for good); here the proxies keep their
    dtype and a cast copy is used, so their gradient arrives in their own dtype. As in PML
    they are moved to the embeddings' device when needed.

    Args:
        num_classes: number of classes (labels must lie in ``[0, num_classes)``).
        embedding_size: width of the embeddings.
        softmax_scale: multiplies the similarities before the softmax (> 0).
        weight_init_func: initialiser of ``proxies`` (``torch.nn.init.normal_`` by default).
        weight_regularizer: optional regularizer on ``proxies``; weight_reg_weight its weight.
        distance: LpDistance(power=2) by default.
        reducer: MeanReducer by default (over the batch).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.proxy_losses import ProxyNCALoss
        >>> loss_fn = ProxyNCALoss(num_classes=4, embedding_size=16)
        >>> loss = loss_fn(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        >>> loss.backward()  # gradients reach loss_fn.proxies too
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        softmax_scale: float = 1,
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
        check_weight_arguments(weight_init_func, weight_regularizer, weight_reg_weight)
        super().__init__(
            softmax_scale=softmax_scale,
            weight_init_func=weight_init_func,
            weight_regularizer=weight_regularizer,
            weight_reg_weight=weight_reg_weight,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.num_classes = num_classes
        self.embedding_size = embedding_size
        self.proxies = torch.nn.Parameter(torch.empty(num_classes, embedding_size))
        self.weight_init_func(self.proxies)
        self.proxy_labels = torch.arange(num_classes)
        self.add_to_recordable_attributes(
            list_of_names=["num_classes", "embedding_size"], is_stat=False
        )

    def cast_types(self, dtype, device):
        """Move and cast ``proxies`` in place (PML's method; forward only moves the device)."""
        self.proxies.data = c_f.to_device(self.proxies.data, device=device, dtype=dtype)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        labels = check_proxy_inputs(self, self.proxies, embeddings, labels, ref_emb, ref_labels)
        # Float32 at least: the proxies are float32 parameters even for half inputs.
        acc = c_f.accumulation_dtype(embeddings.dtype)
        # Every embedding has exactly one same-class reference, its class's proxy: the NCA
        # term is then the cross-entropy of the scaled similarities to the proxies.
        mat = self.distance(embeddings.to(acc), weights_for(self.proxies, embeddings, acc))
        scale = self.softmax_scale if self.distance.is_inverted else -self.softmax_scale
        losses = F.cross_entropy(mat * scale, labels, reduction="none")
        if indices_tuple is not None:  # without one every weight is 1
            losses = losses * lmu.convert_to_weights(
                indices_tuple, labels, dtype=acc, using_ref=True
            )
        if len(embeddings) == 0:
            # PML's answer for an empty batch: the mean of no per-sample losses, NaN (NCALoss,
            # whose queries may all lack positives, gives 0 instead, and so does its fused path).
            indices = c_f.torch_arange_from_size(embeddings)
            entry = {"losses": losses.to(embeddings.dtype), "indices": indices}
            loss_dict = {"loss": {**entry, "reduction_type": "element"}}
        else:
            loss_dict = self.row_loss_dict(losses, None, embeddings)
        self.add_weight_regularization_to_loss_dict(loss_dict, self.proxies)
        return loss_dict

    def get_logits(self, embeddings):
        """The embeddings-by-proxies distance (or similarity) matrix."""
        acc = c_f.accumulation_dtype(embeddings.dtype)
        proxies = weights_for(self.proxies, embeddings, acc)
        return self.distance(embeddings.to(acc), proxies).to(embeddings.dtype)
