"""BaseMiner: picks informative pairs or triplets from a batch (PML's interface)."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core.validation import (
    ArgumentError,
    check_embedding_shapes,
    check_embeddings,
    check_labels,
    check_same_device,
    check_same_width,
    vouch_for_indices,
)
from ..distances.module_with_distance import ModuleWithRecordsAndDistance


class BaseMiner(ModuleWithRecordsAndDistance):
    """Base of every miner: ``miner(embeddings, labels, ref_emb=None, ref_labels=None)``.

    Subclasses implement :meth:`mine`, returning PML's tuple formats: ``(a, p, n)`` for
    triplets or ``(a1, p, a2, n)`` for pairs, with indices into ``embeddings`` (anchors) and
    ``ref_emb`` (positives, negatives). After each call ``num_triplets`` or
    ``num_pos_pairs``/``num_neg_pairs`` hold the counts.

    Args:
        distance: a :class:`~metricssl.distances.BaseDistance` (LpDistance by default).
        collect_stats: record per-call statistics.
    """

    def __init__(self, distance=None, collect_stats: bool | None = None, **kwargs):
        super().__init__(distance=distance, collect_stats=collect_stats, **kwargs)
        self.add_to_recordable_attributes(
            list_of_names=["num_pos_pairs", "num_neg_pairs", "num_triplets"], is_stat=True
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        raise NotImplementedError

    def output_assertion(self, output):
        if not isinstance(output, (tuple, list)) or len(output) not in (3, 4):
            raise TypeError(f"{type(self).__name__}.mine must return a tuple of 3 or 4 tensors")
        if len(output) == 3:
            self.num_triplets = len(output[0])
            if not self.num_triplets == len(output[1]) == len(output[2]):
                raise ArgumentError("mined anchors, positives and negatives differ in length")
        else:
            self.num_pos_pairs = len(output[0])
            self.num_neg_pairs = len(output[2])
            if self.num_pos_pairs != len(output[1]) or self.num_neg_pairs != len(output[3]):
                raise ArgumentError("mined pair indices differ in length")

    def forward(self, embeddings, labels, ref_emb=None, ref_labels=None):
        self.reset_stats()
        with torch.no_grad():
            embeddings, labels, ref_emb, ref_labels = self.check_inputs(
                embeddings, labels, ref_emb, ref_labels
            )
            mining_output = self.mine(embeddings, labels, ref_emb, ref_labels)
        self.output_assertion(mining_output)
        if type(self).__module__.startswith("metricssl."):
            # Our miners' indices are in range by construction: a loss given them need not
            # read them back (a synchronisation on CUDA). A user's subclass is checked.
            vouch_for_indices(mining_output, embeddings.shape[0], ref_emb.shape[0])
        return mining_output

    def check_inputs(self, embeddings, labels, ref_emb, ref_labels):
        # The shape is the distance's to judge, as in PML (a custom distance may take others).
        check_embeddings(embeddings, allow_empty=True, ndim=None)
        if labels is None:
            raise ArgumentError(f"{type(self).__name__} needs labels")
        check_labels(labels, embeddings.shape[0])
        labels = c_f.to_device(labels, embeddings)
        if ref_emb is None:
            if ref_labels is not None:
                raise ArgumentError("ref_labels was given without ref_emb")
            check_embedding_shapes(self, embeddings, None)
            return embeddings, labels, embeddings, labels
        check_embeddings(ref_emb, "ref_emb", allow_empty=True, ndim=None)
        check_same_device(embeddings, ref_emb, "embeddings", "ref_emb")
        check_embedding_shapes(self, embeddings, ref_emb)
        check_same_width(embeddings, ref_emb, "embeddings", "ref_emb")
        if ref_labels is None:
            raise ArgumentError(
                f"{type(self).__name__}: ref_labels is required when ref_emb is given"
            )
        check_labels(ref_labels, ref_emb.shape[0], "ref_labels", "ref_emb")
        return embeddings, labels, ref_emb, c_f.to_device(ref_labels, ref_emb)
