"""DistanceWeightedMiner: negatives sampled with weights that undo the distance distribution."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.validation import ArgumentError, ArgumentTypeError, check_number
from ..distances import BaseDistance, LpDistance
from .anchor_blocks import empty_indices
from .base_miner import BaseMiner


def require_unit_l2_distance(miner: BaseMiner) -> None:
    """The miner's formulas assume Euclidean distances between unit vectors."""
    name = type(miner).__name__
    distance = miner.distance
    if not isinstance(distance, LpDistance):
        raise ArgumentTypeError(
            f"{name} requires distance to be an LpDistance, got {type(distance).__name__}"
        )
    if distance.p != 2 or distance.power != 1 or not distance.normalize_embeddings:
        raise ArgumentError(
            f"{name} requires distance=LpDistance(p=2, power=1, normalize_embeddings=True), got "
            f"p={distance.p}, power={distance.power}, "
            f"normalize_embeddings={distance.normalize_embeddings}"
        )


class DistanceWeightedMiner(BaseMiner):
    """Random triplets whose negatives are drawn with probability ``~ 1 / q(d)``.

    Wu, Manmatha, Smola and Krähenbühl, "Sampling Matters in Deep Embedding Learning",
    ICCV 2017. For unit vectors in D dimensions the pairwise distance has density
    ``q(d) ~ d^(D-2) (1 - d^2/4)^((D-3)/2)``; weighting negatives by its inverse (with
    distances clamped below at ``cutoff``, and negatives at or beyond
    ``nonzero_loss_cutoff`` left out) spreads the sampled negatives over all distances.
    Each anchor gets as many triplets as its class has other members, with random positives.

    Same weights and the same random draws as PML's ``DistanceWeightedMiner``: after
    ``torch.manual_seed(s)`` both return the same triplets (float32/float64 on CPU). For
    half-precision input the weights are computed in float32, where PML would sample from
    half-precision weights.

    Args:
        cutoff: distances below this are raised to it, limiting the largest weights.
        nonzero_loss_cutoff: negatives at least this far are never sampled (<= 0: none is).
        distance: must be LpDistance(p=2, power=1, normalize_embeddings=True), the default.
        collect_stats: accepted for PML compatibility (this miner records no statistics).

    Example:
        >>> import torch
        >>> from metricssl.miners.distance_weighted_miner import DistanceWeightedMiner
        >>> miner = DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)
        >>> anchors, positives, negatives = miner(torch.randn(32, 64), torch.arange(32) % 4)
    """

    def __init__(
        self,
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float = 1.4,
        distance: BaseDistance | None = None,
        collect_stats: bool | None = None,
    ):
        # Any real number, as in PML: a nonzero_loss_cutoff <= 0 leaves no negative to sample
        # (PML's own tests use DistanceWeightedMiner(0, -0.01) for that), a cutoff <= 0
        # clamps nothing.
        check_number("cutoff", cutoff)
        check_number("nonzero_loss_cutoff", nonzero_loss_cutoff)
        super().__init__(distance=distance, collect_stats=collect_stats)
        require_unit_l2_distance(self)
        self.cutoff = float(cutoff)
        self.nonzero_loss_cutoff = float(nonzero_loss_cutoff)
        self.add_to_recordable_attributes(
            list_of_names=["cutoff", "nonzero_loss_cutoff"], is_stat=False
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        if mat.numel() == 0:  # an empty batch: no triplet, no draw (PML fails in a max)
            return empty_indices(mat.device, 3)
        # multinomial needs float32 or better; PML's float32/64 arithmetic is kept exactly,
        # so that the same seed draws the same triplets.
        mat = mat.to(c_f.accumulation_dtype(mat.dtype))
        dim = float(embeddings.shape[1])
        mat = torch.clamp(mat, min=self.cutoff)
        # log q(d)^-1, up to a constant (first equation of Section 4 of the paper).
        log_weights = (2.0 - dim) * torch.log(mat) - ((dim - 3) / 2) * torch.log(
            1.0 - 0.25 * (mat**2.0)
        )
        bad = torch.isinf(log_weights) | torch.isnan(log_weights)
        same_class = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
        log_weights = log_weights.masked_fill(same_class, 0)
        # Subtract the largest finite log-weight for stability (as PML, same-class zeros count).
        top = log_weights.masked_fill(bad, float("-inf")).max()
        weights = torch.exp(log_weights - top)
        usable = ~same_class & (mat < self.nonzero_loss_cutoff) & ~bad
        weights = torch.where(usable, weights, torch.zeros_like(weights))
        # Rows with no usable negative become 0/0 = NaN and are skipped by the sampler.
        weights = weights / torch.sum(weights, dim=1, keepdim=True)
        return lmu.get_random_triplet_indices(labels, ref_labels=ref_labels, weights=weights)
