"""BaseReducer: turns a loss dictionary into one number (PML's interface)."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core.records import ModuleWithRecords
from ..core.validation import ArgumentError, ArgumentTypeError
from .fused import FusedReduction


class BaseReducer(ModuleWithRecords):
    """Consumes ``{name: {"losses", "indices", "reduction_type"}}`` with a single entry.

    ``reduction_type`` is one of ``element``, ``pos_pair``, ``neg_pair``, ``triplet`` or
    ``already_reduced``; subclasses implement ``<type>_reduction``. Where PML asserts (one
    entry, matching sizes) the error is an ``ArgumentError``/``ArgumentTypeError``: also
    the ``AssertionError`` PML raises.
    """

    def __init__(self, collect_stats: bool | None = None):
        super().__init__(collect_stats=collect_stats)
        self.add_to_recordable_attributes(name="losses_size", is_stat=True)

    def forward(self, loss_dict, embeddings, labels):
        self.reset_stats()
        if len(loss_dict) != 1:
            raise ArgumentError(
                f"{type(self).__name__} takes a loss dictionary with one entry, got "
                f"{list(loss_dict)}; use MultipleReducers for several"
            )
        (loss_info,) = loss_dict.values()
        losses, loss_indices, reduction_type, kwargs = self.unpack_loss_info(loss_info)
        return self.reduce_the_loss(
            losses, loss_indices, reduction_type, kwargs, embeddings, labels
        )

    def unpack_loss_info(self, loss_info):
        return loss_info["losses"], loss_info["indices"], loss_info["reduction_type"], {}

    def reduce_the_loss(self, losses, loss_indices, reduction_type, kwargs, embeddings, labels):
        self.set_losses_size_stat(losses)
        if self.input_is_zero_loss(losses):
            return self.zero_loss(embeddings)
        self.assert_sizes(losses, loss_indices, reduction_type)
        reduction_func = self.get_reduction_func(reduction_type)
        return reduction_func(losses, loss_indices, embeddings, labels, **kwargs)

    # True in the body of a class whose rule ``fused_rule`` reproduces exactly. It is read
    # from the class's own body, so a user's subclass (which may change the rule) gets the
    # safe element-by-element path unless it opts in too.
    fusable = False

    def fused(self) -> FusedReduction | None:
        """The rule a loss may apply on the fly, or None when this reducer needs the elements."""
        return self.fused_rule() if type(self).__dict__.get("fusable", False) else None

    def fused_rule(self) -> FusedReduction:
        raise NotImplementedError

    def already_reduced_reduction(self, losses, loss_indices, embeddings, labels):
        if losses.ndim != 0 and len(losses) != 1:
            raise ArgumentError("an already_reduced loss must be a scalar")
        return losses

    def element_reduction(self, losses, loss_indices, embeddings, labels):
        raise NotImplementedError

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels):
        raise NotImplementedError

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels):
        raise NotImplementedError

    def triplet_reduction(self, losses, loss_indices, embeddings, labels):
        raise NotImplementedError

    def get_reduction_func(self, reduction_type):
        func = getattr(self, f"{reduction_type}_reduction", None)
        if func is None:
            raise ValueError(f"unknown reduction_type {reduction_type!r}")
        return func

    def assert_sizes(self, losses, loss_indices, reduction_type):
        getattr(self, f"assert_sizes_{reduction_type}")(losses, loss_indices)

    def zero_loss(self, embeddings):
        # A zero that is still connected to the graph, so backward() works (PML semantics).
        return torch.sum(embeddings * 0)

    def input_is_zero_loss(self, losses):
        return (not torch.is_tensor(losses)) and losses == 0

    def assert_sizes_already_reduced(self, losses, loss_indices):
        pass

    def assert_sizes_element(self, losses, loss_indices):
        if not (torch.is_tensor(losses) and torch.is_tensor(loss_indices)):
            raise ArgumentTypeError("element losses and indices must be tensors")
        if len(losses) != len(loss_indices):
            raise ArgumentError("element losses and indices differ in length")

    def assert_sizes_pair(self, losses, loss_indices):
        if not (torch.is_tensor(losses) and c_f.is_list_or_tuple(loss_indices)):
            raise ArgumentTypeError(
                "pair losses must be a tensor and indices a tuple of two tensors"
            )
        if len(loss_indices) != 2 or not (
            len(losses) == len(loss_indices[0]) == len(loss_indices[1])
        ):
            raise ArgumentError("pair losses and indices differ in length")

    def assert_sizes_pos_pair(self, losses, loss_indices):
        self.assert_sizes_pair(losses, loss_indices)

    def assert_sizes_neg_pair(self, losses, loss_indices):
        self.assert_sizes_pair(losses, loss_indices)

    def assert_sizes_triplet(self, losses, loss_indices):
        if not (torch.is_tensor(losses) and c_f.is_list_or_tuple(loss_indices)):
            raise ArgumentTypeError(
                "triplet losses must be a tensor and indices a tuple of three tensors"
            )
        if len(loss_indices) != 3 or not all(len(x) == len(losses) for x in loss_indices):
            raise ArgumentError("triplet losses and indices differ in length")

    def set_losses_size_stat(self, losses):
        if self.collect_stats:
            self.losses_size = (
                1 if (not torch.is_tensor(losses) or losses.ndim == 0) else len(losses)
            )
