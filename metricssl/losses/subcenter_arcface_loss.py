"""SubCenterArcFaceLoss: ArcFace with several sub-centers per class, and outlier detection."""

from __future__ import annotations

import math

import torch

from ..core.chunking import row_chunks
from ..core.validation import check_bool, check_embeddings, check_labels, check_number
from ..distances import BaseDistance
from ..reducers import BaseReducer
from .arcface_loss import ArcFaceLoss


class SubCenterArcFaceLoss(ArcFaceLoss):
    """Sub-center ArcFace loss (PML's ``SubCenterArcFaceLoss``).

    Deng, Guo, Liu, Gong and Zafeiriou, "Sub-center ArcFace: Boosting Face Recognition by
    Large-scale Noisy Web Faces", ECCV 2020. Each class has ``sub_centers`` weight columns;
    the cosine to a class is the largest cosine to any of its sub-centers, then the loss is
    :class:`ArcFaceLoss`. Noisy samples gather around non-dominant sub-centers, so after
    training :meth:`get_outliers` finds samples far from their class's dominant sub-center.

    ``W`` is ``(embedding_size, num_classes * sub_centers)``; columns
    ``c * sub_centers ... (c + 1) * sub_centers - 1`` belong to class ``c``.
    ``self.num_classes`` is the number of classes (as in PML).

    Args:
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        embedding_size: width of the embeddings.
        margin: the angular margin in degrees (stored in radians as ``self.margin``).
        scale: multiplies every logit (> 0).
        sub_centers: weight columns per class (>= 1).
        weight_init_func, weight_regularizer, weight_reg_weight, distance (CosineSimilarity,
            required), reducer, embedding_regularizer, embedding_reg_weight, collect_stats:
            as in :class:`ArcFaceLoss`.

    Example:
        >>> import torch
        >>> from metricssl.losses.subcenter_arcface_loss import SubCenterArcFaceLoss
        >>> loss_fn = SubCenterArcFaceLoss(num_classes=10, embedding_size=32, sub_centers=3)
        >>> x, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
        >>> loss = loss_fn(x, y)
        >>> outliers, dominant_centers = loss_fn.get_outliers(x, y, threshold=75)
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 28.6,
        scale: float = 64,
        sub_centers: int = 3,
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
        check_number("sub_centers", sub_centers, low=1, integer=True)
        # Known before the base class builds W with num_weight_columns() columns.
        self.sub_centers = int(sub_centers)
        super().__init__(
            num_classes=num_classes,
            embedding_size=embedding_size,
            margin=margin,
            scale=scale,
            weight_init_func=weight_init_func,
            weight_regularizer=weight_regularizer,
            weight_reg_weight=weight_reg_weight,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )

    def num_weight_columns(self) -> int:
        return self.num_classes * self.sub_centers

    def reduce_columns(self, per_column):
        return per_column.view(-1, self.num_classes, self.sub_centers).max(dim=2).values

    def get_target_cosine(self, x_unit, w_unit, labels):
        return self._cosine_to_own_centers(x_unit, w_unit, labels).max(dim=1).values

    def _cosine_to_own_centers(self, x_unit, w_unit, labels):
        """(N, sub_centers): cosine of each normalised row to its own class's normalised
        sub-centers (columns of ``w_unit``)."""
        k = self.sub_centers
        columns = labels.unsqueeze(1) * k + torch.arange(k, device=labels.device)
        return torch.einsum("nd,nkd->nk", x_unit, w_unit.t()[columns])

    def get_outliers(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        threshold: float = 75,
        return_dominant_centers: bool = True,
    ):
        """Samples farther than ``threshold`` degrees from their class's dominant sub-center.

        A class's dominant sub-center is the one nearest to most of its samples (ties: the
        lowest index). Returns ``(outliers, dominant_centers)``: the indices of the outlying
        samples (int64, grouped by class in ascending class order, ascending within a class,
        as PML orders them) and an ``(embedding_size, num_classes)`` tensor holding each
        class's dominant sub-center, in the embeddings' dtype; classes absent from ``labels``
        get a NaN column (PML leaves that memory uninitialised).

        PML 2.9 returns this pair whatever ``return_dominant_centers`` says (an operator
        precedence slip); metricssl does the same, so code that unpacks the pair keeps
        working. Runs without gradient, in chunks of samples within the memory budget, so a
        whole data set can be passed at once.
        """
        check_embeddings(embeddings)
        check_labels(labels, embeddings.shape[0])
        self.check_embedding_width(embeddings)
        check_number("threshold", threshold, low=0, high=180)
        check_bool("return_dominant_centers", return_dominant_centers)
        labels = self.check_class_labels(labels.to(embeddings.device))
        n, k = embeddings.shape[0], self.sub_centers
        with torch.no_grad():
            x = embeddings.to(self.compute_dtype(embeddings))
            weights = self.weights_like(x)  # (embedding_size, num_classes * sub_centers)
            x_unit, w_unit = self._unit_vectors(x)
            # Each sample against its own class's sub-centers only, in memory-bounded chunks.
            own = torch.empty(n, k, dtype=x.dtype, device=x.device)
            bytes_per_row = k * x.shape[1] * x.element_size()
            for rows in row_chunks(n, bytes_per_row, device=x.device):
                own[rows] = self._cosine_to_own_centers(x_unit[rows], w_unit, labels[rows])
            if self.distance.power != 1:
                own = own**self.distance.power
            nearest = own.argmax(dim=1)
            votes = torch.bincount(labels * k + nearest, minlength=self.num_classes * k)
            votes = votes.view(self.num_classes, k)
            dominant = votes.argmax(dim=1)  # first maximum, as torch.argmax of a bincount
            dominant_cos = own.gather(1, dominant[labels].unsqueeze(1)).squeeze(1)
            outliers = torch.nonzero(dominant_cos < math.cos(math.radians(threshold)))
            outliers = outliers.squeeze(1)
            outliers = outliers[torch.argsort(labels[outliers], stable=True)]
            classes = torch.arange(self.num_classes, device=x.device)
            dominant_centers = weights[:, classes * k + dominant].to(embeddings.dtype)
            absent = votes.sum(dim=1) == 0
            dominant_centers[:, absent] = float("nan")
        return outliers, dominant_centers
