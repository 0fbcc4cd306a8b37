"""SparseCentersRegularizer: pulls together the centres of each class (SoftTriple's regularizer)."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core.chunking import row_chunks
from ..core.validation import ArgumentError, check_distance_type, check_number
from ..distances import CosineSimilarity
from ..reducers import DivisorReducer
from .base_regularizer import BaseRegularizer


class SparseCentersRegularizer(BaseRegularizer):
    """``sqrt(2 - 2 cos(w_a, w_b))`` for every pair of centres of the same class.

    From Qian, Shang, Sun, Hu, Li and Jin, "SoftTriple Loss: Deep Metric Learning Without
    Triplet Sampling", ICCV 2019: with several centres per class, similar centres merge,
    so the number of centres adapts. The weights are ``num_classes * centers_per_class``
    rows, class-major (rows ``c * K .. c * K + K - 1`` are class ``c``'s centres), as in
    SoftTripleLoss's ``fc.t()``. The default DivisorReducer divides the sum over the
    ``num_classes * K * (K - 1) / 2`` pairs by twice their number, as PML does.

    Only the within-class ``K x K`` blocks are computed (PML builds two boolean masks of
    ``(num_classes * K)^2`` entries and the full similarity matrix); the full matrix is
    only walked, in blocks of rows, when ``collect_stats`` asks for
    ``diff_class_center_sim``.

    Example:
        >>> import torch
        >>> from metricssl.regularizers.sparse_centers_regularizer import (
        ...     SparseCentersRegularizer,
        ... )
        >>> reg = SparseCentersRegularizer(num_classes=10, centers_per_class=3)
        >>> reg(torch.randn(30, 16)).shape
        torch.Size([])

    Args:
        num_classes: number of classes.
        centers_per_class: centres per class, at least 2.
        distance: a CosineSimilarity (the default).
        reducer: DivisorReducer by default.
        collect_stats: also record ``same_class_center_sim`` and ``diff_class_center_sim``.
    """

    def __init__(
        self,
        num_classes: int,
        centers_per_class: int,
        distance=None,
        reducer=None,
        collect_stats: bool | None = None,
    ):
        check_number("num_classes", num_classes, low=1, integer=True)
        check_number("centers_per_class", centers_per_class, low=2, integer=True)
        super().__init__(distance=distance, reducer=reducer, collect_stats=collect_stats)
        check_distance_type(self, CosineSimilarity)
        self.num_classes = int(num_classes)
        self.centers_per_class = int(centers_per_class)
        self.add_to_recordable_attributes(
            list_of_names=["num_classes", "centers_per_class"], is_stat=False
        )
        self.add_to_recordable_attributes(
            list_of_names=["same_class_center_sim", "diff_class_center_sim"], is_stat=True
        )

    def get_default_distance(self):
        return CosineSimilarity()

    def get_default_reducer(self):
        return DivisorReducer()

    def compute_loss(self, weights):
        c, k = self.num_classes, self.centers_per_class
        if weights.shape[0] != c * k:
            raise ArgumentError(
                f"weights has {weights.shape[0]} rows but num_classes * centers_per_class = "
                f"{c} * {k} = {c * k}"
            )
        block_sims = self.within_class_similarities(weights)  # (c, k, k)
        upper = torch.triu_indices(k, k, offset=1, device=weights.device)
        # Block by block, row-major inside a block: the order of PML's boolean-mask gather.
        pair_sims = block_sims[:, upper[0], upper[1]].reshape(-1)
        acc = c_f.accumulation_dtype(weights.dtype)
        two = 2.0 + c_f.small_val(weights.dtype)
        reg = torch.sqrt(two - torch.clamp(2.0 * pair_sims.to(acc), max=2)).to(weights.dtype)
        if self.collect_stats:
            self.set_stats(weights, block_sims, pair_sims)
        return {
            "loss": {
                "losses": reg,
                "indices": c_f.torch_arange_from_size(reg),
                "reduction_type": "element",
                "divisor": c * k * (k - 1),
            }
        }

    def within_class_similarities(self, weights):
        distance = self.distance
        blocks = distance.maybe_normalize(weights).reshape(
            self.num_classes, self.centers_per_class, -1
        )
        sims = distance.compute_mat(blocks, blocks)  # batched over classes
        return sims**distance.power if distance.power != 1 else sims

    @torch.no_grad()
    def set_stats(self, weights, block_sims, pair_sims):
        self.same_class_center_sim = torch.mean(pair_sims.float()).item()
        n = weights.shape[0]
        total = torch.zeros((), dtype=torch.float64, device=weights.device)
        for rows in row_chunks(n, n * weights.element_size()):
            total += self.distance(weights[rows], weights).double().sum()
        count = n * n - self.num_classes * self.centers_per_class**2
        # No pair of different classes (one class): NaN, like PML's mean of nothing.
        diff = (total - block_sims.double().sum()) / count if count else float("nan")
        self.diff_class_center_sim = float(diff)
