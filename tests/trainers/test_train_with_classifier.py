import pytest
import torch

from tests.trainer_parity import assert_same_training, labelled_data, make_models, run_trainer


def _loss_funcs(lib):
    return {
        "metric_loss": lib.losses.ContrastiveLoss(),
        "classifier_loss": torch.nn.CrossEntropyLoss(),
    }


@pytest.mark.parametrize("classifier_weight", [0.3, 0])
def test_matches_pml(classifier_weight):
    models = make_models({"trunk": (8, 6), "embedder": (6, 4), "classifier": (4, 4)})
    runs = [
        run_trainer(
            lib,
            "TrainWithClassifier",
            models,
            _loss_funcs,
            labelled_data(),
            loss_weights={"metric_loss": 1, "classifier_loss": classifier_weight},
        )
        for lib in ("ours", "pml")
    ]
    assert_same_training(*runs)
    first = runs[0][1][0]["losses"]
    assert (first["classifier_loss"] > 0) == (classifier_weight > 0)
    if classifier_weight == 0:  # no logits computed: the classifier never moves
        torch.testing.assert_close(
            runs[0][0].models["classifier"].weight, models["classifier"].weight
        )
