import logging

import numpy as np
import pytest
import torch
from pytorch_metric_learning import testers as pml_testers
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as PMLCalc
from pytorch_metric_learning.utils.inference import FaissKMeans as PMLKMeans

from metricssl.eval import AccuracyCalculator
from metricssl.testers import GlobalEmbeddingSpaceTester
from metricssl.utils.inference import FaissKMeans
from tests.trainer_parity import labelled_data

METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r", "NMI", "AMI")


def _pair(tester_name, include=METRICS, calc_kwargs=None, **kwargs):
    """Our tester and PML's with the same settings; both cluster with FAISS's k-means."""
    calc_kwargs = calc_kwargs or {}
    ours = getattr(__import__("metricssl.testers", fromlist=["x"]), tester_name)(
        accuracy_calculator=AccuracyCalculator(
            include=include, kmeans_func=FaissKMeans(niter=20), **calc_kwargs
        ),
        dataloader_num_workers=0,
        data_device="cpu",
        **kwargs,
    )
    theirs = getattr(pml_testers, tester_name)(
        accuracy_calculator=PMLCalc(
            include=include, kmeans_func=PMLKMeans(niter=20), device="cpu", **calc_kwargs
        ),
        dataloader_num_workers=0,
        data_device="cpu",
        **kwargs,
    )
    return ours, theirs


def assert_same_accuracies(ours, theirs):
    assert ours.keys() == theirs.keys()
    for split in ours:
        assert ours[split].keys() == theirs[split].keys(), split
        for key in ours[split]:
            np.testing.assert_allclose(ours[split][key], theirs[split][key], rtol=1e-6, err_msg=key)


SPLITS = [
    None,
    [("train", ["train", "val"]), ("val", ["train", "val"])],
    [("train", ["train"]), ("val", ["train"])],
    [("val", ["train"])],
]


@pytest.mark.parametrize("splits_to_eval", SPLITS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"normalize_embeddings": False},
        {"pca": 3},
        {"label_hierarchy_level": "all"},
        {"label_hierarchy_level": [0, 2]},
        {"use_trunk_output": True, "batch_size": 5},
    ],
)
def test_accuracies_match_pml(splits_to_eval, kwargs):
    # Seeded: the layers' initial weights come from the global generator, which other tests
    # move; some draws put two references within a float32 rounding of a query, where the
    # order of FAISS's and our BLAS sums may differ (docs/evaluation.md, ties).
    torch.manual_seed(0)
    datasets = {
        "train": labelled_data(n=40, seed=1, levels=3),
        "val": labelled_data(n=30, seed=2, levels=3),
    }
    trunk, embedder = torch.nn.Linear(8, 6), torch.nn.Linear(6, 4)
    ours, theirs = _pair("GlobalEmbeddingSpaceTester", **kwargs)
    results = [
        tester.test(
            datasets,
            3,
            trunk,
            embedder,
            splits_to_eval=None
            if splits_to_eval is None
            else [(q, list(r)) for q, r in splits_to_eval],
        )
        for tester in (ours, theirs)
    ]
    assert_same_accuracies(*results)
    assert results[0][next(iter(results[0]))]["epoch"] == 3
    if kwargs.get("label_hierarchy_level") == "all":
        assert "AVERAGE_precision_at_1" in results[0]["val"]
    assert ours.reference_split_names == theirs.reference_split_names


def test_get_all_embeddings_matches_pml():
    data = labelled_data(n=37, levels=2)
    trunk = torch.nn.Linear(8, 5)
    ours, theirs = _pair("GlobalEmbeddingSpaceTester", pca=2)
    for as_numpy in (False, True):
        a = ours.get_all_embeddings(data, trunk, return_as_numpy=as_numpy)
        b = theirs.get_all_embeddings(data, trunk, return_as_numpy=as_numpy)
        for x, y in zip(a, b):
            assert type(x) is type(y)
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
            assert x.dtype == y.dtype and x.shape == y.shape


def test_hooks_and_description_match_pml(caplog):
    datasets = {"val": labelled_data(n=24)}
    seen = {}

    def make_hooks(side):
        def end_of_testing(tester):
            seen.setdefault(side, []).append(("end", dict(tester.all_accuracies)))

        def visualizer_hook(visualizer, reduced, labels, split, keyname, epoch):
            seen.setdefault(side, []).append(
                ("vis", reduced.shape, labels.shape, split, keyname, epoch)
            )

        return dict(end_of_testing_hook=end_of_testing, visualizer_hook=visualizer_hook)

    class FirstTwo:
        def fit_transform(self, x):
            return x[:, :2]

    ours, theirs = (
        _pair(
            "GlobalEmbeddingSpaceTester",
            include=("precision_at_1",),
            visualizer=FirstTwo(),
            **make_hooks(side),
        )[i]
        for i, side in enumerate(("ours", "pml"))
    )
    with caplog.at_level(logging.INFO):
        for tester in (ours, theirs):
            tester.test(datasets, 7, torch.nn.Identity())
    assert seen["ours"] == seen["pml"]
    assert [k[0] for k in seen["ours"]] == ["vis", "end"]
    assert ours.description_suffixes("accuracies") == theirs.description_suffixes("accuracies")
    assert not hasattr(ours, "embeddings_and_labels")  # freed after the test, as PML


def test_bad_arguments():
    with pytest.raises(TypeError, match="label_hierarchy_level"):
        GlobalEmbeddingSpaceTester(label_hierarchy_level="top")
    with pytest.raises(TypeError, match="end_of_testing_hook"):
        GlobalEmbeddingSpaceTester(end_of_testing_hook="log")
    tester = GlobalEmbeddingSpaceTester(dataloader_num_workers=0, data_device="cpu")
    with pytest.raises(AssertionError, match="more than once"):
        tester.test(
            {"a": labelled_data()},
            0,
            torch.nn.Identity(),
            splits_to_eval=[("a", ["a"]), ("a", ["a"])],
        )
    with pytest.raises(ValueError, match="not in dataset_dict"):
        tester.test({"a": labelled_data()}, 0, torch.nn.Identity(), splits_to_eval=[("a", ["b"])])
    with pytest.raises(AssertionError, match="label_hierarchy_level"):
        GlobalEmbeddingSpaceTester(
            label_hierarchy_level=2, dataloader_num_workers=0, data_device="cpu"
        ).test({"a": labelled_data()}, 0, torch.nn.Identity())
