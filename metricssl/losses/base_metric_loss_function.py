"""BaseMetricLossFunction: the call every loss shares, and the checks that guard it."""

from __future__ import annotations

import inspect

import torch

from ..core import common as c_f
from ..core.validation import (
    ArgumentError,
    apply_nonfinite_policy,
    check_embedding_shapes,
    check_embeddings,
    check_indices_tuple,
    check_labels,
    check_same_device,
    check_same_width,
    nonfinite_flag,
)
from ..reducers import BaseReducer, FusedReduction, MultipleReducers
from ..reducers.module_with_reducer import ModuleWithRecordsReducerAndDistance
from .mixins import EmbeddingRegularizerMixin


class BaseMetricLossFunction(EmbeddingRegularizerMixin, ModuleWithRecordsReducerAndDistance):
    """Base of every loss: ``loss(embeddings, labels=None, indices_tuple=None, ref_emb=None,
    ref_labels=None)``.

    Subclasses implement :meth:`compute_loss`, returning PML's loss dictionary
    ``{name: {"losses": ..., "indices": ..., "reduction_type": ...}}``; the reducer turns it
    into a number.

    NaN/Inf policy (the same for every loss): non-finite embeddings give a NaN loss, never a
    finite one; on CPU tensors a ``RuntimeWarning`` says so (on CUDA no warning, since
    checking would synchronise the device).

    Args:
        distance: a :class:`~metricssl.distances.BaseDistance` (LpDistance by default).
        reducer: a :class:`~metricssl.reducers.BaseReducer` (the loss's default otherwise).
        embedding_regularizer: an optional regularizer on the embeddings.
        embedding_reg_weight: its weight.
        collect_stats: record per-call statistics.
    """

    def __init__(
        self,
        distance=None,
        reducer=None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
        **kwargs,
    ):
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
            **kwargs,
        )

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        raise NotImplementedError

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        self.reset_stats()
        embeddings, labels, indices_tuple, ref_emb, ref_labels = self.check_inputs(
            embeddings, labels, indices_tuple, ref_emb, ref_labels
        )
        flag = nonfinite_flag(embeddings, None if ref_emb is embeddings else ref_emb)
        loss_dict = self.compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        self.add_embedding_regularization_to_loss_dict(loss_dict, embeddings)
        out = self.reducer(loss_dict, embeddings, labels)
        if torch.is_tensor(out):
            out = apply_nonfinite_policy(out, flag, type(self).__name__)
        return out

    def check_inputs(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        """Validate the call; move labels and indices to the embeddings' device (as PML does).

        An empty batch is accepted (PML gives its answer, usually a zero loss). The shape is
        the distance's to judge (``distance.check_shapes``), as in PML, so a custom distance
        may accept other shapes than (batch, dim).
        """
        check_embeddings(embeddings, allow_empty=True, ndim=None)
        check_labels(labels, embeddings.shape[0])
        if labels is not None:
            labels = c_f.to_device(labels, embeddings)
        if ref_emb is None:
            if ref_labels is not None:
                raise ArgumentError("ref_labels was given without ref_emb")
            check_embedding_shapes(self, embeddings, None)
            ref_emb, ref_labels = embeddings, labels
        else:
            check_embeddings(ref_emb, "ref_emb", allow_empty=True, ndim=None)
            check_same_device(embeddings, ref_emb, "embeddings", "ref_emb")
            check_embedding_shapes(self, embeddings, ref_emb)
            check_same_width(embeddings, ref_emb, "embeddings", "ref_emb")
            check_labels(ref_labels, ref_emb.shape[0], "ref_labels", "ref_emb")
            if ref_labels is not None:
                ref_labels = c_f.to_device(ref_labels, ref_emb)
        if indices_tuple is not None:
            check_indices_tuple(indices_tuple, embeddings.shape[0], ref_emb.shape[0])
            indices_tuple = tuple(c_f.to_device(x, embeddings) for x in indices_tuple)
        return embeddings, labels, indices_tuple, ref_emb, ref_labels

    # -- sub-losses and reduction ------------------------------------------------------------

    def zero_loss(self):
        return {"losses": 0, "indices": None, "reduction_type": "already_reduced"}

    def zero_losses(self):
        return {name: self.zero_loss() for name in self.sub_loss_names()}

    def _sub_loss_names(self):
        return ["loss"]

    def sub_loss_names(self):
        return self._sub_loss_names() + self.all_regularization_loss_names()

    def all_regularization_loss_names(self):
        names = []
        for base in inspect.getmro(type(self)):
            if base.__name__.endswith("RegularizerMixin"):
                descriptor = base.__name__.replace("RegularizerMixin", "").lower()
                if getattr(self, f"{descriptor}_regularizer", None):
                    names.extend(base.regularization_loss_names(self))
        return names

    def fused_reduction(self, name: str = "loss") -> FusedReduction | None:
        """The reducer's rule for sub-loss ``name`` if it can be applied on the fly."""
        reducer: BaseReducer = self.reducer
        if isinstance(reducer, MultipleReducers):
            if type(reducer) is not MultipleReducers:
                return None
            reducer = reducer.reducer_for(name)
        return reducer.fused()


def require_labels(labels, what: str) -> None:
    if labels is None:
        raise ArgumentError(f"{what} needs labels")


def require_labels_or_indices_tuple(labels, indices_tuple, what: str) -> None:
    if labels is None and indices_tuple is None:
        raise ArgumentError(f"{what} needs labels or an indices_tuple (both were None)")


def require_ref_labels(labels, embeddings, ref_emb, ref_labels, indices_tuple, what: str) -> None:
    """With a separate ref_emb, pairs are defined by ref_labels unless a miner gave indices."""
    if (
        indices_tuple is None
        and ref_emb is not embeddings
        and labels is not None
        and ref_labels is None
    ):
        raise ArgumentError(f"{what}: ref_labels is required when ref_emb is given with labels")
