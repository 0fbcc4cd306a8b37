import pytest
import torch

from metricssl import losses
from metricssl.trainers import DeepAdversarialMetricLearning
from metricssl.trainers.deep_adversarial_metric_learning import NegativeLpDistance
from tests.trainer_parity import assert_same_training, labelled_data, make_models, run_trainer


def _loss_funcs(lib):
    return {
        "metric_loss": lib.losses.TripletMarginLoss(margin=0.1),
        "classifier_loss": torch.nn.CrossEntropyLoss(),
        "synth_loss": lib.losses.TripletMarginLoss(margin=0.1),
        "g_adv_loss": lib.losses.TripletMarginLoss(margin=0.1),
    }


def test_matches_pml_through_its_three_phases():
    # trunk 8 -> 6, generator maps a concatenated (a, p, n) triple (18) to a negative (6).
    models = make_models(
        {"trunk": (8, 6), "embedder": (6, 4), "classifier": (4, 4), "generator": (18, 6)}
    )
    weights = {
        "metric_loss": 1,
        "classifier_loss": 0.5,
        "synth_loss": 0.1,
        "g_adv_loss": 0.1,
        "g_hard_loss": 0.1,
        "g_reg_loss": 0.1,
    }
    runs = [
        run_trainer(
            lib,
            "DeepAdversarialMetricLearning",
            models,
            _loss_funcs,
            labelled_data(),
            loss_weights=dict(weights),
            metric_alone_epochs=1,
            g_alone_epochs=1,
            g_triplets_per_anchor=5,
            num_epochs=3,
        )
        for lib in ("ours", "pml")
    ]
    assert_same_training(*runs)
    records = runs[0][1]
    # Epoch 1: metric alone; epoch 2: generator alone; epoch 3: both.
    assert records[0]["weights"]["g_adv_loss"] == 0 and records[0]["weights"]["metric_loss"] == 1
    assert records[3]["weights"]["metric_loss"] == 0 and records[3]["weights"]["g_hard_loss"] == 0.1
    assert records[6]["weights"]["synth_loss"] == 0.1 and records[6]["losses"]["synth_loss"] > 0
    trainer = runs[0][0]
    assert trainer.loss_funcs["g_adv_loss"].margin == -0.1
    assert isinstance(trainer.loss_funcs["g_adv_loss"].distance, NegativeLpDistance)


@pytest.mark.parametrize("kwargs", [{}, {"power": 2}, {"normalize_embeddings": False}])
def test_negative_lp_distance_matches_pml(kwargs):
    from pytorch_metric_learning.trainers.deep_adversarial_metric_learning import (
        NegativeLpDistance as PMLNegativeLpDistance,
    )

    x, y = torch.randn(5, 3), torch.randn(4, 3)
    ours, theirs = NegativeLpDistance(**kwargs), PMLNegativeLpDistance(**kwargs)
    torch.testing.assert_close(ours(x, y), theirs(x, y))
    torch.testing.assert_close(ours.pairwise_distance(x, y[:1]), theirs.pairwise_distance(x, y[:1]))
    assert (ours(x, y) < 0).all() if "power" not in kwargs else (ours(x, y) > 0).all()


def test_g_adv_loss_must_be_a_triplet_margin_loss():
    models = make_models({"trunk": (8, 6), "generator": (18, 6)})
    with pytest.raises(AssertionError, match="g_adv_loss"):
        DeepAdversarialMetricLearning(
            models=models,
            optimizers={},
            batch_size=16,
            loss_funcs={
                "metric_loss": losses.ContrastiveLoss(),
                "synth_loss": losses.ContrastiveLoss(),
                "g_adv_loss": losses.ContrastiveLoss(),
            },
            dataset=labelled_data(),
        )
