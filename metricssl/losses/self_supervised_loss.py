"""SelfSupervisedLoss: use a pair-based loss on two views, with instance ids as labels."""

from __future__ import annotations

import torch

from ..core.validation import ArgumentError, check_bool, check_embeddings, check_same_device
from .base_loss_wrapper import BaseLossWrapper

# PML's list: losses whose value is defined by positive/negative pairs of labels, so that
# "same instance" is all they need.
SUPPORTED_LOSSES = (
    "AngularLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "IntraPairVarianceLoss",
    "LiftedStructureLoss",
    "MultiSimilarityLoss",
    "NTXentLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "NCALoss",
    "TupletMarginLoss",
)


class SelfSupervisedLoss(BaseLossWrapper):
    """Wraps a pair-based loss so it takes two augmented views instead of labels.

    ``loss_fn(embeddings, ref_emb)``: row ``i`` of ``embeddings`` and row ``i`` of
    ``ref_emb`` are two views of the same input, so they form a positive pair and every other
    row is a negative (labels are instance ids). With ``symmetric=True`` both views are
    stacked and each serves as an anchor for the other (SimCLR's NT-Xent); otherwise only
    ``embeddings`` are anchors, compared with ``ref_emb`` as a reference set.

    The wrapper for the SimCLR setting of Chen, Kornblith, Norouzi and Hinton, "A Simple
    Framework for Contrastive Learning of Visual Representations", ICML 2020; any loss in
    :meth:`supported_losses` (matched by class name, as in PML) can be wrapped.

    Args:
        loss: the loss to wrap, e.g. :class:`~metricssl.losses.ntxent_loss.NTXentLoss`.
        symmetric: use both views as anchors.

    Example:
        >>> import torch
        >>> from metricssl.losses.ntxent_loss import NTXentLoss
        >>> from metricssl.losses.self_supervised_loss import SelfSupervisedLoss
        >>> loss_fn = SelfSupervisedLoss(NTXentLoss(temperature=0.1))
        >>> view1, view2 = torch.randn(8, 16), torch.randn(8, 16)
        >>> loss = loss_fn(view1, view2)
    """

    def __init__(self, loss: torch.nn.Module, symmetric: bool = True):
        super().__init__(loss)
        check_bool("symmetric", symmetric)
        self.loss = loss
        self.symmetric = symmetric

    @staticmethod
    def supported_losses() -> list[str]:
        return list(SUPPORTED_LOSSES)

    def forward(self, embeddings: torch.Tensor, ref_emb: torch.Tensor):
        # An empty pair of views is PML's zero loss, not an error.
        check_embeddings(embeddings, allow_empty=True)
        check_embeddings(ref_emb, "ref_emb", allow_empty=True)
        check_same_device(embeddings, ref_emb, "embeddings", "ref_emb")
        if embeddings.shape != ref_emb.shape:
            raise ArgumentError(
                f"embeddings and ref_emb must be two views of the same batch, with the same "
                f"shape; got {tuple(embeddings.shape)} and {tuple(ref_emb.shape)}"
            )
        labels = torch.arange(embeddings.shape[0], device=embeddings.device)
        if self.symmetric:
            return self.loss(torch.cat([embeddings, ref_emb], dim=0), torch.cat([labels, labels]))
        return self.loss(
            embeddings=embeddings, labels=labels, ref_emb=ref_emb, ref_labels=labels.clone()
        )
