"""Losses that classify each embedding against a learnable weight matrix, one column per class.

:class:`BaseClassificationLoss` holds what every such loss shares: ``num_classes`` and the
embedding width, the input checks (labels required and in range, no ``ref_emb``, the right
width) and the dtype/device rules for the weights. :class:`SoftmaxClassificationLoss` adds the
weight matrix ``W`` (``embedding_size x num_classes``, PML's layout and initialisation), the
cross-entropy over logits and PML's miner weighting; the margin losses (Large-Margin Softmax,
SphereFace, CosFace, ArcFace, Sub-center ArcFace) and NormalizedSoftmax only say how logits
are made.

Dtype and device, as in PML: each call casts and moves ``W.data`` in place to the
embeddings' dtype and device (not under autocast, where the weights keep their dtype), so
after a float64 batch ``W`` is float64; the Parameter object stays the same, so an optimizer
built on it keeps working. Logits are computed in float32 at least for half-precision
inputs, and the loss comes back in the embeddings' dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.validation import ArgumentError, check_embeddings, check_number
from .base_metric_loss_function import BaseMetricLossFunction
from .mixins import WeightRegularizerMixin
from .proxy_utils import check_class_labels, check_embedding_size, check_proxy_inputs


def check_finite_number(name: str, value, **bounds) -> None:
    """check_number, and also reject +-inf (a scale or margin of inf only gives NaN later)."""
    check_number(name, value, **bounds)
    if not math.isfinite(value):
        raise ArgumentError(f"{name} must be finite, got {value}")


class BaseClassificationLoss(BaseMetricLossFunction):
    """A loss with one learnable weight column per class (stored under ``weight_attribute``).

    Args:
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        embedding_size: width of the embeddings (and the weight matrix's number of rows).
        embedding_size_name: the constructor argument's public name, for error messages.
        **kwargs: passed on to BaseMetricLossFunction (distance, reducer, ...).
    """

    #: name of the ``torch.nn.Parameter`` holding the class weights (``W`` or ``weight``)
    weight_attribute = "W"

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        embedding_size_name: str = "embedding_size",
        **kwargs,
    ):
        check_number("num_classes", num_classes, low=1, integer=True)
        check_number(embedding_size_name, embedding_size, low=1, integer=True)
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)
        self._embedding_size_name = embedding_size_name

    def class_weights(self) -> torch.nn.Parameter:
        return getattr(self, self.weight_attribute)

    # -- dtype and device ---------------------------------------------------------------------

    def compute_dtype(self, embeddings: torch.Tensor) -> torch.dtype:
        """The dtype logits are computed in: the promotion of inputs and weights, >= float32."""
        return c_f.accumulation_dtype(
            torch.promote_types(embeddings.dtype, self.class_weights().dtype)
        )

    def weights_like(self, x: torch.Tensor) -> torch.Tensor:
        """The class weights in ``x``'s dtype (a differentiable cast), on ``x``'s device."""
        weights = self.class_weights()
        if weights.device != x.device:
            # PML moves the parameter itself; keep that, so the same optimizer still sees it.
            weights.data = weights.data.to(x.device)
        return weights.to(x.dtype)

    def targets_from_columns(self) -> bool:
        """Whether target-class cosines are worth computing from W's target columns (N x D
        work) instead of gathering them from the (N, C) matrix, whose backward writes a dense
        (N, C) gradient: true once the columns far outnumber the embedding width (the CPU
        crossover measured near 8 x)."""
        return self.class_weights().shape[1] > 8 * self.embedding_size

    # -- input checks -------------------------------------------------------------------------

    def check_embedding_width(self, embeddings: torch.Tensor) -> None:
        check_embedding_size(
            embeddings, self.embedding_size, type(self).__name__, self._embedding_size_name
        )

    def check_class_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels as int64 class ids, all in ``[0, num_classes)`` (one host sync for the range:
        on CUDA a bad label would otherwise be a device-side assert that kills the context)."""
        return check_class_labels(labels, self.num_classes, type(self).__name__)

    def check_classification_inputs(self, embeddings, labels, ref_emb, ref_labels):
        """Labels required and in range, no separate reference set, the right width."""
        return check_proxy_inputs(
            self, self.class_weights(), embeddings, labels, ref_emb, ref_labels
        )


class SoftmaxClassificationLoss(WeightRegularizerMixin, BaseClassificationLoss):
    """Cross-entropy over ``get_logits``-style logits from a weight matrix ``W``.

    ``W`` has shape ``(embedding_size, num_weight_columns())`` and is initialised by
    ``weight_init_func`` (``torch.nn.init.normal_`` by default), drawing the same random
    numbers as PML. Per-sample losses are multiplied by PML's miner weights when an
    ``indices_tuple`` is given (how often each sample occurs in it, over the largest count) and
    handed to the reducer with one index per sample. A ``weight_regularizer`` is applied to
    ``W.t()`` (one row per class column) as ``weight_reg_loss``.

    Subclasses implement :meth:`compute_logits` (inference logits) and may override
    :meth:`training_logits` (where a margin on the target class goes).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        weight_init_func=None,
        weight_regularizer=None,
        weight_reg_weight: float = 1,
        **kwargs,
    ):
        if weight_init_func is not None and not callable(weight_init_func):
            raise TypeError(f"weight_init_func must be callable, got {weight_init_func!r}")
        if weight_regularizer is not None and not callable(weight_regularizer):
            raise TypeError(f"weight_regularizer must be callable, got {weight_regularizer!r}")
        check_finite_number("weight_reg_weight", weight_reg_weight)
        super().__init__(
            num_classes=num_classes,
            embedding_size=embedding_size,
            weight_init_func=weight_init_func,
            weight_regularizer=weight_regularizer,
            weight_reg_weight=weight_reg_weight,
            **kwargs,
        )
        self.W = torch.nn.Parameter(torch.empty(self.embedding_size, self.num_weight_columns()))
        self.weight_init_func(self.W)

    def num_weight_columns(self) -> int:
        """Columns of ``W``: one per class (Sub-center ArcFace has several)."""
        return self.num_classes

    def compute_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` for embeddings already in the compute dtype."""
        raise NotImplementedError

    def training_logits(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The logits the cross-entropy sees (a margin on the target class goes here)."""
        return self.compute_logits(x)

    def get_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class logits for ``embeddings`` (no margin), in the embeddings' dtype."""
        check_embeddings(embeddings)
        self.check_embedding_width(embeddings)
        x = embeddings.to(self.compute_dtype(embeddings))
        return self.compute_logits(x).to(embeddings.dtype)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        labels = self.check_classification_inputs(embeddings, labels, ref_emb, ref_labels)
        x = embeddings.to(self.compute_dtype(embeddings))
        losses = F.cross_entropy(self.training_logits(x, labels), labels, reduction="none")
        if indices_tuple is not None:
            losses = losses * lmu.convert_to_weights(indices_tuple, labels, dtype=x.dtype)
        loss_dict = {
            "loss": {
                "losses": losses.to(embeddings.dtype),
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }
        self.add_weight_regularization_to_loss_dict(loss_dict, self.W.t())
        return loss_dict
