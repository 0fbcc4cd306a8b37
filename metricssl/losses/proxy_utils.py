"""Checks and helpers shared by the losses that own learnable proxies or class weights.

ProxyNCALoss, ProxyAnchorLoss, SoftTripleLoss, ManifoldLoss and the classification losses
(:mod:`.classification_loss`) hold a weight matrix sized by
``num_classes`` and ``embedding_size``. A label outside ``[0, num_classes)`` or an embedding of
the wrong width would otherwise surface as an index error or a matmul shape error deep inside
torch; these checks name the argument instead.
"""

from __future__ import annotations

import torch

from ..core.validation import ArgumentError, check_number
from .base_metric_loss_function import require_labels


def check_weight_arguments(weight_init_func, weight_regularizer, weight_reg_weight) -> None:
    """The WeightRegularizerMixin arguments: callables (or None) and a number."""
    if weight_init_func is not None and not callable(weight_init_func):
        raise TypeError(f"weight_init_func must be callable or None, got {weight_init_func!r}")
    if weight_regularizer is not None and not callable(weight_regularizer):
        raise TypeError(
            f"weight_regularizer must be a regularizer (callable) or None, "
            f"got {weight_regularizer!r}"
        )
    check_number("weight_reg_weight", weight_reg_weight)


def check_embedding_size(
    embeddings: torch.Tensor, embedding_size: int, what: str, name: str = "embedding_size"
) -> None:
    """The embeddings' width is the one the weights were built for (argument ``name``)."""
    if embeddings.shape[1] != embedding_size:
        raise ArgumentError(
            f"{what}: embeddings have width {embeddings.shape[1]} but the loss was built "
            f"with {name}={embedding_size}"
        )


def check_class_labels(labels: torch.Tensor, num_classes: int, what: str) -> torch.Tensor:
    """Labels as int64 class ids in ``[0, num_classes)`` (one host sync for the range).

    Float labels holding whole numbers are class ids too (PML's ProxyNCALoss compares them
    with its proxies' labels; where PML indexes with them it crashes instead)."""
    if labels.numel() == 0:
        return labels.long()
    lo, hi = (float(v) for v in torch.aminmax(labels))
    if lo < 0 or hi >= num_classes:
        raise ArgumentError(
            f"{what}: labels must be class ids in [0, {num_classes}) "
            f"(num_classes={num_classes}), got values in [{lo:g}, {hi:g}]"
        )
    if labels.is_floating_point() and not bool((labels == labels.trunc()).all()):
        raise ArgumentError(f"{what}: float labels must hold whole numbers (class ids)")
    return labels.long()


def no_ref_emb(embeddings, labels, ref_emb, ref_labels, what: str) -> None:
    """The reference set of these losses is their own weights: ref_emb makes no sense."""
    if ref_emb is not embeddings or ref_labels is not labels:
        raise ArgumentError(f"{what} does not support ref_emb or ref_labels")


def check_proxy_inputs(loss, weights, embeddings, labels, ref_emb, ref_labels) -> torch.Tensor:
    """Every input check of a proxy loss (``loss.num_classes``/``embedding_size`` sized);
    returns the labels as int64 class ids. Then ``weights`` (the loss's proxy or class-weight
    parameter) follows the embeddings' dtype and device, as in PML (:func:`follow_input`)."""
    what = type(loss).__name__
    require_labels(labels, what)
    no_ref_emb(embeddings, labels, ref_emb, ref_labels, what)
    size_name = getattr(loss, "_embedding_size_name", "embedding_size")
    check_embedding_size(embeddings, loss.embedding_size, what, size_name)
    labels = check_class_labels(labels, loss.num_classes, what)
    follow_input(weights, embeddings)
    return labels


def follow_input(param: torch.nn.Parameter, embeddings: torch.Tensor) -> None:
    """Move and cast ``param`` in place (``.data``) to the embeddings' device and dtype, as
    PML's ``cast_types`` does on every call: after a float64 batch the weights are float64,
    so code that reads them (PML's own tests do) computes in one dtype. Under autocast the
    dtype is left alone (PML's ``to_dtype`` rule), so mixed precision keeps float32 weights;
    that holds for the embeddings' device type, CPU autocast included (PML's check sees only
    CUDA autocast, and casts the weights to bf16 for good under CPU autocast).
    An optimizer built on the parameter keeps working: the Parameter object is the same.
    """
    if param.device != embeddings.device:
        param.data = param.data.to(embeddings.device)
    autocast = torch.is_autocast_enabled(embeddings.device.type)
    if not autocast and param.dtype != embeddings.dtype:
        param.data = param.data.to(embeddings.dtype)


def weights_for(param: torch.nn.Parameter, embeddings: torch.Tensor, dtype: torch.dtype):
    """The parameter on the embeddings' device, as a differentiable cast to ``dtype``.

    The parameter already follows the input (:func:`follow_input`, from
    :func:`check_proxy_inputs`); the cast copy is for the accumulation dtype (float32 at least
    for half inputs) and under autocast.
    """
    if param.device != embeddings.device:
        param.data = param.data.to(embeddings.device)
    return param.to(dtype)
