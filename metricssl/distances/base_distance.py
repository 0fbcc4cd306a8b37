"""BaseDistance: a query-by-reference matrix of distances or similarities (PML's interface)."""

from __future__ import annotations

import torch

from ..core.records import ModuleWithRecords
from ..core.validation import (
    ArgumentError,
    check_embeddings,
    check_number,
    check_same_device,
    check_same_width,
)


class BaseDistance(ModuleWithRecords):
    """Base of every distance.

    Subclasses implement :meth:`compute_mat` (a full query x reference matrix) and
    :meth:`pairwise_distance` (row-aligned pairs). ``is_inverted`` is True when a larger value
    means closer (similarities); :meth:`margin`, :meth:`smallest_dist` and
    :meth:`largest_dist` hide that difference from losses and miners.

    Args:
        normalize_embeddings: L_p-normalise the embeddings before comparing them.
        p: the norm's exponent, for normalisation and (in LpDistance) the distance.
        power: raise every entry of the matrix to this power.
        is_inverted: larger means closer.
        collect_stats: record norm statistics on each call.
    """

    def __init__(
        self,
        normalize_embeddings: bool = True,
        p: float = 2,
        power: float = 1,
        is_inverted: bool = False,
        collect_stats: bool | None = None,
    ):
        super().__init__(collect_stats=collect_stats)
        check_number("p", p, low=0, low_inclusive=False)
        check_number("power", power)
        self.normalize_embeddings = bool(normalize_embeddings)
        self.p = p
        self.power = power
        self.is_inverted = bool(is_inverted)
        self.add_to_recordable_attributes(list_of_names=["p", "power"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=[
                "initial_avg_query_norm",
                "initial_avg_ref_norm",
                "final_avg_query_norm",
                "final_avg_ref_norm",
            ],
            is_stat=True,
        )

    def forward(self, query_emb: torch.Tensor, ref_emb: torch.Tensor | None = None):
        self.reset_stats()
        self.check_shapes(query_emb, ref_emb)
        query_norm = self.maybe_normalize(query_emb)
        if ref_emb is None or ref_emb is query_emb:  # losses pass the embeddings twice
            ref_emb, ref_norm = query_emb, query_norm
        else:
            ref_norm = self.maybe_normalize(ref_emb)
        self.set_default_stats(query_emb, ref_emb, query_norm, ref_norm)
        mat = self.compute_powered_mat(query_norm, ref_norm)
        expected = (query_emb.shape[0], ref_emb.shape[0])
        if mat.shape != expected:  # a subclass's compute_mat; PML asserts the same
            raise ArgumentError(
                f"{type(self).__name__}.compute_mat returned shape {tuple(mat.shape)}, "
                f"expected (len(query_emb), len(ref_emb)) = {expected}"
            )
        return mat

    def compute_mat(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute_powered_mat(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        """``compute_mat`` raised to ``power``; a subclass may compute the two in one go."""
        mat = self.compute_mat(query_emb, ref_emb)
        return mat**self.power if self.power != 1 else mat

    def pairwise_distance(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def smallest_dist(self, *args, **kwargs):
        return torch.max(*args, **kwargs) if self.is_inverted else torch.min(*args, **kwargs)

    def largest_dist(self, *args, **kwargs):
        return torch.min(*args, **kwargs) if self.is_inverted else torch.max(*args, **kwargs)

    def margin(self, x, y):
        """How much farther y is than x (positive when x is the closer one)."""
        return y - x if self.is_inverted else x - y

    def normalize(self, embeddings, dim=1, **kwargs):
        return torch.nn.functional.normalize(embeddings, p=self.p, dim=dim, **kwargs)

    def maybe_normalize(self, embeddings, dim=1, **kwargs):
        return (
            self.normalize(embeddings, dim=dim, **kwargs)
            if self.normalize_embeddings
            else embeddings
        )

    def get_norm(self, embeddings, dim=1, **kwargs):
        return torch.norm(embeddings, p=self.p, dim=dim, **kwargs)

    def set_default_stats(self, query_emb, ref_emb, query_emb_normalized, ref_emb_normalized):
        if not self.collect_stats:
            return
        with torch.no_grad():
            self.initial_avg_query_norm = torch.mean(self.get_norm(query_emb)).item()
            self.initial_avg_ref_norm = torch.mean(self.get_norm(ref_emb)).item()
            self.final_avg_query_norm = torch.mean(self.get_norm(query_emb_normalized)).item()
            self.final_avg_ref_norm = torch.mean(self.get_norm(ref_emb_normalized)).item()

    def check_shapes(self, query_emb, ref_emb):
        """Raise a clear error for anything that is not a (batch, dim) float tensor pair.

        Losses and miners call the distance's ``check_shapes`` instead of a fixed 2-D check,
        as PML does, so a subclass for other shapes overrides it::

            class MeanOverViews(LpDistance):  # embeddings of shape (batch, views, dim)
                def check_shapes(self, query_emb, ref_emb):
                    if query_emb.ndim != 3:
                        raise ValueError("query_emb must be (batch, views, dim)")

                def compute_mat(self, query_emb, ref_emb):
                    return super().compute_mat(query_emb.mean(1), ref_emb.mean(1))
        """
        check_embeddings(query_emb, "query_emb", allow_empty=True)
        if ref_emb is not None:
            check_embeddings(ref_emb, "ref_emb", allow_empty=True)
            check_same_device(query_emb, ref_emb, "query_emb", "ref_emb")
            check_same_width(query_emb, ref_emb, "query_emb", "ref_emb")


def check_not_inverted(owner: BaseDistance, is_inverted) -> None:
    """PML's distances (smaller is closer) take ``is_inverted`` and assert it is False."""
    if is_inverted:
        raise ArgumentError(
            f"{type(owner).__name__} is a distance (smaller means closer): is_inverted must be "
            f"False, got {is_inverted!r}"
        )
