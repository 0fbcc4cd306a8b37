import pytest
import torch

from tests.testers.test_global_embedding_space import _pair, assert_same_accuracies
from tests.trainer_parity import labelled_data


@pytest.mark.parametrize("level", [0, 1, "all", [0, 1]])
@pytest.mark.parametrize("splits_to_eval", [None, [("val", ["train", "val"])]])
def test_accuracies_match_pml(level, splits_to_eval):
    # Three levels: a class, its parent (class // 2), its grandparent (class // 4).
    datasets = {
        "train": labelled_data(n=48, classes=8, seed=1, levels=3),
        "val": labelled_data(n=40, classes=8, seed=2, levels=3),
    }
    ours, theirs = _pair(
        "WithSameParentLabelTester",
        include=("precision_at_1", "mean_average_precision_at_r"),
        label_hierarchy_level=level,
    )
    results = [
        t.test(
            datasets,
            2,
            torch.nn.Identity(),
            splits_to_eval=None if splits_to_eval is None else [("val", ["train", "val"])],
        )
        for t in (ours, theirs)
    ]
    assert_same_accuracies(*results)


def test_the_top_level_has_no_parent():
    ours, _ = _pair("WithSameParentLabelTester", label_hierarchy_level=1)
    with pytest.raises(AssertionError, match="no valid label levels"):
        ours.test({"val": labelled_data(n=20, levels=2)}, 0, torch.nn.Identity())
