"""DoNothingReducer hands the loss dictionary back."""

from metricssl.reducers.do_nothing_reducer import DoNothingReducer
from tests.reducers.reducer_inputs import loss_dict, make_inputs, make_losses


def test_returns_the_dictionary_itself():
    emb, labels = make_inputs()
    losses, idx = make_losses("pos_pair")
    d = loss_dict(losses, idx, "pos_pair")
    d["other"] = {"losses": 0, "indices": None, "reduction_type": "already_reduced"}
    assert DoNothingReducer()(d, emb, labels) is d
    assert DoNothingReducer().fused() is None
