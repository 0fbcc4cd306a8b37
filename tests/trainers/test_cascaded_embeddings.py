import pytest

from metricssl.trainers import CascadedEmbeddings
from tests.trainer_parity import assert_same_training, labelled_data, make_models, run_trainer


def test_matches_pml_with_hdc_miner_and_classifiers():
    models = make_models({"trunk": (8, 6), "classifier_0": (2, 4), "classifier_1": (4, 4)})

    def loss_funcs(lib):
        return {
            "metric_loss_0": lib.losses.ContrastiveLoss(),
            "metric_loss_1": lib.losses.TripletMarginLoss(),
            "classifier_loss_0": __import__("torch").nn.CrossEntropyLoss(),
            "classifier_loss_1": __import__("torch").nn.CrossEntropyLoss(),
        }

    def mining_funcs(lib):
        return {
            "tuple_miner_0": lib.miners.HDCMiner(filter_percentage=0.5),
            "tuple_miner_1": lib.miners.HDCMiner(filter_percentage=0.5),
        }

    runs = [
        run_trainer(
            lib,
            "CascadedEmbeddings",
            models,
            loss_funcs,
            labelled_data(),
            mining_funcs=mining_funcs,
            embedding_sizes=[2, 4],
        )
        for lib in ("ours", "pml")
    ]
    assert_same_training(*runs)
    assert set(runs[0][1][0]["losses"]) == {
        "metric_loss_0",
        "metric_loss_1",
        "classifier_loss_0",
        "classifier_loss_1",
        "total_loss",
    }


def test_embedding_sizes_are_checked():
    with pytest.raises(TypeError, match="embedding_sizes"):
        CascadedEmbeddings(
            embedding_sizes=4, models={}, optimizers={}, batch_size=4, loss_funcs={}, dataset=None
        )
