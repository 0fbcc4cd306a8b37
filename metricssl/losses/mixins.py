"""Regularizer mixins: extra sub-losses on the embeddings or on a loss's own weights.

As in PML, a mixin adds its sub-loss name to ``sub_loss_names()`` when its regularizer is set,
so the default reducer becomes a MultipleReducers that sums the main loss and the penalty.
"""

from __future__ import annotations

import torch

from ..core import common as c_f


class EmbeddingRegularizerMixin:
    """Adds ``embedding_reg_loss = embedding_reg_weight * embedding_regularizer(embeddings)``."""

    def __init__(self, embedding_regularizer=None, embedding_reg_weight: float = 1, **kwargs):
        # Known before the reducer is built, so sub_loss_names() can include the penalty.
        self.embedding_regularizer = embedding_regularizer is not None
        super().__init__(**kwargs)
        self.embedding_regularizer = embedding_regularizer
        self.embedding_reg_weight = embedding_reg_weight
        if embedding_regularizer is not None:
            self.add_to_recordable_attributes(list_of_names=["embedding_reg_weight"], is_stat=False)

    def embedding_regularization_loss(self, embeddings):
        loss = 0
        if self.embedding_regularizer is not None:
            loss = self.embedding_regularizer(embeddings) * self.embedding_reg_weight
        return {"losses": loss, "indices": None, "reduction_type": "already_reduced"}

    def add_embedding_regularization_to_loss_dict(self, loss_dict, embeddings):
        if self.embedding_regularizer is not None:
            loss_dict["embedding_reg_loss"] = self.embedding_regularization_loss(embeddings)

    def regularization_loss_names(self):
        return ["embedding_reg_loss"]


class WeightMixin:
    """Holds ``weight_init_func`` for losses with learnable weights (normal init by default)."""

    def __init__(self, weight_init_func=None, **kwargs):
        super().__init__(**kwargs)
        # As PML: a subclass picks its own default through get_default_weight_init_func.
        self.weight_init_func = (
            self.get_default_weight_init_func() if weight_init_func is None else weight_init_func
        )

    def get_default_weight_init_func(self):
        return c_f.TorchInitWrapper(torch.nn.init.normal_)


class WeightRegularizerMixin(WeightMixin):
    """Adds ``weight_reg_loss = weight_reg_weight * weight_regularizer(weights)``."""

    def __init__(self, weight_regularizer=None, weight_reg_weight: float = 1, **kwargs):
        self.weight_regularizer = weight_regularizer is not None
        super().__init__(**kwargs)
        self.weight_regularizer = weight_regularizer
        self.weight_reg_weight = weight_reg_weight
        if weight_regularizer is not None:
            self.add_to_recordable_attributes(list_of_names=["weight_reg_weight"], is_stat=False)

    def weight_regularization_loss(self, weights):
        loss = 0
        if self.weight_regularizer is not None:
            loss = self.weight_regularizer(weights) * self.weight_reg_weight
        return {"losses": loss, "indices": None, "reduction_type": "already_reduced"}

    def add_weight_regularization_to_loss_dict(self, loss_dict, weights):
        if self.weight_regularizer is not None:
            loss_dict["weight_reg_loss"] = self.weight_regularization_loss(weights)

    def regularization_loss_names(self):
        return ["weight_reg_loss"]
