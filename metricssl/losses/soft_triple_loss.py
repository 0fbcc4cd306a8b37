"""SoftTripleLoss: a softmax loss over classes that each own several learnable centres."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.validation import ArgumentError, check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer
from .base_metric_loss_function import BaseMetricLossFunction
from .mixins import WeightRegularizerMixin
from .proxy_utils import (
    check_proxy_inputs,
    check_weight_arguments,
    weights_for,
)


class SoftTripleLoss(WeightRegularizerMixin, BaseMetricLossFunction):
    """SoftTriple loss (PML's ``SoftTripleLoss``).

    Qian, Shang, Sun, Hu, Li and Jin, "SoftTriple Loss: Deep Metric Learning Without Triplet
    Sampling", ICCV 2019. Every class has ``centers_per_class`` learnable centres, the
    columns of ``fc`` (``embedding_size x num_classes * centers_per_class``). The similarity
    of an embedding to a class is a softmax-weighted mean of its similarities to the class's
    centres (softmax scale ``1 / gamma``); the loss is the cross-entropy of those class
    similarities, scaled by ``la``, with ``margin`` subtracted from the true class::

        S_c(x) = sum_k softmax_k(s(x, w_ck) / gamma) * s(x, w_ck)
        loss(x) = cross_entropy(la * (S(x) - margin * onehot(y)), y)

    one value per embedding, weighted by how often a miner's ``indices_tuple`` lists it.
    The paper's regulariser that merges centres is not part of the loss (as in PML); a
    ``weight_regularizer`` is applied to ``fc.t()`` (one row per centre).

    Same arguments, defaults, parameter name (``fc``, initialised with
    ``kaiming_uniform_(a=sqrt(5))``), values and gradients as PML. As in PML the attribute
    ``gamma`` holds the inverse ``1 / gamma`` of the argument. Half-precision inputs are
    compared with the centres in float32 and the loss comes back in the input dtype.
    Deviation: ``fc`` keeps its dtype (PML casts it in place to the embeddings' dtype, so
    one bf16 batch rounds it for good); as in PML it follows the embeddings' device.

    Args:
        num_classes: number of classes (labels must lie in ``[0, num_classes)``).
        embedding_size: width of the embeddings.
        centers_per_class: centres per class (``K`` in the paper).
        la: the scale ``lambda`` of the paper.
        gamma: the temperature ``gamma`` of the softmax over a class's centres (> 0).
        margin: the margin ``delta`` of the paper.
        weight_init_func: initialiser of ``fc``.
        weight_regularizer: optional regularizer on the centres; weight_reg_weight its weight.
        distance: CosineSimilarity by default; it must be a similarity (inverted).
        reducer: MeanReducer by default (over the batch).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.soft_triple_loss import SoftTripleLoss
        >>> loss_fn = SoftTripleLoss(num_classes=4, embedding_size=16, centers_per_class=5)
        >>> loss = loss_fn(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        >>> loss.backward()  # gradients reach loss_fn.fc too
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        centers_per_class: int = 10,
        la: float = 20,
        gamma: float = 0.1,
        margin: float = 0.01,
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
        check_number("centers_per_class", centers_per_class, low=1, integer=True)
        check_number("la", la)
        check_number("gamma", gamma, low=0, low_inclusive=False)
        check_number("margin", margin)
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
        if not self.distance.is_inverted:
            raise ArgumentError(
                f"SoftTripleLoss needs a similarity (an inverted distance such as "
                f"CosineSimilarity) as distance, got {type(self.distance).__name__}"
            )
        self.la = la
        self.gamma = 1.0 / gamma
        self.margin = margin
        self.num_classes = num_classes
        self.centers_per_class = centers_per_class
        self.embedding_size = embedding_size
        self.fc = torch.nn.Parameter(torch.empty(embedding_size, num_classes * centers_per_class))
        self.weight_init_func(self.fc)
        self.add_to_recordable_attributes(
            list_of_names=[
                "la",
                "gamma",
                "margin",
                "centers_per_class",
                "num_classes",
                "embedding_size",
            ],
            is_stat=False,
        )

    def cast_types(self, dtype, device):
        """Move and cast ``fc`` in place (PML's method; forward only moves the device)."""
        self.fc.data = c_f.to_device(self.fc.data, device=device, dtype=dtype)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        labels = check_proxy_inputs(self, self.fc, embeddings, labels, ref_emb, ref_labels)
        acc = c_f.accumulation_dtype(embeddings.dtype)
        miner_weights = lmu.convert_to_weights(indices_tuple, labels, dtype=acc)
        logits = self._class_similarities(embeddings) * self.la
        # The margin only touches the true class: subtract it there instead of building
        # an N x C margin matrix.
        target = labels.unsqueeze(1)
        logits = logits.scatter_add(
            1,
            target,
            # logits' own dtype: under autocast the distance's matmul may give a half type.
            torch.full(
                target.shape, -self.la * self.margin, dtype=logits.dtype, device=target.device
            ),
        )
        losses = F.cross_entropy(logits, labels, reduction="none") * miner_weights
        loss_dict = {
            "loss": {
                "losses": losses.to(embeddings.dtype),
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }
        self.add_weight_regularization_to_loss_dict(loss_dict, self.fc.t())
        return loss_dict

    def _class_similarities(self, embeddings):
        """S_c(x) for every embedding and class, in the accumulation dtype."""
        acc = c_f.accumulation_dtype(embeddings.dtype)
        centers = weights_for(self.fc, embeddings, acc).t()
        sim = self.distance(embeddings.to(acc), centers)
        sim = sim.view(-1, self.num_classes, self.centers_per_class)
        prob = F.softmax(sim * self.gamma, dim=2)
        return torch.sum(prob * sim, dim=2)

    def get_logits(self, embeddings):
        """The class similarities ``S_c(x)`` (batch x num_classes), in the embeddings' dtype."""
        return self._class_similarities(embeddings).to(embeddings.dtype)

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def get_default_weight_init_func(self):
        return c_f.TorchInitWrapper(torch.nn.init.kaiming_uniform_, a=math.sqrt(5))
