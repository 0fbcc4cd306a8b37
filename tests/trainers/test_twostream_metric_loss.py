import pytest

from tests.trainer_parity import Pairs, assert_same_training, make_models, run_trainer


@pytest.mark.parametrize("with_miner", [False, True])
def test_matches_pml(with_miner):
    models = make_models({"trunk": (8, 6), "embedder": (6, 4)})

    def mining_funcs(lib):
        return {"tuple_miner": lib.miners.TripletMarginMiner(margin=0.5, type_of_triplets="all")}

    runs = [
        run_trainer(
            lib,
            "TwoStreamMetricLoss",
            models,
            lambda L: {"metric_loss": L.losses.TripletMarginLoss(margin=0.2)},
            Pairs(),
            mining_funcs=mining_funcs if with_miner else None,
        )
        for lib in ("ours", "pml")
    ]
    assert_same_training(*runs)
    assert runs[0][1][0]["losses"]["metric_loss"] > 0
