"""``DeepAdversarialMetricLearning``: a generator of hard synthetic negatives (Duan et al.)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..core.validation import ArgumentError
from ..distances import LpDistance
from ..distances.base_distance import BaseDistance
from ..losses import TripletMarginLoss
from ..miners import EmbeddingsAlreadyPackagedAsTriplets
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .train_with_classifier import TrainWithClassifier


class NegativeLpDistance(LpDistance):
    """``LpDistance`` negated: the generator's adversarial triplet loss pushes synthetic
    negatives *towards* their anchors."""

    def compute_mat(self, query_emb, ref_emb):
        return -super().compute_mat(query_emb, ref_emb)

    def compute_powered_mat(self, query_emb, ref_emb):
        # The negated matrix raised to ``power`` (LpDistance's fused path would skip the sign).
        return BaseDistance.compute_powered_mat(self, query_emb, ref_emb)

    def pairwise_distance(self, query_emb, ref_emb):
        return -super().pairwise_distance(query_emb, ref_emb)


class DeepAdversarialMetricLearning(TrainWithClassifier):
    """:class:`TrainWithClassifier` plus ``models["generator"]``, which maps a concatenated
    (anchor, positive, negative) triple of trunk outputs to a synthetic negative.

    Epochs ``1..metric_alone_epochs`` train the metric model alone, the next
    ``g_alone_epochs`` the generator alone, and later epochs both. The generator's losses are
    ``g_adv_loss`` (a :class:`~metricssl.losses.TripletMarginLoss`, whose margin is negated and
    distance replaced by :class:`NegativeLpDistance` here, as PML does), ``g_hard_loss``
    (synthetic negatives close to anchors) and ``g_reg_loss`` (close to the real negatives);
    ``synth_loss`` is the metric loss on the synthetic triplets.

    Args:
        metric_alone_epochs: epochs that train only the metric model.
        g_alone_epochs: epochs after those that train only the generator.
        g_triplets_per_anchor: triplets drawn per anchor for the generator.
        *args, **kwargs: :class:`BaseTrainer`'s; ``models`` must hold ``"generator"`` and
            ``loss_funcs`` ``"synth_loss"`` and ``"g_adv_loss"``.
    """

    def __init__(
        self, metric_alone_epochs=0, g_alone_epochs=0, g_triplets_per_anchor=100, *args, **kwargs
    ):
        for name, value in (
            ("metric_alone_epochs", metric_alone_epochs),
            ("g_alone_epochs", g_alone_epochs),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        super().__init__(*args, **kwargs)
        self.original_loss_weights = copy.deepcopy(self.loss_weights)
        self.metric_alone_epochs = metric_alone_epochs
        self.g_alone_epochs = g_alone_epochs
        if not isinstance(self.loss_funcs["g_adv_loss"], TripletMarginLoss):
            raise ArgumentError(
                "loss_funcs['g_adv_loss'] must be a TripletMarginLoss, got "
                f"{type(self.loss_funcs['g_adv_loss']).__name__}"
            )
        self.loss_funcs["g_adv_loss"].margin *= -1
        self.loss_funcs["g_adv_loss"].distance = NegativeLpDistance()
        self.g_triplets_per_anchor = g_triplets_per_anchor

    def custom_setup(self):
        self.mining_funcs["synth_packaged_as_triplets"] = EmbeddingsAlreadyPackagedAsTriplets()
        self.loss_names += ["g_hard_loss", "g_reg_loss"]

    def calculate_loss(self, curr_batch):
        data, labels = curr_batch
        penultimate = self.get_trunk_output(data)
        if self.do_metric:
            embeddings = self.get_final_embeddings(penultimate)
            indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
            self.losses["metric_loss"] = self.loss_funcs["metric_loss"](
                embeddings, labels, indices_tuple
            )
            logits = self.maybe_get_logits(embeddings)
            self.losses["classifier_loss"] = self.maybe_get_classifier_loss(logits, labels)
        if self.do_adv:
            self.calculate_synth_loss(penultimate, labels)

    def update_loss_weights(self):
        self.do_metric_alone = self.epoch <= self.metric_alone_epochs
        self.do_adv_alone = (
            self.metric_alone_epochs < self.epoch <= self.metric_alone_epochs + self.g_alone_epochs
        )
        self.do_both = not self.do_adv_alone and not self.do_metric_alone
        self.do_adv = self.do_adv_alone or self.do_both
        self.do_metric = self.do_metric_alone or self.do_both

        active = []
        if self.do_adv:
            active += ["g_hard_loss", "g_reg_loss", "g_adv_loss"]
        if self.do_metric:
            active += ["metric_loss", "classifier_loss"]
        if self.do_both:
            active += ["synth_loss"]
        for name in self.loss_weights:
            self.loss_weights[name] = self.original_loss_weights[name] if name in active else 0
        self.maybe_exclude_networks_from_gradient()

    def maybe_exclude_networks_from_gradient(self):
        self.set_to_train()
        if self.do_adv_alone:
            no_grad = ["trunk", "classifier"]
        elif self.do_metric_alone:
            no_grad = ["generator"]
        else:
            no_grad = []
        for name, model in self.models.items():
            c_f.set_requires_grad(model, requires_grad=name not in no_grad)
            if name in no_grad:
                model.eval()

    def step_optimizers(self):
        to_step = []
        if self.do_metric:
            to_step += ["trunk_optimizer", "embedder_optimizer", "classifier_optimizer"]
        if self.do_adv:
            to_step += ["generator_optimizer"]
        for name, optimizer in self.optimizers.items():
            if name in to_step:
                optimizer.step()

    def calculate_synth_loss(self, penultimate_embeddings, labels):
        a, p, n = lmu.convert_to_triplets(None, labels, t_per_anchor=self.g_triplets_per_anchor)
        anchors = penultimate_embeddings[a]
        positives = penultimate_embeddings[p]
        negatives = penultimate_embeddings[n]
        synthetic = self.models["generator"](
            c_f.to_device(
                torch.cat([anchors, positives, negatives], dim=1), device=self.data_device
            )
        )
        # Rows interleaved as (anchor, positive, synthetic negative) triplets.
        final = self.get_final_embeddings(c_f.unslice_by_n([anchors, positives, synthetic]))
        # PML builds these labels as a new CPU int64 tensor.
        labels = torch.stack([labels[a], labels[p], labels[n]], dim=1).flatten().cpu()
        indices_tuple = self.mining_funcs["synth_packaged_as_triplets"](final, labels)
        if self.do_both:
            self.losses["synth_loss"] = self.loss_funcs["synth_loss"](final, labels, indices_tuple)
        self.losses["g_adv_loss"] = self.loss_funcs["g_adv_loss"](final, labels, indices_tuple)
        synthetic_unit = F.normalize(synthetic, p=2, dim=1)
        self.losses["g_hard_loss"] = F.mse_loss(synthetic_unit, F.normalize(anchors, p=2, dim=1))
        self.losses["g_reg_loss"] = F.mse_loss(synthetic_unit, F.normalize(negatives, p=2, dim=1))

    def modify_schema(self):
        super().modify_schema()
        self.schema["models"].keys += ["generator"]
        self.schema["models"].essential += ["generator"]
        self.schema["loss_funcs"].keys += ["synth_loss", "g_adv_loss"]
        self.schema["loss_funcs"].essential += ["synth_loss", "g_adv_loss"]
        self.schema["mining_funcs"].keys += ["synth_packaged_as_triplets"]
