"""LargeMarginSoftmaxLoss: softmax over ``|W_j| |x| cos(theta_j)`` with ``cos(m theta)`` for the
target class; the base of SphereFace, CosFace and ArcFace."""

from __future__ import annotations

import math

import torch

from ..core.validation import ArgumentError, check_distance_type
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer
from .classification_loss import SoftmaxClassificationLoss, check_finite_number


class LargeMarginSoftmaxLoss(SoftmaxClassificationLoss):
    """Large-Margin Softmax (L-Softmax) loss (PML's ``LargeMarginSoftmaxLoss``).

    Liu, Wen, Yu and Yang, "Large-Margin Softmax Loss for Convolutional Neural Networks",
    ICML 2016. With ``theta_j`` the angle between embedding ``x`` and class column ``W_j``,
    the logits are ``scale * |W_j| |x| cos(theta_j)``, except for the target class ``y``
    whose cosine is replaced by ``psi(theta_y) = (-1)^k cos(m theta_y) - 2k`` for
    ``theta_y`` in ``[k pi / m, (k + 1) pi / m]``; the loss is the cross-entropy.

    ``cos(m theta)`` is the Chebyshev polynomial ``T_m(cos theta)`` (the same polynomial as the
    paper's equation 7, evaluated by its recurrence). Subclasses change how the target cosine
    is modified (:meth:`modify_cosine_of_target_classes`, PML's name) and the logit scale
    (:meth:`logit_scale`). With the default distance the scale is folded into the matmul's
    operands and the target logits are written in place: no (N, C) one-hot mask is built.

    Args:
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        embedding_size: width of the embeddings; ``W`` is ``(embedding_size, num_classes)``.
        margin: the integer angular multiplier ``m`` (>= 1).
        scale: multiplies every logit (> 0).
        weight_init_func: initialises ``W`` in place (``torch.nn.init.normal_`` by default).
        weight_regularizer: an optional regularizer applied to ``W.t()``.
        weight_reg_weight: its weight.
        distance: must be a CosineSimilarity (the default).
        reducer: MeanReducer by default (over samples).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss. With
            ``collect_stats``, ``avg_angle`` (degrees, target classes) is recorded per call.

    ``W`` is a parameter of the loss: give ``loss_fn.parameters()`` to an optimizer.

    Example:
        >>> import torch
        >>> from metricssl.losses.large_margin_softmax_loss import LargeMarginSoftmaxLoss
        >>> loss_fn = LargeMarginSoftmaxLoss(num_classes=10, embedding_size=32, margin=4)
        >>> loss_optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.01)
        >>> loss = loss_fn(torch.randn(16, 32), torch.randint(0, 10, (16,)))
        >>> loss.backward(); loss_optimizer.step()
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 4,
        scale: float = 1,
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
        self.check_margin(margin)
        check_finite_number("scale", scale, low=0, low_inclusive=False)
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
        check_distance_type(self, CosineSimilarity)
        self.margin = margin
        self.scale = scale
        self.init_margin()
        self.add_to_recordable_attributes(
            list_of_names=["num_classes", "margin", "scale"], is_stat=False
        )
        self.add_to_recordable_attributes(name="avg_angle", is_stat=True)

    # -- the margin ---------------------------------------------------------------------------

    @staticmethod
    def check_margin(margin) -> None:
        check_finite_number("margin", margin, low=1)
        if margin != int(margin):
            raise ArgumentError(
                f"margin must be a whole number (the angle multiplier), got {margin}"
            )

    def init_margin(self) -> None:
        self.margin = int(self.margin)

    def get_cos_with_margin(self, cosine: torch.Tensor) -> torch.Tensor:
        """``cos(m theta)`` as the Chebyshev polynomial ``T_m(cos theta)``."""
        previous, current = torch.ones_like(cosine), cosine
        for _ in range(self.margin - 1):
            previous, current = current, 2 * cosine * current - previous
        return current

    def get_angles(self, cosine_of_target_classes: torch.Tensor) -> torch.Tensor:
        # acos has an infinite slope at +-1 (where a rounded cosine can land): one float step
        # inside keeps the gradient finite; elsewhere the values are PML's.
        eps = torch.finfo(cosine_of_target_classes.dtype).eps
        angles = torch.acos(cosine_of_target_classes.clamp(-1 + eps, 1 - eps))
        if self.collect_stats:  # a host read (a CUDA sync) only then, as in PML
            with torch.no_grad():
                self.avg_angle = math.degrees(torch.mean(angles).item())
        return angles

    def modify_cosine_of_target_classes(self, cosine_of_target_classes):
        cos_with_margin = self.get_cos_with_margin(cosine_of_target_classes)
        with torch.no_grad():
            if self.collect_stats:
                self.get_angles(cosine_of_target_classes)  # records avg_angle
            # theta in [k pi / m, (k + 1) pi / m] (the paper's equation 6). No gradient flows
            # through k, so PML's exact clamp is kept: with p != 2 a "cosine" can pass +-1.
            angles = torch.acos(cosine_of_target_classes.clamp(-1, 1))
            k = torch.floor(angles / (math.pi / self.margin))
            sign = 1 - 2 * torch.remainder(k, 2)
        return sign * cos_with_margin - 2 * k

    # -- logits -------------------------------------------------------------------------------

    def get_cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The (N, num_classes) cosine matrix, through ``self.distance``."""
        return self.reduce_columns(self.distance(embeddings, self.weights_like(embeddings).t()))

    def reduce_columns(self, per_column: torch.Tensor) -> torch.Tensor:
        """One value per class from one per column of ``W`` (Sub-center ArcFace: the max)."""
        return per_column

    def get_target_cosine(self, x_unit, w_unit, labels):
        """``cos(theta_{i, y_i})``, shape (N,), from the normalised embeddings ``x_unit``
        (N, D) and class columns ``w_unit`` (D, num_weight_columns)."""
        return (x_unit * torch.index_select(w_unit, 1, labels).t()).sum(dim=1)

    def logit_scale(self, embeddings: torch.Tensor):
        """``(row, column)``: logit ``(i, j)`` is ``row_i * column_j * cos(theta_ij)``.

        Each factor is a number, or a tensor of shape (N,) (rows) / (num_classes,) (columns).
        Here ``scale |x_i|`` and ``|W_j|``.
        """
        embedding_norms = self.distance.get_norm(embeddings) * self.scale
        return embedding_norms, self.distance.get_norm(self.weights_like(embeddings), dim=0)

    def scale_logits(self, logits: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        row, column = self.logit_scale(embeddings)
        return _times(_times(logits, _as_column(row)), column)

    def compute_logits(self, x):
        if not self._plain_cosine():
            return self.scale_logits(self.get_cosine(x), x)
        row, column = self.logit_scale(x)
        return self._scaled_cosine_matmul(*self._unit_vectors(x), row, column)

    def training_logits(self, x, labels):
        row, column = self.logit_scale(x)
        if self._plain_cosine() and self.targets_from_columns():
            x_unit, w_unit = self._unit_vectors(x)
            logits = self._scaled_cosine_matmul(x_unit, w_unit, row, column)
            target = self.get_target_cosine(x_unit, w_unit, labels)
        else:
            cosine = self.get_cosine(x)
            target = cosine.gather(1, labels.unsqueeze(1)).squeeze(1)
            logits = _times(_times(cosine, _as_column(row)), column)
            if logits is cosine:  # scale 1: the gather above still needs cosine unchanged
                logits = cosine.clone()
        target_scale = row * (column[labels] if torch.is_tensor(column) else column)
        target_logits = self.modify_cosine_of_target_classes(target) * target_scale
        # Overwrite the target entries in place: no (N, C) mask or scattered copy.
        rows = torch.arange(len(labels), device=labels.device)
        return logits.index_put_((rows, labels), target_logits.to(logits.dtype))

    def _unit_vectors(self, x):
        return self.distance.normalize(x), self.distance.normalize(self.weights_like(x), dim=0)

    def _scaled_cosine_matmul(self, x_unit, w_unit, row, column):
        """The scaled cosines with the scale factors in the small operands (N x D, D x C) of
        the matmul instead of passes over its (N, C) result; for a plain cosine only."""
        return self.reduce_columns(_times(x_unit, _as_column(row)) @ _times(w_unit, column))

    def _plain_cosine(self) -> bool:
        return type(self.distance) is CosineSimilarity and self.distance.power == 1

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()


def _as_column(factor):
    """A per-row factor, shaped to broadcast over an (N, C) matrix."""
    return factor.unsqueeze(1) if torch.is_tensor(factor) else factor


def _times(x, factor):
    # A factor of exactly 1 (normalised class weights) costs no copy of W.
    return x if isinstance(factor, (int, float)) and factor == 1 else x * factor
