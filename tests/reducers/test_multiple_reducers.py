"""MultipleReducers against PML's."""

import torch
from pytorch_metric_learning import reducers as pml_reducers

from metricssl.reducers.avg_non_zero_reducer import AvgNonZeroReducer
from metricssl.reducers.divisor_reducer import DivisorReducer
from metricssl.reducers.mean_reducer import MeanReducer
from metricssl.reducers.multiple_reducers import MultipleReducers
from metricssl.reducers.sum_reducer import SumReducer
from tests.reducers.reducer_inputs import make_inputs, make_losses


def make_dict(dtype=torch.float64):
    pos, pos_idx = make_losses("pos_pair", seed=1, dtype=dtype)
    neg, neg_idx = make_losses("neg_pair", seed=2, dtype=dtype)
    trip, trip_idx = make_losses("triplet", seed=3, dtype=dtype)
    return {
        "pos_loss": {"losses": pos, "indices": pos_idx, "reduction_type": "pos_pair"},
        "neg_loss": {"losses": neg, "indices": neg_idx, "reduction_type": "neg_pair"},
        "margin_loss": {
            "losses": trip,
            "indices": trip_idx,
            "reduction_type": "triplet",
            "divisor": 7,
        },
        "reg_loss": {"losses": 0, "indices": None, "reduction_type": "already_reduced"},
        "extra": {
            "losses": torch.tensor(0.25, dtype=dtype),
            "indices": None,
            "reduction_type": "already_reduced",
        },
    }


def test_matches_pml_with_a_reducer_per_sub_loss():
    emb, labels = make_inputs()
    ours = MultipleReducers(
        {"pos_loss": AvgNonZeroReducer(), "neg_loss": SumReducer(), "margin_loss": DivisorReducer()}
    )
    theirs = pml_reducers.MultipleReducers(
        {
            "pos_loss": pml_reducers.AvgNonZeroReducer(),
            "neg_loss": pml_reducers.SumReducer(),
            "margin_loss": pml_reducers.DivisorReducer(),
        }
    )
    d = make_dict()
    v1, v2 = ours(d, emb, labels), theirs(d, emb, labels)
    torch.testing.assert_close(v1, v2)
    leaves = [d[k]["losses"] for k in ("pos_loss", "neg_loss", "margin_loss")]
    for g1, g2 in zip(torch.autograd.grad(v1, leaves), torch.autograd.grad(v2, leaves)):
        torch.testing.assert_close(g1, g2)


def test_default_reducer():
    emb, labels = make_inputs()
    d = make_dict()
    del d["margin_loss"]
    for default, pml_default in [(None, None), (SumReducer(), pml_reducers.SumReducer())]:
        ours = MultipleReducers({"pos_loss": MeanReducer()}, default_reducer=default)
        theirs = pml_reducers.MultipleReducers(
            {"pos_loss": pml_reducers.MeanReducer()}, default_reducer=pml_default
        )
        torch.testing.assert_close(ours(d, emb, labels), theirs(d, emb, labels))
    assert isinstance(MultipleReducers({}).reducer_for("anything"), MeanReducer)


def test_result_has_the_embeddings_dtype_like_pml():
    emb, labels = make_inputs(dtype=torch.float32)
    d = make_dict(dtype=torch.float64)
    del d["margin_loss"]
    out = MultipleReducers({})(d, emb, labels)
    assert out.dtype == pml_reducers.MultipleReducers({})(d, emb, labels).dtype == torch.float32


def test_all_zero_sub_losses_backpropagate():
    emb, labels = make_inputs()
    d = {k: {"losses": 0, "indices": None, "reduction_type": "already_reduced"} for k in "ab"}
    out = MultipleReducers({"a": SumReducer()})(d, emb, labels)
    assert out.item() == 0
    (g,) = torch.autograd.grad(out, emb)
    assert torch.equal(g, torch.zeros_like(emb))
