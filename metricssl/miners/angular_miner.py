"""AngularMiner: triplets whose angle at the negative exceeds a threshold."""

from __future__ import annotations

import math

import torch

from ..core import chunking
from ..core import common as c_f
from ..core.pair_masks import pos_neg_masks
from ..core.validation import check_number
from ..distances import BaseDistance
from .anchor_blocks import empty_indices, padded_columns
from .base_miner import BaseMiner
from .distance_weighted_miner import require_unit_l2_distance

# torch.nn.functional.pairwise_distance adds this to every coordinate of the difference.
PAIRWISE_EPS = 1e-6
# Width of the band around the threshold where the fast formula is not trusted, in units of
# the working precision per dimension (see AngularMiner.mine). Tests widen it to force the
# exact path everywhere.
AMBIGUITY_FACTOR = 8.0


class AngularMiner(BaseMiner):
    """Triplets ``(a, p, n)`` with ``atan(||a - p|| / (2 ||n - c||)) > angle``, c = (a + p) / 2.

    The angle of the angular loss of Wang, Zhou, Wen, Liu and Lin, "Deep Metric Learning with
    Angular Loss", ICCV 2017: the angle at the negative of the triangle formed with the
    anchor-positive pair. Distances are taken between the raw embeddings, as in PML's
    ``AngularMiner``, whose triplets these are.

    PML lists every triplet with its three D-dimensional embeddings (N^3 x D memory). Here
    blocks of anchors are compared with their positives and every reference embedding, with
    ``||n - c||^2`` expanded into a matrix product. Triplets whose expanded value lies within
    rounding distance of the threshold are re-checked with PML's exact formula, so the
    selected set is PML's. Half-precision embeddings are handled in float32: the triplets are
    those PML selects from the float32 copies of the embeddings.

    Args:
        angle: the threshold in degrees (below 0 keeps every triplet, 90 or more none).
            Stored in radians, as in PML.
        distance: must be LpDistance(p=2, power=1, normalize_embeddings=True), the default.
        collect_stats: record the mean, min, max and standard deviation of the angles of all
            triplets (degrees) and the means above and below the threshold.

    Example:
        >>> import torch
        >>> from metricssl.miners.angular_miner import AngularMiner
        >>> miner = AngularMiner(angle=20)
        >>> anchors, positives, negatives = miner(torch.randn(32, 8), torch.arange(32) % 4)
    """

    def __init__(
        self,
        angle: float = 20,
        distance: BaseDistance | None = None,
        collect_stats: bool | None = None,
    ):
        # Any angle, as in PML: below 0 every triplet passes, from 90 degrees on none does.
        check_number("angle", angle)
        super().__init__(distance=distance, collect_stats=collect_stats)
        require_unit_l2_distance(self)
        self.angle = math.radians(angle)
        self.add_to_recordable_attributes(list_of_names=["angle"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=[
                "average_angle",
                "average_angle_above_threshold",
                "average_angle_below_threshold",
                "min_angle",
                "max_angle",
                "std_of_angle",
            ],
            is_stat=True,
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        pos, neg = pos_neg_masks(labels, ref_labels)
        pos &= neg.any(dim=1, keepdim=True)
        # An empty batch (PML: no triplets) has no row to take the max of.
        n_pos_max = int(pos.sum(dim=1).max()) if pos.numel() else 0
        stats = _AngleStats(embeddings.device) if self.collect_stats else None
        if n_pos_max == 0:
            if stats is not None:
                stats.write_to(self)
            return empty_indices(embeddings.device, 3)
        if self.angle >= math.pi / 2 and stats is None:
            return empty_indices(embeddings.device, 3)  # no angle of a triangle exceeds 90
        dtype = c_f.accumulation_dtype(embeddings.dtype)
        emb, ref = embeddings.to(dtype), ref_emb.to(dtype)
        # PML's test atan(ap / (2 nc)) > angle is ap^2 - 4 tan^2(angle) nc^2 > 0, with
        # nc^2 = |n + eps|^2 + |c|^2 - 2 c.(n + eps). Rounding (PML's in its dtype, ours in the
        # expansion) moves that difference by at most ~ (D + 16) u times the sum of the
        # magnitudes of its terms; a factor 8 (and 1/cos^2 for the flat tangent near 90
        # degrees) leaves a wide margin. Inside the band we recompute as PML does.
        tan2 = math.tan(self.angle) ** 2
        band = (
            AMBIGUITY_FACTOR
            * (emb.shape[1] + 16)
            * torch.finfo(dtype).eps
            / math.cos(self.angle) ** 2
        )
        ref_shifted = ref + PAIRWISE_EPS
        ref_sq = ref_shifted.square().sum(dim=1)
        m, dim = ref.shape
        # Per anchor: three (positives x M) float tensors and bool masks, and the positives'
        # and centers' embeddings.
        row_bytes = n_pos_max * (m * (3 * emb.element_size() + 4) + 3 * dim * emb.element_size())
        out = []
        for rows in chunking.row_chunks(emb.shape[0], row_bytes):
            p_cols, p_valid = padded_columns(pos[rows])
            anchors = emb[rows].unsqueeze(1)
            positives = ref[p_cols]
            centers = (anchors + positives) / 2
            ap_sq = (anchors - positives + PAIRWISE_EPS).square().sum(dim=2).unsqueeze(2)
            c_sq = centers.square().sum(dim=2).unsqueeze(2)
            nc_sq = torch.matmul(centers, ref_shifted.T).mul_(-2).add_(c_sq).add_(ref_sq)
            if stats is not None:
                angles = torch.atan(ap_sq.sqrt() / (2 * nc_sq.clamp(min=0).sqrt()))
            tolerance = (c_sq + ref_sq).mul_(4 * tan2).add_(ap_sq).mul_(band)
            # nc_sq becomes the test's left-hand side.
            lhs = nc_sq.mul_(-4 * tan2).add_(ap_sq)
            candidate = p_valid.unsqueeze(2) & neg[rows].unsqueeze(1)
            if self.angle < 0 or self.angle >= math.pi / 2:
                # atan(...) is in [0, pi/2]: above a negative angle always, never above 90
                # degrees (the tangent identity below holds only in between).
                keep = candidate & (self.angle < 0)
                b = ()
            else:
                keep = candidate & (lhs > tolerance)
                b, j, n = torch.where(candidate & (lhs.abs_() <= tolerance))
            if len(b):
                exact = self.exact_above(emb, ref, b + rows.start, p_cols[b, j], n)
                keep[b[exact], j[exact], n[exact]] = True
            if stats is not None:
                stats.add(angles, candidate, keep)
            b, j, n = torch.where(keep)
            out.append((b + rows.start, p_cols[b, j], n))
        if stats is not None:
            stats.write_to(self)
        if len(out) == 1:
            return out[0]
        return tuple(torch.cat(parts) for parts in zip(*out))

    def exact_above(self, emb, ref, a, p, n):
        """PML's computation for listed triplets: is the angle above the threshold?"""
        anchors, positives, negatives = emb[a], ref[p], ref[n]
        centers = (anchors + positives) / 2
        ap_dist = self.distance.pairwise_distance(anchors, positives)
        nc_dist = self.distance.pairwise_distance(negatives, centers)
        return torch.atan(ap_dist / (2 * nc_dist)) > self.angle


class _AngleStats:
    """Running sums of the triplet angles, for PML's statistics without a triplet list."""

    def __init__(self, device):
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self.count, self.total, self.total_sq = zero.clone(), zero.clone(), zero.clone()
        self.count_above, self.total_above = zero.clone(), zero.clone()
        self.low = torch.full((), math.inf, dtype=torch.float64, device=device)
        self.high = torch.full((), -math.inf, dtype=torch.float64, device=device)

    def add(self, angles, candidate, keep):
        values = angles.double()[candidate]
        above = angles.double()[keep]
        self.count += values.numel()
        self.total += values.sum()
        self.total_sq += values.square().sum()
        if values.numel():
            self.low = torch.minimum(self.low, values.min())
            self.high = torch.maximum(self.high, values.max())
        self.count_above += above.numel()
        self.total_above += above.sum()

    def write_to(self, miner):
        count, count_above = int(self.count), int(self.count_above)
        total, total_above = float(self.total), float(self.total_above)
        if count > 0:
            miner.average_angle = math.degrees(total / count)
            miner.min_angle = math.degrees(float(self.low))
            miner.max_angle = math.degrees(float(self.high))
            variance = (
                (float(self.total_sq) - total**2 / count) / (count - 1) if count > 1 else math.nan
            )
            miner.std_of_angle = math.degrees(math.sqrt(max(variance, 0.0)))
        if count_above > 0:
            miner.average_angle_above_threshold = math.degrees(total_above / count_above)
        if count - count_above > 0:
            miner.average_angle_below_threshold = math.degrees(
                (total - total_above) / (count - count_above)
            )
